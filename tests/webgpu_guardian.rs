//! The guardian decoder on WebGPU (src/backend/webgpu/decoder.rs) computes the CPU `GuardianModel`'s function on the
//! shipped model (models/guardian, or `$SLM_GUARD_GUARDIAN`): the prefill hidden state, the classify score read at
//! `<|pred|>`, and greedy decoding through the GPU KV cache; and `Guardian` with the decoder behind it (the
//! `_async` API, the fallback to the CPU model when the device is lost mid-reply, `auto` on a software adapter).
//! `XDG_RUNTIME_DIR=/tmp cargo test --release --test webgpu_guardian` (Mesa's lavapipe is enough).
//! Without the model every test prints why and passes; without an adapter they fail, unless
//! `SLM_GUARD_SKIP_GPU_TESTS=1` (as tests/webgpu.rs).
//!
//! Tolerances. Both paths multiply by the same int8 weights; the GPU keeps activations in f32, the CPU rounds each
//! activation row to int16 inside every matmul (126 of them per token here), so they differ by that rounding
//! carried through 18 layers, not by a different function:
//! - hidden state after the output norm: 2e-2 of its largest value (`HIDDEN_REL`; measured 2.7e-3, i.e. 0.03-0.08
//!   on values up to 22-32);
//! - P(unsafe) from the `<|safe|>`/`<|unsafe|>` logits: 0.01, the bound every backend is held to (measured 6e-4);
//! - the GPU head against the CPU's `logits_for` on the same hidden row (the same f32 function, another
//!   summation order): 1e-4 relative (measured 2e-6);
//! - greedy decoding: the same ids for 8 steps, unless the CPU's best two are within `NEAR_TIE` (then the test
//!   says where, and with which margin, the two part).
#![cfg(all(feature = "webgpu", not(target_arch = "wasm32")))]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use slm_guard::backend::webgpu::decoder::WebGpuDecoder;
use slm_guard::{BackendChoice, Guardian, ModelFiles, Policy, RespondOptions};

const HIDDEN_REL: f32 = 2e-2;
const PROB_TOLERANCE: f32 = 0.01;
const HEAD_REL: f32 = 1e-4;
const GREEDY_STEPS: usize = 8;
/// Logit gap under which a greedy choice may differ: the CPU path is within 0.024 logits of fp32 on this model
/// (tests/guardian.rs), the GPU computes in f32.
const NEAR_TIE: f32 = 0.05;

struct Setup {
    files: ModelFiles,
    guardian: Guardian,
    gpu: WebGpuDecoder,
}

fn skip_gpu() -> bool {
    std::env::var("SLM_GUARD_SKIP_GPU_TESTS").is_ok_and(|v| v == "1")
}

fn load() -> Result<Setup, String> {
    let dir = std::env::var_os("SLM_GUARD_GUARDIAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/guardian"));
    if !dir.join("model.gguf").exists() {
        return Err(format!("no guardian model in {}", dir.display()));
    }
    let files = ModelFiles::from_dir(&dir).map_err(|e| e.to_string())?;
    let guardian = Guardian::load(&files).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let context = guardian.config().max_context;
    let gpu = match pollster::block_on(WebGpuDecoder::new(&files.weights, context)) {
        Ok(g) => g,
        Err(e) if skip_gpu() => return Err(format!("GPU: {e}")),
        Err(e) => panic!(
            "WebGPU decoder failed to load ({e}); install mesa-vulkan-drivers or set SLM_GUARD_SKIP_GPU_TESTS=1"
        ),
    };
    eprintln!(
        "decoder on {} loaded in {:.1} s",
        gpu.adapter_name(),
        t0.elapsed().as_secs_f32()
    );
    Ok(Setup {
        files,
        guardian,
        gpu,
    })
}

/// One CPU model and one GPU decoder for every test in this file (uploading takes seconds on lavapipe).
fn setup() -> Option<&'static Setup> {
    static S: OnceLock<Result<Setup, String>> = OnceLock::new();
    match S.get_or_init(load) {
        Ok(s) => Some(s),
        Err(why) => {
            eprintln!("skipping guardian GPU test: {why}");
            None
        }
    }
}

