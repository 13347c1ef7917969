//! The guardian on the CPU path vs the WebGPU decoder, through the API a page uses (`Guardian::classify_async`,
//! `Generation::next_async`): verdict latency for a ~32-token query and greedy decode speed, medians after a
//! warm-up. `bench/webgpu.sh` runs it after the classifier's `backends` bench.
//!
//!   cargo bench --bench guardian_backends -- [--runs N] [--tokens N] [--out FILE.json] [--model DIR]
//!       [--stand-in LAYOUT]
//!   cargo bench --bench guardian_backends -- --save-layout LAYOUT [--model DIR]
//!
//! `--stand-in` times a model with the shipped file's exact layout (its GGUF header, saved by `--save-layout`:
//! every tensor's name, shape, type and offset, and the metadata) and seeded random weights in the same formats
//! (row-scaled Q8_0, F32 norms). No kernel's work depends on the weights' values, so its timings are the shipped
//! model's; that is how the GPU run measures the guardian on a machine its 130 MB `model.gguf` cannot travel to
//! (bench/device-run.sh). Only the tokenizer and manifest come from `--model`.
//!
//! On a software adapter (lavapipe, SwiftShader) one decode step takes seconds, so it runs 1 generation of 8
//! tokens there; the figures then only show why `backend: 'auto'` never picks such an adapter.

use std::path::{Path, PathBuf};
use std::time::Instant;

use slm_guard::{BackendChoice, Guardian, Policy, RespondOptions};

#[path = "common/stand_in.rs"]
mod stand_in;

/// ~32 tokens with the guardian's tokenizer (printed).
const QUERY: &str =
    "Can you explain step by step how a small team should plan a two-week software release, \
                     including testing, code review and a rollback plan?";

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// Median verdict ms over `runs` (after one untimed call), and the backend that answered.
fn verdict_ms(g: &Guardian, runs: usize) -> (f64, String) {
    let p = Policy::default();
    let v = pollster::block_on(g.classify_async(QUERY, &p)).expect("verdict");
    let ms = (0..runs)
        .map(|_| {
            let t = Instant::now();
            pollster::block_on(g.classify_async(QUERY, &p)).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (median(ms), v.backend)
}

/// Median first-token ms and decode tokens/s (tokens after the first over the time after the first) of greedy
/// generations of up to `tokens` tokens (no stop on repetition), the fewest tokens a run generated, and the backend.
fn generation(g: &Guardian, runs: usize, tokens: usize) -> (f64, f64, usize, &'static str) {
    let opts = RespondOptions {
        max_tokens: tokens,
        no_repeat_ngram: 0,
        ..RespondOptions::default()
    };
    let (mut first, mut speed, mut fewest, mut backend) = (Vec::new(), Vec::new(), tokens, "cpu");
    for _ in 0..runs {
        let mut gen = g.start(QUERY, &opts).unwrap();
        let t = Instant::now();
        let mut t_first = None;
        while pollster::block_on(gen.next_async(g)).unwrap().is_some() {
            t_first.get_or_insert_with(|| t.elapsed().as_secs_f64());
        }
        let total = t.elapsed().as_secs_f64();
        let n = gen.tokens().len();
        fewest = fewest.min(n);
        let f = t_first.unwrap_or(total);
        first.push(f * 1e3);
        speed.push(if n > 1 && total > f {
            (n - 1) as f64 / (total - f)
        } else {
            0.0
        });
        backend = gen.backend();
    }
    (median(first), median(speed), fewest, backend)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let arg = |name: &str| value(name).and_then(|v| v.parse::<usize>().ok());
    let path = |name: &str| value(name).map(PathBuf::from);
    let out = path("--out");
    let dir = path("--model")
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/guardian"));
    if let Some(layout) = path("--save-layout") {
        let model = std::fs::read(dir.join("model.gguf")).expect("model.gguf");
        let header = stand_in::layout(&model).expect("a GGUF file");
        std::fs::write(&layout, header).expect("write the layout");
        println!(
            "{}: the layout of {}/model.gguf ({} bytes)",
            layout.display(),
            dir.display(),
            header.len()
        );
        return;
    }
    let layout = path("--stand-in");
    let files = match &layout {
        Some(l) => stand_in::model_files(&dir, &std::fs::read(l).expect("--stand-in LAYOUT")),
        None => slm_guard::ModelFiles::from_dir(&dir).unwrap_or_else(|e| {
            panic!("{e} (scripts/setup.sh assembles models/guardian/model.gguf)")
        }),
    };
    let cpu = Guardian::load(&files).expect("guardian");
    let gpu = match pollster::block_on(Guardian::load_with_backend(&files, BackendChoice::WebGpu)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("no WebGPU backend here: {e}");
            std::process::exit(2);
        }
    };
    let adapter = gpu.info().adapter.unwrap_or_default();
    let software = ["llvmpipe", "lavapipe", "SwiftShader", "WARP"]
        .iter()
        .any(|s| adapter.contains(s));
    let runs = arg("--runs").unwrap_or(if software { 1 } else { 7 });
    let tokens = arg("--tokens").unwrap_or(if software { 8 } else { 64 });
    let query_tokens = cpu.query_ids(QUERY).unwrap().len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let weights = match &layout {
        Some(l) => format!("stand-in with the layout {} (random weights)", l.display()),
        None => format!("{}/model.gguf", dir.display()),
    };
    println!(
        "adapter: {adapter}{}; CPU path: {threads} threads; query: {query_tokens} tokens; {runs} run(s), \
         generations of up to {tokens} tokens; weights: {weights}",
        if software { " (software)" } else { "" }
    );
    println!("| guardian | verdict median ms | first token median ms | decode tokens/s | fewest tokens |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (name, g) in [("cpu", &cpu), ("webgpu", &gpu)] {
        let (v_ms, v_backend) = verdict_ms(g, runs.max(3));
        let (first_ms, tok_s, fewest, g_backend) = generation(g, runs, tokens);
        assert!(
            v_backend == name && g_backend == name,
            "{name}: ran on {v_backend}/{g_backend}"
        );
        println!("| {name} | {v_ms:.1} | {first_ms:.1} | {tok_s:.2} | {fewest} |");
        rows.push(serde_json::json!({
            "backend": name, "verdict_median_ms": v_ms, "first_token_median_ms": first_ms,
            "decode_tokens_per_s": tok_s, "fewest_generated_tokens": fewest,
        }));
    }
    if let Some(out) = out {
        let doc = serde_json::json!({
            "adapter": adapter, "software_adapter": software, "cpu_threads": threads, "weights": weights,
            "query_tokens": query_tokens, "runs": runs, "generated_tokens": tokens, "rows": rows,
        });
        std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write --out");
    }
}
