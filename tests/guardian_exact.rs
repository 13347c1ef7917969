//! The guardian's model code with every weight dequantized to f32 (candle's `CANDLE_DEQUANTIZE_ALL`), so no
//! activation is rounded: it must then match the PyTorch twin (training/guardian/gemma3.py) to float precision,
//! and decoding token by token (KV cache, chunked prefill, the local layers' 512-position ring) must equal one
//! pass. This isolates the model's math from the quantized kernels that tests/guardian.rs tolerates. Base model
//! only (gitignored; `scripts/setup.sh --test` fetches both files, so CI runs it; skipped with a message when they
//! are absent); ~1.4 GB while it runs.
//! Alone in its binary: the switch is read once per thread when the weights load.

use slm_guard::model::GuardianModel;
use slm_guard::text::normalize;
use slm_guard::tokenizer::GemmaTokenizer;

const BASE_GGUF: &str = "training/.cache/assets/gemma-3-270m-q4_k_m.gguf";
const BASE_TOKENIZER: &str = "training/.cache/assets/gemma3-tokenizer.json";

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn dequantized_forward_matches_the_reference_exactly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (g, t) = (root.join(BASE_GGUF), root.join(BASE_TOKENIZER));
    if !g.exists() || !t.exists() {
        eprintln!("skipping: {BASE_GGUF} or {BASE_TOKENIZER} is not present");
        return;
    }
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let m = GuardianModel::from_gguf(&std::fs::read(&g).unwrap(), 2048).unwrap();
    let tok = GemmaTokenizer::from_bytes(&std::fs::read(&t).unwrap()).unwrap();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("tests/data/guardian_base_reference.json")).unwrap(),
    )
    .unwrap();
    let mut worst = 0f32;
    for row in reference["rows"].as_array().unwrap() {
        let mut cache = m.new_cache();
        let h = m
            .prefill(&mut cache, &ids(&row["classify_prompt"]))
            .unwrap();
        let want: Vec<f32> = row["check_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_diff(&m.logits_for(&h, &ids(&row["check_ids"])).unwrap(), &want);
        worst = worst.max(d);
        // logits reach ~±60 here: 2e-3 is float noise of 18 layers in a different summation order
        assert!(d < 2e-3, "{}: logits differ by {d}", row["text"]);
    }
    eprintln!("dequantized forward vs reference: max |logit diff| {worst:.6}");
    let text =
        "The quick brown fox jumps over the lazy dog while 다람쥐 헌 쳇바퀴에 타고파. ".repeat(40);
    let mut all = vec![2];
    all.extend(tok.encode(&normalize(&text)).unwrap());
    for (n, split) in [(60usize, 50usize), (300, 129), (600, 590)] {
        let seq = &all[..n];
        let mut one = m.new_cache();
        let a = m.prefill(&mut one, seq).unwrap();
        let mut inc = m.new_cache();
        m.prefill(&mut inc, &seq[..split]).unwrap();
        let mut b = Vec::new();
        for &id in &seq[split..] {
            b = m.step(&mut inc, id).unwrap();
        }
        let d = max_diff(&a, &b);
        eprintln!("{n} positions, one pass vs {split} + steps: max |diff| {d:.6}");
        assert!(d < 1e-3, "{n} positions: {d}");
    }
}
