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

use candle_core::quantized::{gguf_file, GgmlDType};
use slm_guard::{BackendChoice, Guardian, ModelFiles, Policy, RespondOptions};

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

/// Writes the GGUF header of `model` (metadata and tensor table, no tensor data: ~15 KB) to `out`.
fn save_layout(model: &Path, out: &Path) {
    let mut f = std::fs::File::open(model).expect("model.gguf");
    let content = gguf_file::Content::read(&mut f).expect("a GGUF file");
    let bytes = std::fs::read(model).unwrap();
    std::fs::write(out, &bytes[..content.tensor_data_offset as usize]).expect("write the layout");
    println!(
        "{}: the layout of {} ({} tensors, {} bytes)",
        out.display(),
        model.display(),
        content.tensor_infos.len(),
        content.tensor_data_offset
    );
}

/// A model file with `layout`'s header and seeded random tensor data in the same formats: Q8_0 with one scale per
/// row (what our int8 kernels need) and F32 (norm weights near 1, as trained). Deterministic.
fn stand_in(layout: &[u8]) -> Vec<u8> {
    let content =
        gguf_file::Content::read(&mut std::io::Cursor::new(layout)).expect("a GGUF header");
    let start = content.tensor_data_offset as usize;
    let size = |i: &gguf_file::TensorInfo| {
        i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()
    };
    let end = content
        .tensor_infos
        .values()
        .map(|i| start + i.offset as usize + size(i))
        .max()
        .unwrap_or(start);
    let mut out = vec![0u8; end];
    out[..start].copy_from_slice(&layout[..start]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: fast, seeded, and good enough to keep every int8 value in play
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
    names.sort(); // HashMap order is random: keep the file deterministic
    for name in names {
        let info = &content.tensor_infos[&name];
        let data = &mut out[start + info.offset as usize..][..size(info)];
        match info.ggml_dtype {
            GgmlDType::Q8_0 => {
                // int8 values in [-127, 127] at scale 1.6e-4: weights of about +-0.02, like the trained ones;
                // every block has the same scale, so every row is row-scaled
                let scale = half::f16::from_f32(1.6e-4).to_le_bytes();
                for block in data.chunks_exact_mut(34) {
                    block[..2].copy_from_slice(&scale);
                    for q in &mut block[2..] {
                        *q = ((next() % 255) as i16 - 127) as i8 as u8;
                    }
                }
            }
            GgmlDType::F32 => {
                for v in data.chunks_exact_mut(4) {
                    let noise = (next() % 1000) as f32 / 1000.0 - 0.5;
                    v.copy_from_slice(&(1.0 + 0.02 * noise).to_le_bytes());
                }
            }
            other => panic!(
                "{name}: no stand-in for {other:?} (the shipped guardian has Q8_0 and F32 only)"
            ),
        }
    }
    out
}

/// The model files to time: the shipped ones in `dir`, or the stand-in for `layout` with `dir`'s tokenizer and a
/// manifest naming the stand-in's sha256.
fn model_files(dir: &Path, layout: Option<&Path>) -> ModelFiles {
    let mut files = ModelFiles::from_dir(dir).unwrap_or_else(|e| match layout {
        // the stand-in needs only the manifest and tokenizer from `dir`
        Some(_) => ModelFiles {
            manifest: std::fs::read(dir.join("manifest.json")).expect("manifest.json"),
            weights: Vec::new(),
            tokenizer: std::fs::read(dir.join("tokenizer.json"))
                .expect("tokenizer.json (expand it: python3 training/common/packed.py expand DIR)"),
        },
        None => panic!("{e} (scripts/setup.sh assembles models/guardian/model.gguf)"),
    });
    if let Some(layout) = layout {
        files.weights = stand_in(&std::fs::read(layout).expect("--stand-in LAYOUT"));
        let mut m: serde_json::Value = serde_json::from_slice(&files.manifest).unwrap();
        m["files"]["model.gguf"] = serde_json::json!({
            "sha256": slm_guard::manifest::sha256_hex(&files.weights),
            "bytes": files.weights.len(),
        });
        files.manifest = serde_json::to_vec(&m).unwrap();
    }
    files
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let path = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let out = path("--out");
    let dir = path("--model")
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/guardian"));
    if let Some(layout) = path("--save-layout") {
        save_layout(&dir.join("model.gguf"), &layout);
        return;
    }
    let layout = path("--stand-in");
    let files = model_files(&dir, layout.as_deref());
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
