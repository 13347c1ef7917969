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
    /// Classifier output labels (`unsafe`, the categories, then `reply_unsafe` where the model has the reply
    /// check); empty for the guardian.
    #[serde(default)]
    pub labels: Vec<String>,
    pub categories: Vec<String>,
    /// Default per-label thresholds (`unsafe`, each category, `reply_unsafe`), chosen on dev data. Non-numeric entries
    /// (the guardian's `cascade_band`) are read into their own fields instead.
    #[serde(deserialize_with = "numeric_thresholds")]
    pub thresholds: BTreeMap<String, f32>,
    /// Guardian: `thresholds.cascade_band` = `[low, high]`, the classifier scores (exclusive) that the cascade
    /// hands to the guardian (chosen on dev by training/guardian/eval.py).
    #[serde(skip)]
    pub cascade_band: Option<[f32; 2]>,
    /// Guardian: `thresholds.cascade_fusion`, how the cascade combines both scores inside the band (absent: the
    /// guardian's score alone decides).
    #[serde(skip)]
    pub cascade_fusion: Option<crate::cascade::Fusion>,
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub licence: serde_json::Value,
    /// Guardian: control-token ids by name (`<bos>`, `<|pred|>`, `<|cat_crime|>`, ...), read from here, never
    /// assumed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub special_tokens: BTreeMap<String, u32>,
    /// Guardian: ids that end a generated response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_ids: Vec<u32>,
}

/// The classifier's optional last label: the reply check, P(a guardian reply so far is unsafe to show), read by
/// the reply gate (`reply_gate.rs`) instead of the message verdict. A branch of the top encoder layers with its own
/// head (`model::classifier`, `ReplyBranch`), trained on rated guardian replies (`training/classifier/reply_head.py`).
pub const REPLY_LABEL: &str = "reply_unsafe";

/// `task` of a generative guardian manifest (architecture `gemma3-decoder`).
pub const TASK_GUARDIAN: &str = "guardian";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Architecture {
    #[serde(rename = "type")]
    pub kind: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    // encoder (classifier) fields
    #[serde(default)]
    pub max_position: usize,
    #[serde(default)]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_id: u32,
    // decoder (guardian) fields
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Positions the runtime prepares (RoPE tables, KV cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextConfig {
    pub normalization: String,
    /// Classifier: window length. Guardian: longest query accepted (more is INPUT_TOO_LONG).
    pub max_tokens: usize,
    /// Classifier only (the guardian reads a query in one pass).
    #[serde(default)]
    pub window_stride: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

/// `thresholds` keeps its numbers only: the guardian's export also writes `cascade_band: [low, high]` and
/// `cascade_fusion` there.
fn numeric_thresholds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f32>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        match v {
            serde_json::Value::Number(n) => {
                out.insert(k, n.as_f64().unwrap_or(f64::NAN) as f32);
            }
            _ if k == "cascade_band" || k == "cascade_fusion" => {}
            other => {
                return Err(serde::de::Error::custom(format!(
                    "threshold `{k}` must be a number, got {other}"
                )))
            }
        }
    }
    Ok(out)
}

fn cascade_band(bytes: &[u8]) -> Result<Option<[f32; 2]>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| GuardError::Manifest(e.to_string()))?;
    let Some(b) = v.pointer("/thresholds/cascade_band") else {
        return Ok(None);
    };
    let bad = || {
        GuardError::Manifest(format!(
            "thresholds.cascade_band must be [low, high] with 0 <= low <= high <= 1, got {b}"
        ))
    };
    let arr = b.as_array().ok_or_else(bad)?;
    let (Some(low), Some(high), 2) = (
        arr.first().and_then(|x| x.as_f64()),
        arr.get(1).and_then(|x| x.as_f64()),
        arr.len(),
    ) else {
        return Err(bad());
    };
    if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
        return Err(bad());
    }
    Ok(Some([low as f32, high as f32]))
}

