//! Milliseconds from a monotonic-enough clock on every target (on wasm32 `performance.now()`, else `Date.now()`;
//! edge runtimes such as workerd only advance their clocks across I/O, so timings there read 0 for pure compute).

#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::JsCast;

/// `performance.now()` where the runtime has it (browsers, Node, Deno: sub-millisecond), else `Date.now()`.
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .filter(|p| p.is_object());
    if let Some(perf) = perf {
        if let Ok(now) = js_sys::Reflect::get(&perf, &"now".into()) {
            if let Some(f) = now.dyn_ref::<js_sys::Function>() {
                if let Some(t) = f.call0(&perf).ok().and_then(|v| v.as_f64()) {
                    return t;
                }
            }
        }
    }
    js_sys::Date::now()
}