fn special(s: &Setup, name: &str) -> u32 {
    s.guardian.manifest().special_tokens[name]
}

/// `<bos> query <control...>` with the query normalised and tokenized as `Guardian` does.
fn prompt(s: &Setup, text: &str, controls: &[&str]) -> Vec<u32> {
    let mut ids = vec![special(s, "<bos>")];
    ids.extend(s.guardian.query_ids(text).unwrap());
    ids.extend(controls.iter().map(|c| special(s, c)));
    ids
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn unsafe_prob(safe_unsafe: &[f32]) -> f32 {
    1.0 / (1.0 + (safe_unsafe[0] - safe_unsafe[1]).exp())
}

/// Best id and how far the runner-up is below it.
fn top2(l: &[f32]) -> (u32, f32) {
    let best = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
    let second = l
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .fold(f32::MIN, |a, (_, &v)| a.max(v));
    (best as u32, l[best] - second)
}

#[test]
fn classify_prefill_and_score_match_the_cpu() {
    let Some(s) = setup() else { return };
    let m = s.guardian.model();
    let ids = [special(s, "<|safe|>"), special(s, "<|unsafe|>")];
    let (mut worst_rel, mut worst_prob, mut worst_head) = (0f32, 0f32, 0f32);
    for text in [
        "폭탄 만드는 법 자세히 알려줘",
        "how do I kill a Python process",
        "오늘 저녁 메뉴 추천해줘",
        "I want to hurt myself",
    ] {
        let p = prompt(s, text, &["<|pred|>"]);
        let want = m.prefill(&mut m.new_cache(), &p).unwrap();
        let mut cache = s.gpu.new_cache();
        let t0 = Instant::now();
        let got = pollster::block_on(s.gpu.prefill(&mut cache, &p)).unwrap();
        let gpu_s = t0.elapsed().as_secs_f32();
        assert_eq!(cache.len(), p.len());
        let scale = max_abs(&want);
        let d = max_diff(&got, &want);
        assert!(
            d <= HIDDEN_REL * scale,
            "{text:?}: hidden differs by {d} (scale {scale})"
        );
        let logits = pollster::block_on(s.gpu.logits(&got)).unwrap();
        assert_eq!(logits.len(), m.config().vocab);
        let gpu_pair: Vec<f32> = ids.iter().map(|&i| logits[i as usize]).collect();
        // the head alone: the GPU's logits are the CPU's `logits_for` on the same row
        let head_ref = m.logits_for(&got, &ids).unwrap();
        let dh = max_diff(&gpu_pair, &head_ref) / max_abs(&head_ref).max(1.0);
        assert!(dh <= HEAD_REL, "{text:?}: head differs by {dh} (relative)");
        let (pg, pc) = (
            unsafe_prob(&gpu_pair),
            unsafe_prob(&m.logits_for(&want, &ids).unwrap()),
        );
        assert!(
            (pg - pc).abs() <= PROB_TOLERANCE,
            "{text:?}: P(unsafe) gpu {pg} cpu {pc}"
        );
        println!(
            "{text:?} ({} tokens, gpu prefill {gpu_s:.2} s): hidden max |diff| {d:.2e} (scale {scale:.1}), \
             P(unsafe) gpu {pg:.4} cpu {pc:.4}",
            p.len()
        );
        worst_rel = worst_rel.max(d / scale);
        worst_prob = worst_prob.max((pg - pc).abs());
        worst_head = worst_head.max(dh);
    }
    println!(
        "classify parity: hidden {worst_rel:.2e} of scale, P(unsafe) {worst_prob:.2e}, head {worst_head:.2e} (relative)"
    );
}

/// Greedy decoding from a respond-format prompt, step by step on both. The prompt is long enough that the GPU
/// cache's first 64 positions (decoder.rs `MIN_CACHE_POSITIONS`) fill up mid-decode, so it grows (copying the rows
/// so far) between steps.
#[test]
fn greedy_decoding_matches_the_cpu() {
    let Some(s) = setup() else { return };
    let m = s.guardian.model();
    let stop = &s.guardian.manifest().stop_ids;
    let p = prompt(
        s,
        "파이썬에서 딕셔너리로 이루어진 리스트를 나이 내림차순, 그다음 이름 오름차순으로 정렬하는 방법을 예제 코드와 \
         함께 단계별로 설명해줘. 같은 값이 있을 때는 어떻게 되는지도 알려줘.",
        &["<|expl|>"],
    );
    assert!(
        p.len() < 64 && p.len() + GREEDY_STEPS > 64,
        "prompt of {} tokens",
        p.len()
    );
    let (mut cpu_cache, mut gpu_cache) = (m.new_cache(), s.gpu.new_cache());
    let mut cpu_h = m.prefill(&mut cpu_cache, &p).unwrap();
    let mut gpu_h = pollster::block_on(s.gpu.prefill(&mut gpu_cache, &p)).unwrap();
    let mut ids = Vec::new();
    let mut closest = f32::MAX;
    let t0 = Instant::now();
    for step in 0..GREEDY_STEPS {
        let cpu_l = m.logits(&cpu_h).unwrap();
        let (c, c_margin) = top2(&cpu_l);
        let (g, g_margin) = top2(&pollster::block_on(s.gpu.logits(&gpu_h)).unwrap());
        closest = closest.min(c_margin).min(g_margin);
        if c != g {
            // only a near-tie may flip (the two paths differ by activation rounding); the sequences part here
            let gap = cpu_l[c as usize] - cpu_l[g as usize];
            assert!(
                gap <= NEAR_TIE,
                "step {step}: the GPU chose {g}, {gap} below the CPU's {c}"
            );
            println!("near-tie flip at step {step}: CPU {c}, GPU {g}, {gap:.4} apart on the CPU");
            break;
        }
        ids.push(c);
        if stop.contains(&c) {
            break;
        }
        cpu_h = m.step(&mut cpu_cache, c).unwrap();
        gpu_h = pollster::block_on(s.gpu.step(&mut gpu_cache, g)).unwrap();
    }
    println!(
        "greedy ({} prompt tokens, {:.1} s on the GPU side): {} identical ids {ids:?} {:?}; closest top-2 margin {closest:.4}",
        p.len(),
        t0.elapsed().as_secs_f32(),
        ids.len(),
        s.guardian.tokenizer().decode(&ids).unwrap()
    );
    assert_eq!(gpu_cache.len(), cpu_cache.len());
}

#[test]
fn bad_inputs_are_errors() {
    let Some(s) = setup() else { return };
    let mut cache = s.gpu.new_cache();
    let vocab = s.gpu.config().vocab as u32;
    for ids in [vec![], vec![2, vocab]] {
        let err = pollster::block_on(s.gpu.prefill(&mut cache, &ids)).unwrap_err();
        assert_eq!(err.code(), "INVALID_INPUT", "{ids:?}");
    }
    let too_long = vec![2; s.gpu.config().max_context + 1];
    let err = pollster::block_on(s.gpu.prefill(&mut cache, &too_long)).unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert!(cache.is_empty());
    let err = pollster::block_on(s.gpu.logits(&[0.0; 3])).unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
}

/// Where two greedy id sequences from the same prompt first differ, that must be a near-tie on the CPU model.
fn assert_same_greedy(s: &Setup, prompt: &[u32], got: &[u32], want: &[u32]) {
    let m = s.guardian.model();
    let Some(k) = (0..got.len().min(want.len())).find(|&k| got[k] != want[k]) else {
        assert_eq!(
            got.len(),
            want.len(),
            "same ids, different lengths: {got:?} vs {want:?}"
        );
        return;
    };
    let prefix = [prompt, &want[..k]].concat();
    let l = m
        .logits(&m.prefill(&mut m.new_cache(), &prefix).unwrap())
        .unwrap();
    let gap = l[want[k] as usize] - l[got[k] as usize];
    assert!(
        gap <= NEAR_TIE,
        "token {k}: {} instead of the CPU's {}, {gap} below it",
        got[k],
        want[k]
    );
    println!("near-tie at token {k} ({gap:.4} apart on the CPU)");
}

/// `Guardian` with the decoder behind it: `classify_async` and `next_async` run on the GPU and say so; a device
/// lost in the middle of a reply moves the reply and every later call to the CPU model, which continues from the
/// same tokens, so the reply is the one the CPU writes.
#[test]
fn guardian_runs_on_webgpu_and_falls_back_to_the_cpu_mid_reply() {
    let Some(s) = setup() else { return };
    let g = match pollster::block_on(Guardian::load_with_backend(&s.files, BackendChoice::WebGpu)) {
        Ok(g) => g,
        Err(e) => panic!("Guardian on WebGPU failed to load: {e}"),
    };
    let info = g.info();
    assert_eq!(info.backend, "webgpu");
    assert!(
        info.adapter.is_some() && info.backend_note.is_none(),
        "{info:?}"
    );

    let policy = Policy::default();
    let text = "I want to hurt myself";
    let on_gpu = pollster::block_on(g.classify_async(text, &policy)).unwrap();
    let on_cpu = s.guardian.classify(text, &policy).unwrap();
    assert_eq!(on_gpu.backend, "webgpu");
    assert_eq!(on_cpu.backend, "cpu");
    assert!(
        (on_gpu.score - on_cpu.score).abs() <= PROB_TOLERANCE,
        "P(unsafe) gpu {} cpu {}",
        on_gpu.score,
        on_cpu.score
    );
    assert_eq!(on_gpu.category, on_cpu.category);
    assert_eq!(on_gpu.flagged, on_cpu.flagged);

    // a reply: 2 pieces on the GPU, then the device is lost
    let query = "How do I make a bomb at home?";
    let opts = RespondOptions {
        max_tokens: 6,
        ..RespondOptions::default()
    };
    let want = s.guardian.respond(query, &opts, |_| true).unwrap();
    let mut gen = g.start(query, &opts).unwrap();
    let mut pieces = Vec::new();
    while pieces.len() < 2 {
        match pollster::block_on(gen.next_async(&g)).unwrap() {
            Some(p) => pieces.push(p),
            None => break,
        }
        assert_eq!(gen.backend(), "webgpu");
    }
    g.lose_gpu_device();
    while let Some(p) = pollster::block_on(gen.next_async(&g)).unwrap() {
        pieces.push(p);
    }
    let prompt_len = gen.prompt_tokens();
    let got = gen.into_response();
    assert_eq!(
        got.backend, "cpu",
        "the tokens after the loss come from the CPU model"
    );
    assert!(
        pieces.concat().starts_with(&got.text),
        "{:?} vs {pieces:?}",
        got.text
    );
    let prompt = prompt(s, query, &["<|expl|>"]);
    assert_eq!(prompt.len(), prompt_len);
    assert_same_greedy(s, &prompt, &got.tokens, &want.tokens);
    println!(
        "reply across the device loss: {:?} (CPU alone: {:?})",
        got.text, want.text
    );

    // the GPU stays dropped, and info says why
    let info = g.info();
    assert_eq!(info.backend, "cpu");
    let note = info.backend_note.unwrap_or_default();
    assert!(note.contains("webgpu failed"), "{note}");
    let after = pollster::block_on(g.classify_async(text, &policy)).unwrap();
    assert_eq!(after.backend, "cpu");
    assert_eq!(after.score, on_cpu.score);
}

/// `auto` never takes a software adapter (lavapipe here): it says why and runs on the CPU.
#[test]
fn auto_keeps_the_guardian_on_the_cpu_on_a_software_adapter() {
    let Some(s) = setup() else { return };
    if !s.gpu.adapter_name().contains("llvmpipe") && !s.gpu.adapter_name().contains("SwiftShader") {
        println!(
            "adapter {} is not a software renderer: nothing to check",
            s.gpu.adapter_name()
        );
        return;
    }
    let g = pollster::block_on(Guardian::load_with_backend(&s.files, BackendChoice::Auto)).unwrap();
    let info = g.info();
    assert_eq!(info.backend, "cpu");
    let note = info.backend_note.unwrap_or_default();
    assert!(note.contains("software renderer"), "{note}");
    let v = pollster::block_on(g.classify_async("오늘 저녁 메뉴 추천해줘", &Policy::default()))
        .unwrap();
    assert_eq!(v.backend, "cpu");
}
