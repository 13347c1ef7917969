//! WebGPU backend: the classifier's forward pass as our own WGSL kernels driven through wgpu (Vulkan/Metal/DX12
//! natively, `navigator.gpu` on wasm32). Computes the same function as `model/classifier.rs`: weights are uploaded
//! once and stay quantized, activations are f32 (the CPU path rounds them to int16 inside its matmuls), batches
//! are ragged (an offset table, no padding), and one `forward` is one submission and one readback.
//!
//! The guardian decoder (model/guardian.rs) has its kernels here too, each tested against the CPU ops: RMSNorm
//! (plain, sandwich residual, per q/k head), RoPE, causal GQA against a KV cache with a sliding window, GeGLU; its
//! row-scaled Q8_0 linears run on `matmul_q8.wgsl` as they are.
//!
//! `device.rs` adapter/device/error handling, `kernels.rs` pipelines, `weights.rs` upload, `shaders/` the WGSL,
//! `harness.rs` single-kernel runs for tests, `decoder.rs` the guardian's whole forward pass (`WebGpuDecoder`: GPU KV
//! cache, prefill/step, head), not yet used by `Guardian`.

pub mod decoder;
mod device;
pub mod harness;
pub mod kernels;
mod weights;

use std::sync::Mutex;

use device::{failed, Gpu};
use kernels::{Kernel, Params, Pipelines, PARAMS_STRIDE};
use weights::{QLinear, Weights};

use crate::error::{GuardError, Result};
use crate::model::{ClassifierConfig, GgufWeights};

pub use weights::{embedding_format, repack_q8_0};

pub struct WebGpuBackend {
    gpu: Gpu,
    config: ClassifierConfig,
    pipelines: Pipelines,
    weights: Weights,
    state: Mutex<State>,
}

/// Activation buffers sized for `tokens` x `seqs`; they only grow, and the bind groups are rebuilt when they do.
struct State {
    tokens: usize,
    seqs: usize,
    buffers: Option<Activations>,
    binds: Vec<wgpu::BindGroup>,
}

struct Activations {
    params: wgpu::Buffer,
    seq_info: wgpu::Buffer,
    x: wgpu::Buffer,
    qkv: wgpu::Buffer,
    ctx: wgpu::Buffer,
    a: wgpu::Buffer,
    ffn: wgpu::Buffer,
    pooled: wgpu::Buffer,
    logits: wgpu::Buffer,
}

/// A buffer an op binds, resolved against the weights and the current activations.
#[derive(Clone, Copy)]
enum Buf {
    SeqInfo,
    X,
    Qkv,
    Ctx,
    A,
    Ffn,
    Pooled,
    Logits,
    Word,
    Tables,
    /// int8 values / scales + bias of linear `i` (`WebGpuBackend::linear` numbering)
    Wq(usize),
    Aux(usize),
}

struct Op {
    kernel: Kernel,
    params: Params,
    groups: (u32, u32),
    bufs: Vec<Buf>,
}

/// `starts[seqs + 1] | sequence of each token | token ids`: the one table every ragged kernel reads.
pub fn seq_info(batch: &[Vec<u32>]) -> Vec<u32> {
    let mut starts = vec![0u32];
    let mut seq = Vec::new();
    for (s, ids) in batch.iter().enumerate() {
        starts.push(starts[s] + ids.len() as u32);
        seq.extend(std::iter::repeat_n(s as u32, ids.len()));
    }
    starts.extend(seq);
    starts.extend(batch.iter().flatten());
    starts
}

impl WebGpuBackend {
    /// Adapter and device, weight upload, pipeline compilation and a warm-up pass (so the first real call does
    /// not pay for driver-side shader compilation or buffer allocation).
    pub async fn new(gguf: &[u8]) -> Result<Self> {
        Self::new_with(gguf, true).await
    }

