//! The classifier's files as git keeps them (`model.gguf.xz`, `tokenizer.json.xz`), through the command setup runs
//! (`python3 training/common/packed.py expand`): they expand to the very bytes the manifest names, a truncated or
//! foreign archive is refused with a clear error and replaces nothing, and the runtime says what to run when only
//! the packed form is there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slm_guard::manifest::sha256_hex;

const FILES: [&str; 2] = ["model.gguf", "tokenizer.json"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch model directory holding the manifest and the committed archives only.
fn scratch(name: &str) -> PathBuf {
    let src = repo().join("models/classifier");
    let dir = std::env::temp_dir().join(format!("slm-guard-packed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("manifest.json"), dir.join("manifest.json")).unwrap();
    for f in FILES {
        let packed = format!("{f}.xz");
        std::fs::copy(src.join(&packed), dir.join(&packed)).unwrap();
    }
    dir
}

fn expand(dir: &Path) -> Output {
    Command::new("python3")
        .arg(repo().join("training/common/packed.py"))
        .arg("expand")
        .arg(dir)
        .output()
        .expect("python3 (scripts/setup.sh runs the same command)")
}

fn manifest_sha(dir: &Path, file: &str) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["files"][file]["sha256"].as_str().unwrap().to_string()
}

#[test]
fn the_archives_expand_to_the_manifest_files() {
    let dir = scratch("ok");
    let out = expand(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in FILES {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(sha256_hex(&bytes), manifest_sha(&dir, f), "{f}");
        // packing is what frees the space: the archive is smaller than what it expands to
        assert!(
            std::fs::metadata(dir.join(format!("{f}.xz")))
                .unwrap()
                .len()
                < bytes.len() as u64
        );
    }
    // the expanded directory is a loadable model
    let guard = slm_guard::Guard::load(&slm_guard::ModelFiles::from_dir(&dir).unwrap()).unwrap();
    assert_eq!(
        guard.info().weights_bytes as u64,
        std::fs::metadata(dir.join("model.gguf")).unwrap().len()
    );
    // a second run finds everything current and writes nothing
    let again = expand(&dir);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).trim().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_expanded_file_is_replaced() {
    let dir = scratch("stale");
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
    let out = expand(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = std::fs::read(dir.join("tokenizer.json")).unwrap();
    assert_eq!(sha256_hex(&tok), manifest_sha(&dir, "tokenizer.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_archive_is_refused_and_replaces_nothing() {
    let dir = scratch("truncated");
    let packed = dir.join("model.gguf.xz");
    let bytes = std::fs::read(&packed).unwrap();
    std::fs::write(&packed, &bytes[..bytes.len() / 2]).unwrap();
    let out = expand(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.gguf.xz") && err.contains("tampered or truncated"),
        "{err}"
    );
    assert!(!dir.join("model.gguf").exists());
    assert!(!dir.join("model.gguf.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_archive_of_other_bytes_is_refused() {
    let dir = scratch("foreign");
    // a valid xz file, but of the tokenizer: its sha256 is not the weights'
    std::fs::copy(dir.join("tokenizer.json.xz"), dir.join("model.gguf.xz")).unwrap();
    let out = expand(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sha256 is not the manifest's"), "{err}");
    assert!(!dir.join("model.gguf").exists() && !dir.join("model.gguf.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_only_the_packed_form_says_to_run_setup() {
    let dir = scratch("unexpanded");
    let err = match slm_guard::ModelFiles::from_dir(&dir) {
        Ok(_) => panic!("loaded a directory without model.gguf"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("model.gguf.xz") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