fn cascade_fusion(bytes: &[u8]) -> Result<Option<crate::cascade::Fusion>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| GuardError::Manifest(e.to_string()))?;
    v.pointer("/thresholds/cascade_fusion")
        .map(crate::cascade::Fusion::from_json)
        .transpose()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| GuardError::Manifest(e.to_string()))?;
        m.cascade_band = cascade_band(bytes)?;
        m.cascade_fusion = cascade_fusion(bytes)?;
        if m.format_version != FORMAT_VERSION {
            return Err(GuardError::Version {
                found: m.format_version,
                supported: FORMAT_VERSION,
            });
        }
        match m.architecture.kind.as_str() {
            "bert-encoder-mean-pool-linear-head" => m.check_classifier()?,
            "gemma3-decoder" => m.check_guardian()?,
            other => {
                return Err(GuardError::Manifest(format!(
                    "unknown architecture `{other}`"
                )))
            }
        }
        if m.text.normalization != "slm-guard-v1" {
            return Err(GuardError::Manifest(format!(
                "unknown text normalization `{}`",
                m.text.normalization
            )));
        }
        for f in ["model.gguf", "tokenizer.json"] {
            if !m.files.contains_key(f) {
                return Err(GuardError::Manifest(format!("no entry for `{f}` in files")));
            }
        }
        Ok(m)
    }

    pub fn is_guardian(&self) -> bool {
        self.task == TASK_GUARDIAN
    }

    /// The classifier has the reply check (`REPLY_LABEL`, its last label).
    pub fn has_reply_check(&self) -> bool {
        self.labels.last().map(String::as_str) == Some(REPLY_LABEL)
    }

    fn check_classifier(&self) -> Result<()> {
        if self.text.max_tokens < 8 || self.text.max_tokens > self.architecture.max_position {
            return Err(GuardError::Manifest(format!(
                "max_tokens {} out of range",
                self.text.max_tokens
            )));
        }
        if self.text.window_stride == 0 || self.text.window_stride > self.text.max_tokens - 2 {
            return Err(GuardError::Manifest(format!(
                "window_stride {} out of range",
                self.text.window_stride
            )));
        }
        let message = &self.labels[..self.labels.len() - usize::from(self.has_reply_check())];
        if message.first().map(String::as_str) != Some("unsafe")
            || message[1..] != self.categories[..]
        {
            return Err(GuardError::Manifest(format!(
                "labels must be `unsafe` followed by the categories (and optionally `{REPLY_LABEL}`)"
            )));
        }
        for l in &self.labels {
            match self.thresholds.get(l) {
                Some(t) if (0.0..=1.0).contains(t) => {}
                _ => {
                    return Err(GuardError::Manifest(format!(
                        "missing or invalid threshold for `{l}`"
                    )))
                }
            }
        }
        Ok(())
    }

    fn check_guardian(&self) -> Result<()> {
        if self.task != TASK_GUARDIAN {
            return Err(GuardError::Manifest(format!(
                "architecture gemma3-decoder needs task `{TASK_GUARDIAN}`, got `{}`",
                self.task
            )));
        }
        let context = self.architecture.context.unwrap_or(usize::MAX);
        // the longest prompt is <bos> query <|force-safety|> <|expl|>
        if self.text.max_tokens < 8 || self.text.max_tokens + 3 > context {
            return Err(GuardError::Manifest(format!(
                "max_tokens {} out of range",
                self.text.max_tokens
            )));
        }
        let mut needed: Vec<String> = [
            "<bos>",
            "<|pred|>",
            "<|expl|>",
            "<|force-safety|>",
            "<|safe|>",
            "<|unsafe|>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        needed.extend(self.categories.iter().map(|c| format!("<|cat_{c}|>")));
        if let Some(n) = needed
            .iter()
            .find(|n| !self.special_tokens.contains_key(*n))
        {
            return Err(GuardError::Manifest(format!("special_tokens has no `{n}`")));
        }
        if let Some((l, t)) = self
            .thresholds
            .iter()
            .find(|(_, t)| !(0.0..=1.0).contains(*t))
        {
            return Err(GuardError::Manifest(format!(
                "invalid threshold {t} for `{l}`"
            )));
        }
        Ok(())
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