    /// As `new`; with `allow_software: false` a CPU-emulated adapter (llvmpipe, SwiftShader, WARP) is refused
    /// before any upload: it is always slower than our CPU path, so `backend: 'auto'` should not pay to try it.
    pub async fn new_with(gguf: &[u8], allow_software: bool) -> Result<Self> {
        let gpu = Gpu::new().await?;
        if !allow_software && gpu.info.device_type == wgpu::DeviceType::Cpu {
            return Err(device::unavailable(format!(
                "adapter `{}` is a software renderer",
                gpu.name()
            )));
        }
        let mut w = GgufWeights::from_bytes(gguf)?;
        let config = weights::config(&w)?;
        let ((weights, pipelines), check) = gpu.scoped(|| {
            let weights = Weights::upload(&gpu, &mut w, &config);
            (weights, Pipelines::new(&gpu))
        });
        check.await?;
        let backend = Self {
            weights: weights?,
            pipelines,
            gpu,
            config,
            state: Mutex::new(State {
                tokens: 0,
                seqs: 0,
                buffers: None,
                binds: Vec::new(),
            }),
        };
        let len = backend.config.max_position.min(128);
        let warm = vec![(0..len as u32)
            .map(|i| i % backend.config.vocab as u32)
            .collect()];
        backend.forward(&warm).await?;
        Ok(backend)
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"; browsers hide the name: "unnamed (BrowserWebGpu)".
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.gpu.name(), self.gpu.info.backend)
    }

    /// Destroy the device, as a driver reset or a lost GPU would: for fault drills and the fallback tests.
    #[doc(hidden)]
    pub fn destroy_device(&self) {
        self.gpu.device.destroy();
    }

    /// A CPU-emulated adapter (as far as the platform tells: browsers may not).
    pub fn is_software(&self) -> bool {
        self.gpu.info.device_type == wgpu::DeviceType::Cpu
    }

    /// True once the device was lost or reported an error outside our error scopes: use the CPU path from then on.
    pub fn is_lost(&self) -> bool {
        self.gpu.is_lost()
    }

    /// Logits (one row per sequence, one column per label) for token-id sequences of any lengths.
    pub async fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.config.check_batch(batch)?;
        self.gpu.check_alive()?;
        let tokens: usize = batch.iter().map(Vec::len).sum();
        let labels = self.config.labels.len();
        let out_bytes = (batch.len() * labels * 4) as u64;
        let readback = self.gpu.readback_buffer("logits readback", out_bytes);
        // the lock is held only while encoding (never across an await), so overlapping calls just queue up
        let (encoded, check) = self.gpu.scoped(|| -> Result<()> {
            let mut state = self.state.lock().map_err(|_| failed("state poisoned"))?;
            self.ensure_capacity(&mut state, tokens, batch.len())?;
            let ops = self.plan(tokens as u32, batch.len() as u32);
            let acts = state.buffers.as_ref().expect("allocated above");
            let params: Vec<Params> = ops.iter().map(|o| o.params).collect();
            self.gpu
                .queue
                .write_buffer(&acts.params, 0, &kernels::params_bytes(&params));
            let info: Vec<u8> = seq_info(batch)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            self.gpu.queue.write_buffer(&acts.seq_info, 0, &info);
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for (op, bind) in ops.iter().zip(&state.binds) {
                    kernels::dispatch(&mut pass, self.pipelines.get(op.kernel), bind, op.groups);
                }
            }
            enc.copy_buffer_to_buffer(&acts.logits, 0, &readback, 0, out_bytes);
            self.gpu.queue.submit([enc.finish()]);
            Ok(())
        });
        let read = match encoded {
            Ok(()) => self.gpu.read_f32(&readback).await,
            Err(e) => Err(e),
        };
        check.await?;
        Ok(read?.chunks_exact(labels).map(<[f32]>::to_vec).collect())
    }

    /// Linear layers in `Buf::Wq`/`Buf::Aux` numbering: 4 per layer (qkv, attention output, intermediate, output),
    /// then the head.
    fn linear(&self, i: usize) -> &QLinear {
        match self.weights.layers.get(i / 4) {
            Some(l) => [&l.qkv, &l.attention_output, &l.intermediate, &l.output][i % 4],
            None => &self.weights.head,
        }
    }

    /// Every dispatch of one forward pass, in order; the sequence of kernels and buffers depends on nothing but
    /// the model, so bind groups built from `plan(0, 0)` stay valid for every batch.
    fn plan(&self, tokens: u32, seqs: u32) -> Vec<Op> {
        let c = &self.config;
        let (h, heads) = (c.hidden as u32, c.heads as u32);
        let eps = (c.layer_norm_eps as f32).to_bits();
        let w = &self.weights;
        let mut ops = Vec::new();
        let matmul = |ops: &mut Vec<Op>, i: usize, m: u32, gelu: bool, x: Buf, y: Buf| {
            let l = self.linear(i);
            ops.push(Op {
                kernel: Kernel::MatmulQ8,
                params: [m, l.n, l.k, gelu as u32, l.bias_off(), l.dense as u32, 0, 0],
                groups: Kernel::MatmulQ8.groups(m, l.n),
                bufs: vec![x, Buf::Wq(i), Buf::Aux(i), y],
            });
        };
        let norm = |ops: &mut Vec<Op>, (wo, bo): (u32, u32), x: Buf, res: Option<Buf>| {
            ops.push(Op {
                kernel: Kernel::LayerNorm,
                params: [tokens, h, res.is_some() as u32, eps, wo, bo, 0, 0],
                groups: Kernel::LayerNorm.groups(tokens, 0),
                // without a residual any other buffer fills the slot (it must differ from the written one)
                bufs: vec![x, res.unwrap_or(Buf::Ctx), Buf::Tables],
            });
        };
        ops.push(Op {
            kernel: Kernel::Embed,
            params: [tokens, h, w.word_format, seqs, 0, w.type_off, 0, 0],
            groups: Kernel::Embed.groups(tokens * h, 0),
            bufs: vec![Buf::SeqInfo, Buf::Word, Buf::Tables, Buf::X],
        });
        norm(&mut ops, w.embedding_norm, Buf::X, None);
        let head_dim = h / heads;
        for (l, layer) in w.layers.iter().enumerate() {
            matmul(&mut ops, 4 * l, tokens, false, Buf::X, Buf::Qkv);
            ops.push(Op {
                kernel: Kernel::Attention,
                params: [
                    tokens,
                    heads,
                    head_dim,
                    h,
                    3 * h,
                    seqs,
                    (1.0 / (head_dim as f32).sqrt()).to_bits(),
                    0,
                ],
                groups: Kernel::Attention.groups(tokens * heads, 0),
                bufs: vec![Buf::SeqInfo, Buf::Qkv, Buf::Ctx],
            });
            matmul(&mut ops, 4 * l + 1, tokens, false, Buf::Ctx, Buf::A);
            norm(&mut ops, layer.attention_norm, Buf::A, Some(Buf::X));
            matmul(&mut ops, 4 * l + 2, tokens, true, Buf::A, Buf::Ffn);
            // the block's output overwrites x: its input is no longer needed (the residual is `a`)
            matmul(&mut ops, 4 * l + 3, tokens, false, Buf::Ffn, Buf::X);
            norm(&mut ops, layer.output_norm, Buf::X, Some(Buf::A));
        }
        ops.push(Op {
            kernel: Kernel::Pool,
            params: [seqs, h, 0, 0, 0, 0, 0, 0],
            groups: Kernel::Pool.groups(seqs * h, 0),
            bufs: vec![Buf::SeqInfo, Buf::X, Buf::Pooled],
        });
        matmul(
            &mut ops,
            4 * w.layers.len(),
            seqs,
            false,
            Buf::Pooled,
            Buf::Logits,
        );
        ops
    }

    /// Grow the activation buffers (and rebuild the bind groups) when a batch needs more room.
    fn ensure_capacity(&self, state: &mut State, tokens: usize, seqs: usize) -> Result<()> {
        if state.buffers.is_some() && tokens <= state.tokens && seqs <= state.seqs {
            return Ok(());
        }
        let c = &self.config;
        let tokens = tokens.max(state.tokens).next_multiple_of(128);
        let seqs = seqs.max(state.seqs).next_multiple_of(16);
        let limits = self.gpu.device.limits();
        let widest = (tokens * c.ffn.max(3 * c.hidden) * 4) as u64;
        if widest > limits.max_storage_buffer_binding_size || widest > limits.max_buffer_size {
            return Err(GuardError::Input(format!(
                "a batch of {tokens} tokens is too large for this device's buffers: split it"
            )));
        }
        let dev = &self.gpu.device;
        let buf = |label: &str, bytes: usize, usage: wgpu::BufferUsages| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(16) as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let st = wgpu::BufferUsages::STORAGE;
        let f = |n: usize| n * 4;
        let ops = self.plan(0, 0);
        let acts = Activations {
            params: buf(
                "params",
                ops.len() * PARAMS_STRIDE as usize,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            seq_info: buf(
                "seq_info",
                f(seqs + 1 + 2 * tokens),
                st | wgpu::BufferUsages::COPY_DST,
            ),
            x: buf("x", f(tokens * c.hidden), st),
            qkv: buf("qkv", f(tokens * 3 * c.hidden), st),
            ctx: buf("ctx", f(tokens * c.hidden), st),
            a: buf("a", f(tokens * c.hidden), st),
            ffn: buf("ffn", f(tokens * c.ffn), st),
            pooled: buf("pooled", f(seqs * c.hidden), st),
            logits: buf(
                "logits",
                f(seqs * c.labels.len()),
                st | wgpu::BufferUsages::COPY_SRC,
            ),
        };
        state.binds = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let bufs: Vec<&wgpu::Buffer> =
                    op.bufs.iter().map(|&b| self.resolve(&acts, b)).collect();
                self.pipelines.bind_group(
                    &self.gpu,
                    op.kernel,
                    &acts.params,
                    i as u64 * PARAMS_STRIDE,
                    &bufs,
                )
            })
            .collect();
        state.buffers = Some(acts);
        state.tokens = tokens;
        state.seqs = seqs;
        Ok(())
    }

    fn resolve<'a>(&'a self, acts: &'a Activations, b: Buf) -> &'a wgpu::Buffer {
        match b {
            Buf::SeqInfo => &acts.seq_info,
            Buf::X => &acts.x,
            Buf::Qkv => &acts.qkv,
            Buf::Ctx => &acts.ctx,
            Buf::A => &acts.a,
            Buf::Ffn => &acts.ffn,
            Buf::Pooled => &acts.pooled,
            Buf::Logits => &acts.logits,
            Buf::Word => &self.weights.word,
            Buf::Tables => &self.weights.tables,
            Buf::Wq(i) => &self.linear(i).wq,
            Buf::Aux(i) => &self.linear(i).aux,
        }
    }
}
