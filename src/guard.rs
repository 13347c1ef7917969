//! `Guard`: a loaded model (manifest + tokenizer + backend) that turns messages into verdicts.

#[cfg(feature = "webgpu")]
use crate::backend::webgpu::WebGpuBackend;
use crate::backend::{cpu::CpuBackend, Backend};
use crate::clock::now_ms;
use crate::error::{GuardError, Result};
use crate::manifest::Manifest;
use crate::model::Classifier;
use crate::policy::{Policy, ResolvedPolicy};
use crate::reply::language;
use crate::text::normalize;
use crate::tokenizer::{TextTokenizer, Window};
use crate::verdict::{ReplyCheck, Scores, Verdict};

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
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                // git keeps the big files packed (training/common/packed.py); setup expands them
                let packed = dir.join(format!("{name}.xz"));
                let hint = if packed.exists() {
                    format!(
                        " ({} is what git keeps: run scripts/setup.sh to expand it)",
                        packed.display()
                    )
                } else {
                    String::new()
                };
                GuardError::Io(format!("{}: {e}{hint}", path.display()))
            })
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
    /// The GPU adapter considered at load, if any.
    pub adapter: Option<String>,
    /// Why the CPU path runs although WebGPU was asked for or tried (`auto`), or why the GPU was dropped later.
    pub backend_note: Option<String>,
    /// Load-time calibration (`auto`): median ms of one ~32-token window per backend.
    pub calibration_ms: Option<std::collections::BTreeMap<String, f64>>,
}

/// Which backend runs the model: `Auto` takes WebGPU only where a hardware adapter exists and a short
/// calibration at load measured it faster than the CPU path; `WebGpu` insists (an error if there is no adapter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Cpu,
    WebGpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = GuardError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "webgpu" => Ok(Self::WebGpu),
            other => Err(GuardError::Input(format!(
                "backend must be 'auto', 'cpu' or 'webgpu', got '{other}'"
            ))),
        }
    }
}

/// `load_with_backend` in a build without the `webgpu` feature: `WebGpu` is an error, `Auto` a note (shared by
/// `Guard` and `Guardian`).
#[cfg(not(feature = "webgpu"))]
pub(crate) fn without_webgpu(choice: BackendChoice) -> Result<Option<String>> {
    match choice {
        BackendChoice::WebGpu => Err(GuardError::BackendUnavailable(
            "webgpu".into(),
            "this build has no WebGPU backend (cargo feature `webgpu`)".into(),
        )),
        BackendChoice::Auto => Ok(Some("this build has no WebGPU backend".into())),
        BackendChoice::Cpu => Ok(None),
    }
}

/// `auto`'s calibration as `info()` reports it: both timings, and why the GPU is not used (`None`: it is faster).
#[cfg(feature = "webgpu")]
pub(crate) fn calibration_outcome(
    cpu_ms: f64,
    gpu_ms: f64,
) -> (std::collections::BTreeMap<String, f64>, Option<String>) {
    let times = [("cpu".to_string(), cpu_ms), ("webgpu".to_string(), gpu_ms)].into();
    let slower = (gpu_ms >= cpu_ms).then(|| {
        format!("webgpu not used: slower than the CPU path here ({gpu_ms:.1} ms vs {cpu_ms:.1} ms)")
    });
    (times, slower)
}

/// Median of calibration timings (infinite when there are none).
#[cfg(feature = "webgpu")]
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
}

pub struct Guard {
    manifest: Manifest,
    tokenizer: TextTokenizer,
    cpu: CpuBackend,
    #[cfg(feature = "webgpu")]
    gpu: Option<GpuPath>,
    info: ModelInfo,
}

/// The WebGPU backend in use, until its first failure: then every later call runs on the CPU and says so.
#[cfg(feature = "webgpu")]
struct GpuPath {
    backend: WebGpuBackend,
    failed: std::sync::Mutex<Option<String>>,
}

impl Guard {
    /// Verify every file against the manifest's sha256, then parse the tokenizer and the weights.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let t0 = now_ms();
        let manifest = Manifest::parse(&files.manifest)?;
        if manifest.is_guardian() {
            return Err(GuardError::Manifest(
                "this is a generative guardian model: load it with `Guardian::load`".into(),
            ));
        }
        manifest.verify("model.gguf", &files.weights)?;
        manifest.verify("tokenizer.json", &files.tokenizer)?;
        let tokenizer = TextTokenizer::from_bytes(&files.tokenizer)?;
        let model = Classifier::from_gguf(&files.weights)?;
        let cfg = model.config();
        if cfg.output_labels() != manifest.labels || cfg.vocab != manifest.architecture.vocab {
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
        let cpu = CpuBackend::new(model);
        let info = ModelInfo {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            backend: cpu.name().to_string(),
            labels: manifest.labels.clone(),
            categories: manifest.categories.clone(),
            thresholds: manifest.thresholds.clone(),
            weights_bytes: files.weights.len(),
            tokenizer_bytes: files.tokenizer.len(),
            vocab: manifest.architecture.vocab,
            max_tokens: manifest.text.max_tokens,
            quantization: manifest.quantization.clone(),
            load_ms: now_ms() - t0,
            adapter: None,
            backend_note: None,
            calibration_ms: None,
        };
        Ok(Self {
            manifest,
            tokenizer,
            cpu,
            #[cfg(feature = "webgpu")]
            gpu: None,
            info,
        })
    }

