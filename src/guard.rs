//! `Guard`: a loaded model (manifest + tokenizer + backend) that turns messages into verdicts.

use crate::backend::{cpu::CpuBackend, Backend};
use crate::clock::now_ms;
use crate::error::{GuardError, Result};
use crate::manifest::Manifest;
use crate::model::Classifier;
use crate::policy::{Policy, ResolvedPolicy};
use crate::reply::language;
use crate::text::normalize;
use crate::tokenizer::{TextTokenizer, Window};
use crate::verdict::{Scores, Verdict};

/// Windows per forward pass: bounds working memory for long inputs and big batches (wasm memory never shrinks,
/// and edge isolates have 128 MB, so wasm32 runs fewer at a time).
const MAX_BATCH_WINDOWS: usize = if cfg!(target_arch = "wasm32") { 8 } else { 32 };

/// The raw bytes of a model's files, as fetched (browser, edge) or read from disk (native).
pub struct ModelFiles {
    pub manifest: Vec<u8>,
    pub weights: Vec<u8>,
    pub tokenizer: Vec<u8>,
}

impl ModelFiles {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| GuardError::Io(format!("{}: {e}", dir.join(name).display())))
        };
        Ok(Self {
            manifest: read("manifest.json")?,
            weights: read("model.gguf")?,
            tokenizer: read("tokenizer.json")?,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub version: String,
    pub backend: String,
    pub labels: Vec<String>,
    pub categories: Vec<String>,
    pub thresholds: std::collections::BTreeMap<String, f32>,
    pub weights_bytes: usize,
    pub tokenizer_bytes: usize,
    pub vocab: usize,
    pub max_tokens: usize,
    pub quantization: std::collections::BTreeMap<String, String>,
    pub load_ms: f64,
}

pub struct Guard {
    manifest: Manifest,
    tokenizer: TextTokenizer,
    backend: Box<dyn Backend>,
    info: ModelInfo,
}

impl Guard {
    /// Verify every file against the manifest's sha256, then parse the tokenizer and the weights.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let t0 = now_ms();
        let manifest = Manifest::parse(&files.manifest)?;
        manifest.verify("model.gguf", &files.weights)?;
        manifest.verify("tokenizer.json", &files.tokenizer)?;
        let tokenizer = TextTokenizer::from_bytes(&files.tokenizer)?;
        let model = Classifier::from_gguf(&files.weights)?;
        let cfg = model.config();
        if cfg.labels != manifest.labels || cfg.vocab != manifest.architecture.vocab {
            return Err(GuardError::Weights(
                "weights do not match the manifest (labels or vocabulary)".into(),
            ));
        }
        if tokenizer.vocab_size() != cfg.vocab {
            return Err(GuardError::Tokenizer(format!(
                "tokenizer has {} pieces, the weights {} rows",
                tokenizer.vocab_size(),
                cfg.vocab
            )));
        }
        let backend: Box<dyn Backend> = Box::new(CpuBackend::new(model));
        let info = ModelInfo {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            backend: backend.name().to_string(),
            labels: manifest.labels.clone(),
            categories: manifest.categories.clone(),
            thresholds: manifest.thresholds.clone(),
            weights_bytes: files.weights.len(),
            tokenizer_bytes: files.tokenizer.len(),
            vocab: manifest.architecture.vocab,
            max_tokens: manifest.text.max_tokens,
            quantization: manifest.quantization.clone(),
            load_ms: now_ms() - t0,
        };
        Ok(Self {
            manifest,
            tokenizer,
            backend,
            info,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn model_id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }

    pub fn resolve(&self, policy: &Policy) -> Result<ResolvedPolicy> {
        policy.resolve(&self.manifest.categories, &self.manifest.thresholds)
    }

    /// Token windows of one message (normalised first).
    pub fn windows(&self, text: &str, max_input_bytes: usize) -> Result<Vec<Window>> {
        if text.len() > max_input_bytes {
            return Err(GuardError::InputTooLong {
                len: text.len(),
                limit: max_input_bytes,
            });
        }
        let content = self.tokenizer.encode(&normalize(text))?;
        if content.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.tokenizer.windows(
            &content,
            self.manifest.text.max_tokens,
            self.manifest.text.window_stride,
        ))
    }

    /// Probabilities for each message; the worst window decides each label. An entry is an error when that
    /// message alone could not be scored (too long); a backend failure fails the whole call.
    pub fn scores(&self, texts: &[&str], max_input_bytes: usize) -> Result<Vec<Result<Scores>>> {
        let labels = self.manifest.labels.len();
        let mut per_text: Vec<Result<Vec<Window>>> = texts
            .iter()
            .map(|t| self.windows(t, max_input_bytes))
            .collect();
        let mut jobs: Vec<(usize, usize)> = Vec::new(); // (text index, window index)
        for (i, w) in per_text.iter().enumerate() {
            if let Ok(ws) = w {
                jobs.extend((0..ws.len()).map(|j| (i, j)));
            }
        }
        // similar lengths together keeps padding small
        jobs.sort_by_key(|&(i, j)| per_text[i].as_ref().map(|w| w[j].ids.len()).unwrap_or(0));
        let mut logits: Vec<Vec<f32>> = texts
            .iter()
            .map(|_| vec![f32::NEG_INFINITY; labels])
            .collect();
        for chunk in jobs.chunks(MAX_BATCH_WINDOWS) {
            let batch: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&(i, j)| {
                    per_text[i]
                        .as_ref()
                        .map(|w| w[j].ids.clone())
                        .unwrap_or_default()
                })
                .collect();
            let out = self.backend.forward(&batch)?;
            for (&(i, _), row) in chunk.iter().zip(out) {
                for (acc, v) in logits[i].iter_mut().zip(row) {
                    *acc = acc.max(v);
                }
            }
        }
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        Ok(per_text
            .iter_mut()
            .zip(logits)
            .map(|(w, l)| {
                let ws = std::mem::replace(w, Ok(Vec::new()))?;
                if ws.is_empty() {
                    // nothing left after normalisation: nothing to flag
                    return Ok(Scores {
                        unsafe_prob: 0.0,
                        categories: vec![0.0; labels - 1],
                        tokens: 0,
                        windows: 0,
                    });
                }
                let tokens = ws.iter().map(|w| w.ids.len()).sum();
                let p: Vec<f32> = l.into_iter().map(sigmoid).collect();
                Ok(Scores {
                    unsafe_prob: p[0],
                    categories: p[1..].to_vec(),
                    tokens,
                    windows: ws.len(),
                })
            })
            .collect())
    }

    pub fn classify(&self, text: &str, policy: &Policy) -> Result<Verdict> {
        let t0 = now_ms();
        let p = self.resolve(policy)?;
        let s = self
            .scores(&[text], p.max_input_bytes)?
            .pop()
            .expect("one result per text")?;
        Ok(Verdict::decide(
            &s,
            &p,
            language(text),
            &self.model_id(),
            self.backend.name(),
            now_ms() - t0,
        ))
    }

    /// One verdict per message. A message that cannot be scored (too long) gets the fail-mode verdict with its
    /// `error` set; an invalid policy or a failing backend is an error for the whole call.
    pub fn classify_batch(&self, texts: &[&str], policy: &Policy) -> Result<Vec<Verdict>> {
        let t0 = now_ms();
        let p = self.resolve(policy)?;
        let scores = self.scores(texts, p.max_input_bytes)?;
        let each = (now_ms() - t0) / texts.len().max(1) as f64;
        let (model, backend) = (self.model_id(), self.backend.name());
        Ok(scores
            .into_iter()
            .zip(texts)
            .map(|(s, text)| match s {
                Ok(s) => Verdict::decide(&s, &p, language(text), &model, backend, each),
                Err(e) => Verdict::failed(&e, &p, language(text), &model, backend),
            })
            .collect())
    }

    /// The verdict the policy's fail mode gives for an error (for callers that must answer anyway).
    pub fn fail_verdict(&self, err: &GuardError, text: &str, policy: &Policy) -> Verdict {
        let p = self
            .resolve(policy)
            .unwrap_or_else(|_| Policy::default().resolve(&[], &Default::default()).unwrap());
        Verdict::failed(
            err,
            &p,
            language(text),
            &self.model_id(),
            self.backend.name(),
        )
    }
}
