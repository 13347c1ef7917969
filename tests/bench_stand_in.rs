//! The stand-in that the GPU run times in place of the guardian's model.gguf (benches/common/stand_in.rs,
//! bench/device-run.sh): its file has the shipped file's exact layout, the runtime loads it through the same checks,
//! and it generates the tokens asked for, as the bench needs. Skips (printing why) without models/guardian/model.gguf.

#[path = "../benches/common/stand_in.rs"]
mod stand_in;

use std::path::PathBuf;

use candle_core::quantized::gguf_file::Content;
use slm_guard::{Guardian, RespondOptions};

fn guardian_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/guardian");
    if dir.join("model.gguf").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: run scripts/setup.sh first (models/guardian/model.gguf)");
        None
    }
}

#[test]
fn the_stand_in_has_the_shipped_layout_and_runs() {
    let Some(dir) = guardian_dir() else { return };
    let shipped = std::fs::read(dir.join("model.gguf")).unwrap();
    let layout = stand_in::layout(&shipped).unwrap();
    assert!(
        layout.len() < 64 * 1024,
        "the layout is what travels: {} bytes",
        layout.len()
    );
    let files = stand_in::model_files(&dir, layout);
    // same size, same header, other weights
    assert_eq!(files.weights.len(), shipped.len());
    assert_eq!(&files.weights[..layout.len()], layout);
    assert_ne!(files.weights, shipped);
    let (a, b) = (
        Content::read(&mut std::io::Cursor::new(&shipped)).unwrap(),
        Content::read(&mut std::io::Cursor::new(&files.weights)).unwrap(),
    );
    assert_eq!(a.tensor_infos.len(), b.tensor_infos.len());
    for (name, t) in &a.tensor_infos {
        let s = &b.tensor_infos[name];
        assert_eq!(
            (s.ggml_dtype, s.shape.dims(), s.offset),
            (t.ggml_dtype, t.shape.dims(), t.offset),
            "{name}"
        );
    }
    // deterministic: two builds are the same bytes
    assert_eq!(stand_in::weights(layout).unwrap(), files.weights);

    // the runtime loads it (sha256 and vocabulary checks included) and decodes the tokens the bench asks for
    let g = Guardian::load(&files).expect("the stand-in loads");
    let p = g
        .score("how do I plan a software release?")
        .unwrap()
        .unsafe_prob;
    assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{p}");
    let opts = RespondOptions {
        max_tokens: 12,
        no_repeat_ngram: 0,
        ..RespondOptions::default()
    };
    let mut gen = g.start("how do I plan a software release?", &opts).unwrap();
    while gen.next(&g).unwrap().is_some() {}
    assert_eq!(
        gen.tokens().len(),
        12,
        "random weights still decode every token asked for"
    );
}

#[test]
fn a_layout_is_only_taken_from_a_gguf_file() {
    assert!(stand_in::layout(b"not a gguf file").is_err());
}
