//! The committed guardian delta (`models/guardian/delta.q8diff.xz`) through the same command setup runs
//! (`training/guardian/assemble.py`): it decodes to the very `delta.gguf` the manifest names, and a tampered or
//! truncated file is refused with a clear error. Needs `.venv-models` (numpy + gguf, made by scripts/setup.sh) and
//! the base package it fetches; without them the test prints why and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch model directory: the manifest, the packed delta (optionally altered), the packed tokenizer and, so
/// that nothing else is rebuilt, the assembled model.gguf.
fn scratch(name: &str, alter: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let src = repo().join("models/guardian");
    let dir = std::env::temp_dir().join(format!("slm-guard-delta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("manifest.json"), dir.join("manifest.json")).unwrap();
    std::fs::copy(src.join("model.gguf"), dir.join("model.gguf")).unwrap();
    std::fs::copy(src.join("tokenizer.json.xz"), dir.join("tokenizer.json.xz")).unwrap();
    let mut packed = std::fs::read(src.join("delta.q8diff.xz")).unwrap();
    alter(&mut packed);
    std::fs::write(dir.join("delta.q8diff.xz"), packed).unwrap();
    dir
}

fn assemble(dir: &Path) -> std::process::Output {
    Command::new(repo().join(".venv-models/bin/python"))
        .arg(repo().join("training/guardian/assemble.py"))
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn ready() -> bool {
    let ok = repo().join(".venv-models/bin/python").exists()
        && repo().join("models/guardian/model.gguf").exists();
    if !ok {
        eprintln!(
            "skipped: run scripts/setup.sh first (.venv-models and models/guardian/model.gguf)"
        );
    }
    ok
}

#[test]
fn the_packed_delta_decodes_to_the_manifest_delta() {
    if !ready() {
        return;
    }
    let dir = scratch("ok", |_| {});
    let out = assemble(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let delta = std::fs::read(dir.join("delta.gguf")).unwrap();
    assert_eq!(
        slm_guard::manifest::sha256_hex(&delta),
        m["delta"]["gguf_sha256"].as_str().unwrap()
    );
    assert_eq!(
        delta.len() as u64,
        m["delta"]["gguf_bytes"].as_u64().unwrap()
    );
    let tok = std::fs::read(dir.join("tokenizer.json")).unwrap();
    assert_eq!(
        slm_guard::manifest::sha256_hex(&tok),
        m["files"]["tokenizer.json"]["sha256"].as_str().unwrap()
    );
    // the packed form is what keeps the tree small: well under the decoded size
    assert!(m["delta"]["bytes"].as_u64().unwrap() * 2 < delta.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tampered_or_truncated_delta_is_refused() {
    if !ready() {
        return;
    }
    let flipped = scratch("flip", |b| {
        let mid = b.len() / 2;
        b[mid] ^= 1
    });
    let truncated = scratch("cut", |b| b.truncate(b.len() / 3));
    for dir in [flipped, truncated] {
        assert_refused(&dir, "delta.gguf");
    }
}

/// assemble.py refuses the scratch directory as tampered or truncated and writes nothing to `unwritten`.
fn assert_refused(dir: &Path, unwritten: &str) {
    let out = assemble(dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tampered or truncated"), "{err}");
    assert!(!dir.join(unwritten).exists(), "{unwritten} written");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_tampered_or_truncated_tokenizer_is_refused() {
    if !ready() {
        return;
    }
    for (name, cut) in [("tok-flip", false), ("tok-cut", true)] {
        let dir = scratch(name, |_| {});
        let path = dir.join("tokenizer.json.xz");
        let mut b = std::fs::read(&path).unwrap();
        if cut {
            b.truncate(b.len() / 2);
        } else {
            let mid = b.len() / 2;
            b[mid] ^= 1;
        }
        std::fs::write(&path, b).unwrap();
        assert_refused(&dir, "tokenizer.json");
    }
}
