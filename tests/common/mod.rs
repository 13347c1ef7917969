//! Shared helpers for integration tests: they run on the real shipped model (or $SLM_GUARD_MODEL).
#![allow(dead_code)]

use std::path::PathBuf;

use slm_guard::{Guard, ModelFiles};

pub fn model_dir() -> PathBuf {
    std::env::var_os("SLM_GUARD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/classifier"))
}

pub fn files() -> ModelFiles {
    ModelFiles::from_dir(model_dir()).expect("model files readable")
}

pub fn guard() -> Guard {
    Guard::load(&files()).expect("shipped model loads")
}

pub fn reference() -> serde_json::Value {
    let bytes = std::fs::read(model_dir().join("reference.json")).expect("reference.json");
    serde_json::from_slice(&bytes).expect("reference.json is JSON")
}
