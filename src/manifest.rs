//! The model manifest (`models/<name>/manifest.json`): what a model is, its labels, default thresholds and the
//! sha256 of every file. Files are verified before anything parses them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{GuardError, Result};

/// Manifest `format_version` this runtime reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub format_version: u32,
    pub task: String,
    pub architecture: Architecture,
    pub quantization: BTreeMap<String, String>,
    pub text: TextConfig,
    pub labels: Vec<String>,
    pub categories: Vec<String>,
    /// Default per-label thresholds (`unsafe` plus each category), chosen on the dev splits.
    pub thresholds: BTreeMap<String, f32>,
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub licence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Architecture {
    #[serde(rename = "type")]
    pub kind: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_position: usize,
    pub layer_norm_eps: f64,
    pub pad_id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextConfig {
    pub normalization: String,
    pub max_tokens: usize,
    pub window_stride: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| GuardError::Manifest(e.to_string()))?;
        if m.format_version != FORMAT_VERSION {
            return Err(GuardError::Version {
                found: m.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if m.architecture.kind != "bert-encoder-mean-pool-linear-head" {
            return Err(GuardError::Manifest(format!(
                "unknown architecture `{}`",
                m.architecture.kind
            )));
        }
        if m.text.normalization != "slm-guard-v1" {
            return Err(GuardError::Manifest(format!(
                "unknown text normalization `{}`",
                m.text.normalization
            )));
        }
        if m.text.max_tokens < 8 || m.text.max_tokens > m.architecture.max_position {
            return Err(GuardError::Manifest(format!(
                "max_tokens {} out of range",
                m.text.max_tokens
            )));
        }
        if m.text.window_stride == 0 || m.text.window_stride > m.text.max_tokens - 2 {
            return Err(GuardError::Manifest(format!(
                "window_stride {} out of range",
                m.text.window_stride
            )));
        }
        if m.labels.first().map(String::as_str) != Some("unsafe")
            || m.labels[1..] != m.categories[..]
        {
            return Err(GuardError::Manifest(
                "labels must be `unsafe` followed by the categories".into(),
            ));
        }
        for l in &m.labels {
            match m.thresholds.get(l) {
                Some(t) if (0.0..=1.0).contains(t) => {}
                _ => {
                    return Err(GuardError::Manifest(format!(
                        "missing or invalid threshold for `{l}`"
                    )))
                }
            }
        }
        for f in ["model.gguf", "tokenizer.json"] {
            if !m.files.contains_key(f) {
                return Err(GuardError::Manifest(format!("no entry for `{f}` in files")));
            }
        }
        Ok(m)
    }

    /// Check a file's bytes against the manifest (size first, for a clearer message on truncation).
    pub fn verify(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let entry = self
            .files
            .get(file)
            .ok_or_else(|| GuardError::Manifest(format!("no entry for `{file}`")))?;
        let actual = sha256_hex(bytes);
        if actual != entry.sha256 {
            let expected = if bytes.len() as u64 != entry.bytes {
                format!(
                    "{} ({} bytes; got {} bytes)",
                    entry.sha256,
                    entry.bytes,
                    bytes.len()
                )
            } else {
                entry.sha256.clone()
            };
            return Err(GuardError::Integrity {
                file: file.to_string(),
                expected,
                actual,
            });
        }
        Ok(())
    }
}
