//! Adapter and device setup with downlevel-safe limits, device-loss tracking, error scopes and the one readback.
//! Every wgpu failure becomes a `GuardError` so the caller can fall back to the CPU path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{GuardError, Result};

pub(crate) fn unavailable(why: impl std::fmt::Display) -> GuardError {
    GuardError::BackendUnavailable("webgpu".into(), why.to_string())
}

pub(crate) fn failed(why: impl std::fmt::Display) -> GuardError {
    GuardError::Inference(format!("webgpu: {why}"))
}

#[cfg(target_arch = "wasm32")]
fn has_navigator_gpu() -> bool {
    let get = |o: &wasm_bindgen::JsValue, k: &str| {
        js_sys::Reflect::get(o, &k.into())
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    get(&js_sys::global().into(), "navigator").is_some_and(|n| get(&n, "gpu").is_some())
}

/// The device plus what we learn about its health from wgpu's callbacks.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    lost: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// The first adapter wgpu offers (Vulkan natively, `navigator.gpu` in a browser), with limits that every
    /// WebGPU implementation and downlevel Vulkan/Metal device grants: 4 storage buffers per stage, 16 KB of
    /// workgroup memory, 256 invocations. No optional features (shader-f16, subgroups) are required.
    pub async fn new() -> Result<Self> {
        // wgpu's browser backend assumes `navigator.gpu` and aborts the wasm call without it (Node, workerd, Deno
        // without --unstable-webgpu): ask first, so the caller gets BACKEND_UNAVAILABLE
        #[cfg(target_arch = "wasm32")]
        if !has_navigator_gpu() {
            return Err(unavailable(
                "this runtime has no WebGPU (navigator.gpu is missing)",
            ));
        }
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| unavailable(format!("no WebGPU adapter: {e}")))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("slm-guard"),
                required_features: wgpu::Features::empty(),
                required_limits: wgpu::Limits::downlevel_defaults(),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format!("adapter `{}` refused a device: {e}", info.name)))?;
        let lost = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        {
            let (lost, last) = (lost.clone(), last_error.clone());
            device.set_device_lost_callback(move |reason, msg| {
                lost.store(true, Ordering::SeqCst);
                if let Ok(mut l) = last.lock() {
                    *l = Some(format!("device lost ({reason:?}): {msg}"));
                }
            });
        }
        {
            // everything we submit runs inside error scopes; an error that escapes them means the device is unusable
            let (lost, last) = (lost.clone(), last_error.clone());
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                lost.store(true, Ordering::SeqCst);
                if let Ok(mut l) = last.lock() {
                    *l = Some(format!("uncaptured error: {e}"));
                }
            }));
        }
        Ok(Self {
            device,
            queue,
            info,
            lost,
            last_error,
        })
    }

    /// The adapter's name; browsers hide it: "unnamed".
    pub fn name(&self) -> &str {
        match self.info.name.as_str() {
            "" => "unnamed",
            n => n,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// `Err` once the device is lost (or an error escaped our scopes), with the reason.
    pub fn check_alive(&self) -> Result<()> {
        if !self.is_lost() {
            return Ok(());
        }
        let why = self
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_else(|| "device lost".into());
        Err(unavailable(why))
    }

    /// Run `f` (resource creation, encoding, submission) inside validation, out-of-memory and internal error scopes;
    /// the scopes are popped before returning, the returned future reports what they caught.
    pub fn scoped<T>(&self, f: impl FnOnce() -> T) -> (T, impl Future<Output = Result<()>>) {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let (v, i, o) = (validation.pop(), internal.pop(), oom.pop());
        let check = async move {
            match [v.await, i.await, o.await].into_iter().flatten().next() {
                Some(e) => Err(failed(e)),
                None => Ok(()),
            }
        };
        (out, check)
    }

    /// A host-readable buffer of `size` bytes that submitted work copies its result into (for `read_f32`).
    pub fn readback_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Map `buffer` (MAP_READ, already filled by submitted work) and copy it out as f32.
    pub async fn read_f32(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        let (tx, rx) = oneshot();
        buffer.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r));
        // natively nothing drives the callbacks but poll; in a browser the event loop does
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| {
                    self.lost.store(true, Ordering::SeqCst);
                    failed(format!("waiting for the device: {e}"))
                })?;
            // when several threads share the device, another thread's `poll` may be the one that runs this
            // callback, a moment after ours returned: wait for it (bounded) instead of reporting a lost readback
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !rx.is_sent() && std::time::Instant::now() < deadline {
                self.device
                    .poll(wgpu::PollType::Poll)
                    .map_err(|e| failed(format!("waiting for the device: {e}")))?;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        rx.await
            .ok_or_else(|| failed("readback never completed"))?
            .map_err(|e| failed(format!("mapping the result buffer: {e}")))?;
        let out = {
            let view = buffer
                .get_mapped_range(..)
                .map_err(|e| failed(format!("mapped range: {e}")))?;
            view.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        buffer.unmap();
        Ok(out)
    }
}

/// A minimal single-value channel for wgpu's map callback (no executor or extra crate needed): natively
/// `read_f32` polls until the value is there, so the future resolves at once (or reports `None` instead of
/// hanging).
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sent: bool,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);
struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        sent: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    fn send(self, v: T) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(v);
            s.sent = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> Receiver<T> {
    #[cfg(not(target_arch = "wasm32"))]
    fn is_sent(&self) -> bool {
        self.0.lock().map_or(true, |s| s.sent)
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut s) = self.0.lock() else {
            return Poll::Ready(None);
        };
        if s.sent {
            return Poll::Ready(s.value.take());
        }
        // natively `poll` above has already run every callback it ever will
        if cfg!(not(target_arch = "wasm32")) {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