    /// `load`, then bring up the chosen backend. `Auto` never fails for want of a GPU: it notes why in
    /// `info().backend_note` and runs on the CPU.
    pub async fn load_with_backend(files: &ModelFiles, choice: BackendChoice) -> Result<Self> {
        let t0 = now_ms();
        #[allow(unused_mut)]
        let mut guard = Self::load(files)?;
        match choice {
            BackendChoice::Cpu => {}
            #[cfg(not(feature = "webgpu"))]
            _ => guard.info.backend_note = without_webgpu(choice)?,
            #[cfg(feature = "webgpu")]
            BackendChoice::WebGpu => {
                let gpu = WebGpuBackend::new(&files.weights).await?;
                guard.info.adapter = Some(gpu.adapter_name());
                guard.use_gpu(gpu);
            }
            #[cfg(feature = "webgpu")]
            BackendChoice::Auto => match WebGpuBackend::new_with(&files.weights, false).await {
                Err(e) => guard.info.backend_note = Some(format!("webgpu not used: {e}")),
                Ok(gpu) => {
                    guard.info.adapter = Some(gpu.adapter_name());
                    let (cpu_ms, gpu_ms) = guard.calibrate(&gpu).await;
                    let (times, slower) = calibration_outcome(cpu_ms, gpu_ms);
                    guard.info.calibration_ms = Some(times);
                    match slower {
                        None => guard.use_gpu(gpu),
                        Some(why) => guard.info.backend_note = Some(why),
                    }
                }
            },
        }
        guard.info.load_ms = now_ms() - t0;
        Ok(guard)
    }

    /// Lose the GPU device on purpose (fault drills, tests): the next call falls back to the CPU path.
    #[cfg(feature = "webgpu")]
    #[doc(hidden)]
    pub fn lose_gpu_device(&self) {
        if let Some(g) = &self.gpu {
            g.backend.destroy_device();
        }
    }

    #[cfg(feature = "webgpu")]
    fn use_gpu(&mut self, backend: WebGpuBackend) {
        self.info.backend = "webgpu".into();
        self.gpu = Some(GpuPath {
            backend,
            failed: std::sync::Mutex::new(None),
        });
    }

    /// Median of 3 timed runs per backend on one 32-token window (after a first untimed run each); a GPU that
    /// fails here counts as infinitely slow.
    #[cfg(feature = "webgpu")]
    async fn calibrate(&self, gpu: &WebGpuBackend) -> (f64, f64) {
        let vocab = self.manifest.architecture.vocab as u32;
        let batch = vec![(0..32u32)
            .map(|i| (i * 7919 + 5) % vocab)
            .collect::<Vec<u32>>()];
        let mut cpu = Vec::new();
        let mut gpu_t = Vec::new();
        for i in 0..4 {
            let t = now_ms();
            let _ = self.cpu.forward(&batch);
            if i > 0 {
                cpu.push(now_ms() - t);
            }
            let t = now_ms();
            if gpu.forward(&batch).await.is_err() {
                return (median(cpu.clone()).max(0.0), f64::INFINITY);
            }
            if i > 0 {
                gpu_t.push(now_ms() - t);
            }
        }
        (median(cpu), median(gpu_t))
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Model facts and the backend that runs the next call (with the reason if a GPU was dropped).
    pub fn info(&self) -> ModelInfo {
        let mut info = self.info.clone();
        info.backend = self.backend_name().to_string();
        #[cfg(feature = "webgpu")]
        if let Some(why) = self
            .gpu
            .as_ref()
            .and_then(|g| g.failed.lock().ok().and_then(|f| f.clone()))
        {
            info.backend_note = Some(why);
        }
        info
    }

    /// The backend that runs the next call.
    fn backend_name(&self) -> &'static str {
        #[cfg(feature = "webgpu")]
        if self.gpu_active() {
            return "webgpu";
        }
        self.cpu.name()
    }

    #[cfg(feature = "webgpu")]
    fn gpu_active(&self) -> bool {
        self.gpu
            .as_ref()
            .is_some_and(|g| g.failed.lock().map(|f| f.is_none()).unwrap_or(false))
    }

