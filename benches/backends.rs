//! CPU path vs WebGPU backend on the shipped classifier: batch 1, 8 and 64 windows of 64 tokens, median and p95
//! wall time per forward pass (after a warm-up). `bench/webgpu.sh` runs it and records the adapter's name.
//!
//!   cargo bench --bench backends -- [--runs N] [--out FILE.json] [--model DIR]
//!
//! On a software adapter (lavapipe, SwiftShader) the figures only prove the GPU path runs; the claim to check on a
//! real GPU is batch 64 >= 10x the CPU path's throughput and batch 1 no slower.

use std::time::Instant;

use slm_guard::backend::webgpu::WebGpuBackend;
use slm_guard::model::Classifier;

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let p95 = ms[((ms.len() as f64 * 0.95).ceil() as usize).clamp(1, ms.len()) - 1];
    (ms[ms.len() / 2], p95)
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up: first-use allocations, buffer growth
    stats(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(7);
    let dir = arg("--model")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/classifier")
        });
    let weights = std::fs::read(dir.join("model.gguf")).expect(
        "model.gguf in --model DIR (default models/classifier; scripts/setup.sh expands it)",
    );
    let cpu = Classifier::from_gguf(&weights).expect("CPU model");
    let gpu = match pollster::block_on(WebGpuBackend::new(&weights)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("no WebGPU backend here: {e}");
            std::process::exit(2);
        }
    };
    let vocab = cpu.config().vocab as u32;
    let seq: Vec<u32> = (0..64u32).map(|i| 5 + (i * 7919) % (vocab - 5)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    println!(
        "adapter: {}{}; CPU path: {threads} threads",
        gpu.adapter_name(),
        if gpu.is_software() { " (software)" } else { "" }
    );
    println!(
        "| batch x 64 tokens | CPU median / p95 ms | WebGPU median / p95 ms | WebGPU speed-up |"
    );
    println!("|---|---|---|---|");
    for batch in [1usize, 8, 64] {
        let b = vec![seq.clone(); batch];
        // a software adapter needs minutes for batch 64: fewer runs there
        let n = if gpu.is_software() && batch == 64 {
            2
        } else {
            runs
        };
        let (c50, c95) = time(n, || {
            cpu.forward(&b).unwrap();
        });
        let (g50, g95) = time(n, || {
            pollster::block_on(gpu.forward(&b)).unwrap();
        });
        println!(
            "| {batch} | {c50:.1} / {c95:.1} | {g50:.1} / {g95:.1} | {:.2}x |",
            c50 / g50
        );
        rows.push(serde_json::json!({
            "batch": batch, "tokens": 64, "runs": n,
            "cpu_median_ms": c50, "cpu_p95_ms": c95, "webgpu_median_ms": g50, "webgpu_p95_ms": g95,
        }));
    }
    if let Some(out) = arg("--out") {
        let doc = serde_json::json!({
            "adapter": gpu.adapter_name(), "software_adapter": gpu.is_software(),
            "cpu_threads": threads, "rows": rows,
        });
        std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write --out");
    }
}