    /// Logits of one forward pass on the active backend; a GPU failure (lost device, failed dispatch) moves this
    /// and every later call to the CPU path. Returns the backend that produced them.
    async fn forward_any(&self, batch: &[Vec<u32>]) -> Result<(Vec<Vec<f32>>, &'static str)> {
        #[cfg(feature = "webgpu")]
        if let (true, Some(g)) = (self.gpu_active(), &self.gpu) {
            match g.backend.forward(batch).await {
                Ok(out) => return Ok((out, "webgpu")),
                Err(e) => {
                    if let Ok(mut f) = g.failed.lock() {
                        *f = Some(format!(
                            "webgpu failed, using the CPU path from now on: {e}"
                        ));
                    }
                }
            }
        }
        Ok((self.cpu.forward(batch)?, self.cpu.name()))
    }

    /// `scores` on the active backend (WebGPU where chosen at load); also returns the backend that ran.
    pub async fn scores_async(
        &self,
        texts: &[&str],
        max_input_bytes: usize,
    ) -> Result<(Vec<Result<Scores>>, &'static str)> {
        let mut plan = self.plan(texts, max_input_bytes);
        let mut used = self.backend_name();
        for b in 0..plan.batches() {
            let (out, by) = self.forward_any(&plan.batch(b)).await?;
            if by != "webgpu" {
                used = by;
            }
            plan.absorb(b, out);
        }
        Ok((plan.finish(), used))
    }

    /// `classify` on the active backend: the API for browsers and edge workers (a GPU readback is asynchronous).
    pub async fn classify_async(&self, text: &str, policy: &Policy) -> Result<Verdict> {
        let t0 = now_ms();
        let p = self.resolve(policy)?;
        let (mut s, backend) = self.scores_async(&[text], p.max_input_bytes).await?;
        let s = s.pop().expect("one result per text")?;
        Ok(Verdict::decide(
            &s,
            &p,
            language(text),
            &self.model_id(),
            backend,
            now_ms() - t0,
        ))
    }

    /// `classify_batch` on the active backend.
    pub async fn classify_batch_async(
        &self,
        texts: &[&str],
        policy: &Policy,
    ) -> Result<Vec<Verdict>> {
        let t0 = now_ms();
        let p = self.resolve(policy)?;
        let (scores, backend) = self.scores_async(texts, p.max_input_bytes).await?;
        Ok(self.verdicts(scores, texts, &p, backend, t0))
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
        let mut plan = self.plan(texts, max_input_bytes);
        for b in 0..plan.batches() {
            let out = self.cpu.forward(&plan.batch(b))?;
            plan.absorb(b, out);
        }
        Ok(plan.finish())
    }

    /// The reply check's probability for each text (a guardian reply so far), on the CPU path; the worst window
    /// decides. An error for a classifier without the reply check (`Manifest::has_reply_check`).
    pub fn reply_scores(&self, texts: &[&str], max_input_bytes: usize) -> Result<Vec<Result<f32>>> {
        let mut plan = self.plan_for(texts, max_input_bytes, 1);
        for b in 0..plan.batches() {
            let out = self.cpu.model().reply_logits(&plan.batch(b))?;
            plan.absorb(b, out.into_iter().map(|l| vec![l]).collect());
        }
        Ok(plan.finish_reply())
    }

    fn plan(&self, texts: &[&str], max_input_bytes: usize) -> ScorePlan {
        let message_labels =
            self.manifest.labels.len() - usize::from(self.manifest.has_reply_check());
        self.plan_for(texts, max_input_bytes, message_labels)
    }

    fn plan_for(&self, texts: &[&str], max_input_bytes: usize, labels: usize) -> ScorePlan {
        ScorePlan::new(
            texts
                .iter()
                .map(|t| self.windows(t, max_input_bytes))
                .collect(),
            labels,
        )
    }

    /// One message on the CPU path (synchronous; `classify_async` uses the backend chosen at load).
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
            self.cpu.name(),
            now_ms() - t0,
        ))
    }

    /// The reply check on a guardian reply (so far), on the CPU path: is it unsafe to show? The classifier's
    /// `reply_unsafe` branch at its threshold under `policy` (`sensitivity` shifts it like every threshold). It was
    /// trained on the shipped guardian's replies, not on other models' output. A classifier without the reply
    /// check (v1.0) answers with its message verdict instead, which flags many refusals that name their topic.
    pub fn check_reply(&self, reply: &str, policy: &Policy) -> Result<ReplyCheck> {
        let p = self.resolve(policy)?;
        let Some(threshold) = p
            .reply_threshold
            .filter(|_| self.manifest.has_reply_check())
        else {
            return Ok(ReplyCheck {
                flagged: self.classify(reply, policy)?.flagged,
                score: None,
                threshold: None,
            });
        };
        let score = self
            .reply_scores(&[reply], p.max_input_bytes)?
            .pop()
            .expect("one result per text")?;
        Ok(ReplyCheck {
            flagged: score >= threshold,
            score: Some(score),
            threshold: Some(threshold),
        })
    }

    /// One verdict per message. A message that cannot be scored (too long) gets the fail-mode verdict with its
    /// `error` set; an invalid policy or a failing backend is an error for the whole call.
    pub fn classify_batch(&self, texts: &[&str], policy: &Policy) -> Result<Vec<Verdict>> {
        let t0 = now_ms();
        let p = self.resolve(policy)?;
        let scores = self.scores(texts, p.max_input_bytes)?;
        Ok(self.verdicts(scores, texts, &p, self.cpu.name(), t0))
    }

    fn verdicts(
        &self,
        scores: Vec<Result<Scores>>,
        texts: &[&str],
        p: &ResolvedPolicy,
        backend: &str,
        t0: f64,
    ) -> Vec<Verdict> {
        let each = (now_ms() - t0) / texts.len().max(1) as f64;
        let model = self.model_id();
        scores
            .into_iter()
            .zip(texts)
            .map(|(s, text)| match s {
                Ok(s) => Verdict::decide(&s, p, language(text), &model, backend, each),
                Err(e) => Verdict::failed(&e, p, language(text), &model, backend),
            })
            .collect()
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
            self.backend_name(),
        )
    }
}

/// The windows of a call's texts, grouped into forward passes, and the running worst logit per label (the message
/// labels, or the reply check alone).
/// Kept apart from the forward call so the CPU (sync) and WebGPU (async) paths share every other step.
struct ScorePlan {
    per_text: Vec<Result<Vec<Window>>>,
    /// (text index, window index), similar lengths together
    jobs: Vec<(usize, usize)>,
    logits: Vec<Vec<f32>>,
    labels: usize,
}

impl ScorePlan {
    fn new(per_text: Vec<Result<Vec<Window>>>, labels: usize) -> Self {
        let mut jobs: Vec<(usize, usize)> = Vec::new();
        for (i, w) in per_text.iter().enumerate() {
            if let Ok(ws) = w {
                jobs.extend((0..ws.len()).map(|j| (i, j)));
            }
        }
        jobs.sort_by_key(|&(i, j)| per_text[i].as_ref().map(|w| w[j].ids.len()).unwrap_or(0));
        let logits = per_text
            .iter()
            .map(|_| vec![f32::NEG_INFINITY; labels])
            .collect();
        Self {
            per_text,
            jobs,
            logits,
            labels,
        }
    }

    fn batches(&self) -> usize {
        self.jobs.len().div_ceil(MAX_BATCH_WINDOWS)
    }

    fn range(&self, b: usize) -> std::ops::Range<usize> {
        let start = b * MAX_BATCH_WINDOWS;
        start..(start + MAX_BATCH_WINDOWS).min(self.jobs.len())
    }

    /// Token ids of forward pass `b`.
    fn batch(&self, b: usize) -> Vec<Vec<u32>> {
        self.jobs[self.range(b)]
            .iter()
            .map(|&(i, j)| {
                self.per_text[i]
                    .as_ref()
                    .map(|w| w[j].ids.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Fold the logits of forward pass `b` into each message's worst window.
    fn absorb(&mut self, b: usize, out: Vec<Vec<f32>>) {
        for (&(i, _), row) in self.jobs[self.range(b)].iter().zip(out) {
            for (acc, v) in self.logits[i].iter_mut().zip(row) {
                *acc = acc.max(v);
            }
        }
    }

    /// Message scores: `unsafe`, then the categories.
    fn finish(self) -> Vec<Result<Scores>> {
        let categories = self.labels - 1;
        self.per_text
            .into_iter()
            .zip(self.logits)
            .map(|(w, l)| {
                let ws = w?;
                if ws.is_empty() {
                    // nothing left after normalisation: nothing to flag
                    return Ok(Scores {
                        unsafe_prob: 0.0,
                        categories: vec![0.0; categories],
                        tokens: 0,
                        windows: 0,
                    });
                }
                let tokens = ws.iter().map(|w| w.ids.len()).sum();
                let p: Vec<f32> = l.into_iter().map(sigmoid).collect();
                Ok(Scores {
                    unsafe_prob: p[0],
                    categories: p[1..=categories].to_vec(),
                    tokens,
                    windows: ws.len(),
                })
            })
            .collect()
    }

    /// The reply check's probability per text (0 where normalisation left nothing).
    fn finish_reply(self) -> Vec<Result<f32>> {
        self.per_text
            .into_iter()
            .zip(self.logits)
            .map(|(w, l)| Ok(if w?.is_empty() { 0.0 } else { sigmoid(l[0]) }))
            .collect()
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
