//! `Guardian`: the generative guardian (Gemma 3 270M fine-tuned; manifest `task: "guardian"`). It scores a
//! message (the classify format) and writes a safe response (the respond format), streaming text through a
//! callback. Prompt formats and control-token ids are defined in `training/guardian/spec.py`; the runtime reads
//! the ids from the manifest's `special_tokens`, never from constants.
//!
//!   classify  <bos> query <|pred|>                    -> <|safe|> | <|unsafe|> <|cat_*|> ...
//!   respond   <bos> query [<|force-safety|>] <|expl|>  -> response <end_of_turn>
//!
//! The synchronous API runs on the CPU path with one KV cache per call (no threads needed, so the same API binds
//! to wasm32 as is). `load_with_backend` can add the WebGPU decoder (`backend/webgpu/decoder.rs`); the `_async`
//! calls (`score_async`, `classify_async`, `Generation::next_async`) run on it while it works and fall back to
//! the CPU model, for good, on its first failure (a lost device): a generation in flight re-reads its prompt and
//! reply so far on the CPU and goes on.

use serde::Serialize;

#[cfg(feature = "webgpu")]
use crate::backend::webgpu::decoder::{GpuCache, WebGpuDecoder};
use crate::clock::now_ms;
use crate::error::{GuardError, Result};
#[cfg(feature = "webgpu")]
use crate::guard::{calibration_outcome, median};
use crate::guard::{BackendChoice, ModelFiles};
use crate::manifest::Manifest;
use crate::model::guardian::{Cache, DEFAULT_MAX_CONTEXT};
use crate::model::{GuardianConfig, GuardianModel};
use crate::policy::Policy;
use crate::reply::language;
use crate::text::normalize;
use crate::tokenizer::{GemmaTokenizer, TextStream};
use crate::verdict::{DecidedBy, Scores, Verdict};

/// Raw-text bytes allowed per query token before tokenizing: Gemma's pre-tokenizer does not split on spaces, so
/// BPE works on the whole message at once and its cost grows with length; this cap refuses a huge paste before
/// the tokenizer sees it (real text is 1-6 bytes per token).
const BYTES_PER_TOKEN: usize = 32;

/// Default `max_tokens` of the manifest's `text` when it says nothing sensible (the export writes 512).
pub const DEFAULT_MAX_QUERY_TOKENS: usize = 512;

/// What `score` reads off the classify position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardianScore {
    /// P(<|unsafe|>) / (P(<|safe|>) + P(<|unsafe|>)) after <|pred|>.
    pub unsafe_prob: f32,
    /// Softmax over the category tokens after a teacher-forced <|unsafe|>, in the manifest's category order:
    /// which category, *if* unsafe (sums to 1 whatever `unsafe_prob` is).
    pub category_probs: Vec<f32>,
    /// Query tokens read (without control tokens).
    pub tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespondOptions {
    /// Insert <|force-safety|>: the model answers as carefully as it would an unsafe query.
    pub force_safety: bool,
    /// Most tokens to generate (also capped by the context left after the prompt).
    pub max_tokens: usize,
    /// End the response when its next token would repeat an n-gram of this many tokens (0: never). A small model
    /// decoded greedily falls into loops ("I can't help. I can't help. ..."); stopping there keeps what it said
    /// once. (Banning the repeat instead, HF's `no_repeat_ngram_size`, pushed this model into worse text.)
    pub no_repeat_ngram: usize,
}

/// Default for [`RespondOptions::no_repeat_ngram`].
pub const DEFAULT_NO_REPEAT_NGRAM: usize = 4;

impl Default for RespondOptions {
    fn default() -> Self {
        Self {
            force_safety: false,
            max_tokens: 256,
            no_repeat_ngram: DEFAULT_NO_REPEAT_NGRAM,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended its turn (<end_of_turn> or <eos>).
    EndOfTurn,
    MaxTokens,
    /// The next token would have repeated an n-gram of the response (`RespondOptions::no_repeat_ngram`).
    Repetition,
    /// The callback returned `false` (or `Generation::cancel`).
    Cancelled,
    /// The reply gate (`reply_gate.rs`): the classifier's reply check flagged the next sentence, which was withheld.
    Unsafe,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    /// The reply. When `stopped` is `Repetition`, its unfinished last sentence is dropped, so it can be shorter
    /// than the streamed pieces put together.
    pub text: String,
    /// Generated ids (the stop token excluded).
    pub tokens: Vec<u32>,
    pub stopped: StopReason,
    /// The reply gate released nothing, so `text` is the built-in safe reply (`reply::safe_reply`).
    pub fallback: bool,
    /// The reply gate ended `text` with the crisis line (`reply::crisis_line`): the message was rated a self-harm
    /// risk and the model gave no crisis line.
    pub crisis_line_added: bool,
    /// The backend that computed the last token ("cpu" or "webgpu").
    pub backend: &'static str,
}

/// What a loaded guardian is (for `info()` in the JS API and the CLI).
#[derive(Debug, Clone, Serialize)]
pub struct GuardianInfo {
    pub model: String,
    pub version: String,
    pub vocab: usize,
    pub layers: usize,
    pub hidden: usize,
    /// Positions prepared for prompt + response.
    pub context: usize,
    /// Longest query in tokens.
    pub max_tokens: usize,
    pub categories: Vec<String>,
    pub special_tokens: std::collections::BTreeMap<String, u32>,
    pub cascade_band: crate::cascade::Band,
    /// How the cascade combines both scores inside the band (null: the guardian's score alone decides).
    pub cascade_fusion: Option<crate::cascade::Fusion>,
    pub weights_bytes: u64,
    pub tokenizer_bytes: u64,
    pub load_ms: f64,
    /// The backend that runs the next `_async` call ("cpu" or "webgpu"; the synchronous calls always use the CPU).
    pub backend: String,
    /// The GPU adapter considered at load, if any.
    pub adapter: Option<String>,
    /// Why the CPU path runs although WebGPU was tried (`auto`), or why the GPU was dropped later.
    pub backend_note: Option<String>,
    /// Load-time calibration (`auto`): median ms of a 32-token prompt plus 4 generated tokens per backend.
    pub calibration_ms: Option<std::collections::BTreeMap<String, f64>>,
}

/// What `load_with_backend` found out about the GPU.
#[derive(Debug, Clone, Default)]
struct BackendNotes {
    adapter: Option<String>,
    note: Option<String>,
    calibration_ms: Option<std::collections::BTreeMap<String, f64>>,
}

/// The WebGPU decoder in use, until its first failure: then every later call runs on the CPU model and says so.
#[cfg(feature = "webgpu")]
struct GpuPath {
    decoder: WebGpuDecoder,
    failed: std::sync::Mutex<Option<String>>,
}

/// Control ids, resolved from the manifest once.
struct ControlIds {
    bos: u32,
    pred: u32,
    expl: u32,
    force: u32,
    safe: u32,
    unsafe_: u32,
    categories: Vec<u32>,
    stop: Vec<u32>,
}

pub struct Guardian {
    manifest: Manifest,
    tokenizer: GemmaTokenizer,
    model: GuardianModel,
    ids: ControlIds,
    max_tokens: usize,
    load_ms: f64,
    #[cfg(feature = "webgpu")]
    gpu: Option<GpuPath>,
    notes: BackendNotes,
}

impl Guardian {
    /// Verify every file against the manifest's sha256, then parse the tokenizer and the weights. RoPE tables and
    /// the largest KV cache cover the manifest's `architecture.context` (default 2048) positions.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        Self::load_with_context(files, None)
    }

    /// `load` with an explicit number of positions to prepare (prompt + response).
    pub fn load_with_context(files: &ModelFiles, max_context: Option<usize>) -> Result<Self> {
        let t0 = now_ms();
        let manifest = Manifest::parse(&files.manifest)?;
        if !manifest.is_guardian() {
            return Err(GuardError::Manifest(format!(
                "task `{}` is not a guardian model (load it with `Guard::load`)",
                manifest.task
            )));
        }
        manifest.verify("model.gguf", &files.weights)?;
        manifest.verify("tokenizer.json", &files.tokenizer)?;
        let tokenizer = GemmaTokenizer::from_bytes(&files.tokenizer)?;
        let context = max_context
            .or(manifest.architecture.context)
            .unwrap_or(DEFAULT_MAX_CONTEXT);
        let model = GuardianModel::from_gguf(&files.weights, context)?;
        let cfg = model.config();
        if cfg.vocab != manifest.architecture.vocab {
            return Err(GuardError::Weights(format!(
                "weights have {} rows, the manifest says vocab {}",
                cfg.vocab, manifest.architecture.vocab
            )));
        }
        let sp = &manifest.special_tokens;
        let id = |name: &str| -> Result<u32> {
            let id = *sp
                .get(name)
                .ok_or_else(|| GuardError::Manifest(format!("special_tokens has no `{name}`")))?;
            if id as usize >= cfg.vocab {
                return Err(GuardError::Manifest(format!(
                    "special token `{name}` = {id} is outside the vocabulary"
                )));
            }
            Ok(id)
        };
        let stop = if manifest.stop_ids.is_empty() {
            vec![
                sp.get("<eos>").copied().unwrap_or(1),
                sp.get("<end_of_turn>").copied().unwrap_or(106),
            ]
        } else {
            manifest.stop_ids.clone()
        };
        let ids = ControlIds {
            bos: id("<bos>")?,
            pred: id("<|pred|>")?,
            expl: id("<|expl|>")?,
            force: id("<|force-safety|>")?,
            safe: id("<|safe|>")?,
            unsafe_: id("<|unsafe|>")?,
            categories: manifest
                .categories
                .iter()
                .map(|c| id(&format!("<|cat_{c}|>")))
                .collect::<Result<_>>()?,
            stop,
        };
        let max_tokens = match manifest.text.max_tokens {
            0 => DEFAULT_MAX_QUERY_TOKENS,
            n => n,
        };
        if max_tokens + 3 > cfg.max_context {
            return Err(GuardError::Manifest(format!(
                "max_tokens {max_tokens} does not fit a context of {} positions",
                cfg.max_context
            )));
        }
        Ok(Self {
            manifest,
            tokenizer,
            model,
            ids,
            max_tokens,
            load_ms: now_ms() - t0,
            #[cfg(feature = "webgpu")]
            gpu: None,
            notes: BackendNotes::default(),
        })
    }

    /// `load`, then bring up the chosen backend for the `_async` calls. `Auto` takes WebGPU only on a hardware
    /// adapter that a short calibration measured faster than the CPU model, and never fails for want of a GPU
    /// (`info().backend_note` says why the CPU runs); `WebGpu` insists (software adapters included).
    pub async fn load_with_backend(files: &ModelFiles, choice: BackendChoice) -> Result<Self> {
        let t0 = now_ms();
        #[allow(unused_mut)]
        let mut g = Self::load(files)?;
        match choice {
            BackendChoice::Cpu => {}
            #[cfg(not(feature = "webgpu"))]
            _ => g.notes.note = crate::guard::without_webgpu(choice)?,
            #[cfg(feature = "webgpu")]
            BackendChoice::WebGpu => {
                let d = WebGpuDecoder::new(&files.weights, g.config().max_context).await?;
                g.notes.adapter = Some(d.adapter_name());
                g.use_gpu(d);
            }
            #[cfg(feature = "webgpu")]
            BackendChoice::Auto => {
                match WebGpuDecoder::new_with(&files.weights, g.config().max_context, false).await {
                    Err(e) => g.notes.note = Some(format!("webgpu not used: {e}")),
                    Ok(d) => {
                        g.notes.adapter = Some(d.adapter_name());
                        let (cpu_ms, gpu_ms) = g.calibrate(&d).await;
                        let (times, slower) = calibration_outcome(cpu_ms, gpu_ms);
                        g.notes.calibration_ms = Some(times);
                        match slower {
                            None => g.use_gpu(d),
                            Some(why) => g.notes.note = Some(why),
                        }
                    }
                }
            }
        }
        g.load_ms = now_ms() - t0;
        Ok(g)
    }

    #[cfg(feature = "webgpu")]
    fn use_gpu(&mut self, decoder: WebGpuDecoder) {
        self.gpu = Some(GpuPath {
            decoder,
            failed: std::sync::Mutex::new(None),
        });
    }

    /// Median of 3 timed runs per backend (after an untimed one) of what a reply costs: a 32-token prompt, then 4
    /// tokens generated greedily. A GPU that fails here counts as infinitely slow.
    #[cfg(feature = "webgpu")]
    async fn calibrate(&self, d: &WebGpuDecoder) -> (f64, f64) {
        const STEPS: usize = 4;
        let vocab = self.config().vocab as u32;
        let prompt: Vec<u32> = (0..32u32).map(|i| (i * 7919 + 5) % vocab).collect();
        let cpu_run = || -> Result<()> {
            let mut cache = self.model.new_cache();
            let mut h = self.model.prefill(&mut cache, &prompt)?;
            for _ in 0..STEPS {
                let next = argmax(&self.model.logits(&h)?);
                h = self.model.step(&mut cache, next)?;
            }
            Ok(())
        };
        let gpu_run = || async {
            let mut cache = d.new_cache();
            let mut h = d.prefill(&mut cache, &prompt).await?;
            for _ in 0..STEPS {
                let next = argmax(&d.logits(&h).await?);
                h = d.step(&mut cache, next).await?;
            }
            Ok::<(), GuardError>(())
        };
        let (mut cpu, mut gpu) = (Vec::new(), Vec::new());
        for i in 0..4 {
            let t = now_ms();
            if cpu_run().is_err() {
                return (f64::INFINITY, f64::INFINITY);
            }
            if i > 0 {
                cpu.push(now_ms() - t);
            }
            let t = now_ms();
            if gpu_run().await.is_err() {
                return (median(cpu), f64::INFINITY);
            }
            if i > 0 {
                gpu.push(now_ms() - t);
            }
        }
        (median(cpu), median(gpu))
    }

    /// The decoder while it works (none on the CPU path, or after its first failure).
    #[cfg(feature = "webgpu")]
    fn active_gpu(&self) -> Option<&WebGpuDecoder> {
        self.gpu
            .as_ref()
            .filter(|g| g.failed.lock().map(|f| f.is_none()).unwrap_or(false))
            .map(|g| &g.decoder)
    }

    /// After a GPU error: an input error is the caller's (the CPU would refuse it too), anything else (lost device,
    /// failed dispatch) moves this and every later call to the CPU model. Returns the error to give the caller, if
    /// any.
    #[cfg(feature = "webgpu")]
    fn gpu_failed(&self, e: GuardError) -> Option<GuardError> {
        if matches!(e, GuardError::Input(_)) {
            return Some(e);
        }
        if let Some(Ok(mut f)) = self.gpu.as_ref().map(|g| g.failed.lock()) {
            f.get_or_insert_with(|| format!("webgpu failed, using the CPU path from now on: {e}"));
        }
        None
    }

    /// Lose the GPU device on purpose (fault drills, tests): the next `_async` call falls back to the CPU model.
    #[cfg(feature = "webgpu")]
    #[doc(hidden)]
    pub fn lose_gpu_device(&self) {
        if let Some(g) = &self.gpu {
            g.decoder.destroy_device();
        }
    }

    /// The backend that runs the next `_async` call.
    pub fn backend_name(&self) -> &'static str {
        #[cfg(feature = "webgpu")]
        if self.active_gpu().is_some() {
            return "webgpu";
        }
        "cpu"
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn config(&self) -> &GuardianConfig {
        self.model.config()
    }

    pub fn model(&self) -> &GuardianModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> GuardianInfo {
        let m = &self.manifest;
        let bytes = |f: &str| m.files.get(f).map(|e| e.bytes).unwrap_or(0);
        GuardianInfo {
            model: m.name.clone(),
            version: m.version.clone(),
            vocab: self.config().vocab,
            layers: self.config().layers,
            hidden: self.config().hidden,
            context: self.config().max_context,
            max_tokens: self.max_tokens,
            categories: m.categories.clone(),
            special_tokens: m.special_tokens.clone(),
            cascade_band: crate::cascade::Band::from_manifest(m),
            cascade_fusion: m.cascade_fusion,
            weights_bytes: bytes("model.gguf"),
            tokenizer_bytes: bytes("tokenizer.json"),
            load_ms: self.load_ms,
            backend: self.backend_name().to_string(),
            adapter: self.notes.adapter.clone(),
            backend_note: self.gpu_note().or_else(|| self.notes.note.clone()),
            calibration_ms: self.notes.calibration_ms.clone(),
        }
    }

    /// Why a GPU chosen at load no longer runs.
    fn gpu_note(&self) -> Option<String> {
        #[cfg(feature = "webgpu")]
        if let Some(Ok(f)) = self.gpu.as_ref().map(|g| g.failed.lock()) {
            return f.clone();
        }
        None
    }

    /// `name@version`, as in verdicts.
    pub fn model_id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }

    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Longest query in tokens (the manifest's `text.max_tokens`): longer ones are INPUT_TOO_LONG.
    pub fn max_query_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Longest raw text in bytes accepted before tokenizing.
    pub fn max_input_bytes(&self) -> usize {
        self.max_tokens * BYTES_PER_TOKEN
    }

    /// Normalised query ids. Errors: INPUT_TOO_LONG (bytes, then tokens), INVALID_INPUT (nothing left after
    /// normalisation).
    pub fn query_ids(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > self.max_input_bytes() {
            return Err(GuardError::InputTooLong {
                len: text.len(),
                limit: self.max_input_bytes(),
            });
        }
        let norm = normalize(text);
        if norm.is_empty() {
            return Err(GuardError::Input(
                "the message is empty after normalisation (only spaces, control or invisible characters)"
                    .into(),
            ));
        }
        let ids = self.tokenizer.encode(&norm)?;
        if ids.len() > self.max_tokens {
            return Err(GuardError::TooManyTokens {
                tokens: ids.len(),
                limit: self.max_tokens,
            });
        }
        Ok(ids)
    }

    /// The classify format on one message.
    pub fn score(&self, text: &str) -> Result<GuardianScore> {
        let q = self.query_ids(text)?;
        self.score_ids(&q)
    }

    /// `score` on query ids (no normalisation, no length check beyond the context).
    pub fn score_ids(&self, query: &[u32]) -> Result<GuardianScore> {
        let mut cache = self.model.new_cache();
        let at_pred = self
            .model
            .prefill(&mut cache, &self.classify_prompt(query))?;
        // which category, if unsafe: one more step with <|unsafe|> teacher-forced
        let after_unsafe = self.model.step(&mut cache, self.ids.unsafe_)?;
        self.read_score(&at_pred, &after_unsafe, query.len())
    }

    /// `score` on the backend chosen at load (the WebGPU decoder where it runs); also returns that backend.
    pub async fn score_async(&self, text: &str) -> Result<(GuardianScore, &'static str)> {
        let q = self.query_ids(text)?;
        #[cfg(feature = "webgpu")]
        if let Some(d) = self.active_gpu() {
            let mut cache = d.new_cache();
            let on_gpu = async {
                let at_pred = d.prefill(&mut cache, &self.classify_prompt(&q)).await?;
                let after_unsafe = d.step(&mut cache, self.ids.unsafe_).await?;
                Ok::<_, GuardError>((at_pred, after_unsafe))
            };
            match on_gpu.await {
                Ok((at_pred, after_unsafe)) => {
                    return Ok((self.read_score(&at_pred, &after_unsafe, q.len())?, "webgpu"))
                }
                Err(e) => {
                    if let Some(e) = self.gpu_failed(e) {
                        return Err(e);
                    }
                }
            }
        }
        Ok((self.score_ids(&q)?, "cpu"))
    }

    /// `<bos> query <|pred|>`
    fn classify_prompt(&self, query: &[u32]) -> Vec<u32> {
        let mut prompt = Vec::with_capacity(query.len() + 2);
        prompt.push(self.ids.bos);
        prompt.extend_from_slice(query);
        prompt.push(self.ids.pred);
        prompt
    }

    /// The score from the hidden rows at `<|pred|>` and after a teacher-forced `<|unsafe|>` (either backend's): 11
    /// rows of the tied head on the CPU, the same f32 function as the GPU's head.
    fn read_score(
        &self,
        at_pred: &[f32],
        after_unsafe: &[f32],
        tokens: usize,
    ) -> Result<GuardianScore> {
        let ids = &self.ids;
        let l = self.model.logits_for(at_pred, &[ids.safe, ids.unsafe_])?;
        let unsafe_prob = 1.0 / (1.0 + (l[0] - l[1]).exp());
        let mut category_probs = self.model.logits_for(after_unsafe, &ids.categories)?;
        softmax(&mut category_probs);
        Ok(GuardianScore {
            unsafe_prob,
            category_probs,
            tokens,
        })
    }

    /// Greedy response in the respond format. `on_token` gets each new piece of text as soon as it is complete
    /// UTF-8 (byte-fallback tokens can split a character); returning `false` stops generation (`Cancelled`).
    /// A loop over [`Guardian::start`] / [`Generation::next`].
    pub fn respond(
        &self,
        text: &str,
        opts: &RespondOptions,
        mut on_token: impl FnMut(&str) -> bool,
    ) -> Result<Response> {
        let mut gen = self.start(text, opts)?;
        while let Some(piece) = gen.next(self)? {
            if !on_token(&piece) {
                gen.cancel();
                break;
            }
        }
        Ok(gen.into_response())
    }

    /// Begin a greedy response in the respond format (normalise, check length, build the prompt); nothing runs
    /// until the first [`Generation::next`], which reads the prompt. The caller drives generation one piece at a
    /// time, so it can stop (cancel) or yield between tokens (the JS API does, so an AbortSignal can fire).
    pub fn start(&self, text: &str, opts: &RespondOptions) -> Result<Generation> {
        let q = self.query_ids(text)?;
        let ids = &self.ids;
        let mut prompt = Vec::with_capacity(q.len() + 3);
        prompt.push(ids.bos);
        prompt.extend_from_slice(&q);
        if opts.force_safety {
            prompt.push(ids.force);
        }
        prompt.push(ids.expl);
        let max_new = opts
            .max_tokens
            .min(self.config().max_context.saturating_sub(prompt.len()));
        Ok(Generation {
            cache: None,
            backend: "cpu",
            prompt,
            stream: TextStream::default(),
            tokens: Vec::new(),
            text: String::new(),
            max_new,
            no_repeat: opts.no_repeat_ngram,
            stopped: (max_new == 0).then_some(StopReason::MaxTokens),
            flushed: false,
        })
    }

    /// The usual verdict from the guardian's score: `score` = unsafe_prob, and each category's score is the joint
    /// P(unsafe) * P(category | unsafe), so a safe message never lights up a category through the conditional
    /// softmax alone. Thresholds come from the manifest (0.5 where it has none); empty text is allowed, as in
    /// `Guard::classify`.
    pub fn classify(&self, text: &str, policy: &Policy) -> Result<Verdict> {
        let t0 = now_ms();
        let p = policy.resolve(&self.manifest.categories, &self.manifest.thresholds)?;
        self.check_bytes(text, p.max_input_bytes)?;
        let s = if normalize(text).is_empty() {
            None
        } else {
            Some(self.score(text)?)
        };
        Ok(self.verdict(text, s, &p, "cpu", t0))
    }

    /// `classify` on the backend chosen at load (as `score_async`); the verdict's `backend` says which ran.
    pub async fn classify_async(&self, text: &str, policy: &Policy) -> Result<Verdict> {
        let t0 = now_ms();
        let p = policy.resolve(&self.manifest.categories, &self.manifest.thresholds)?;
        self.check_bytes(text, p.max_input_bytes)?;
        if normalize(text).is_empty() {
            return Ok(self.verdict(text, None, &p, self.backend_name(), t0));
        }
        let (s, backend) = self.score_async(text).await?;
        Ok(self.verdict(text, Some(s), &p, backend, t0))
    }

    fn check_bytes(&self, text: &str, limit: usize) -> Result<()> {
        if text.len() > limit {
            return Err(GuardError::InputTooLong {
                len: text.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The verdict from a score (`None`: nothing to read, e.g. empty text).
    fn verdict(
        &self,
        text: &str,
        g: Option<GuardianScore>,
        p: &crate::policy::ResolvedPolicy,
        backend: &str,
        t0: f64,
    ) -> Verdict {
        let s = match g {
            None => Scores {
                unsafe_prob: 0.0,
                categories: vec![0.0; self.manifest.categories.len()],
                tokens: 0,
                windows: 0,
            },
            Some(g) => Scores {
                unsafe_prob: g.unsafe_prob,
                categories: g.category_probs.iter().map(|c| c * g.unsafe_prob).collect(),
                tokens: g.tokens,
                windows: 1,
            },
        };
        let mut v = Verdict::decide(
            &s,
            p,
            language(text),
            &self.model_id(),
            backend,
            now_ms() - t0,
        );
        v.decided_by = DecidedBy::Guardian;
        v
    }
}

/// One response being generated (see [`Guardian::start`]). Holds its own KV cache; the model stays shared.
pub struct Generation {
    /// Created when the prompt is read (first `next`), on the backend that reads it.
    cache: Option<SeqCache>,
    /// The backend that computed the last token.
    backend: &'static str,
    prompt: Vec<u32>,
    stream: TextStream,
    tokens: Vec<u32>,
    text: String,
    max_new: usize,
    no_repeat: usize,
    stopped: Option<StopReason>,
    /// The stream's dangling tail was released (generation is over).
    flushed: bool,
}

/// A generation's KV cache, on the backend that holds it.
enum SeqCache {
    Cpu(Cache),
    #[cfg(feature = "webgpu")]
    Gpu(GpuCache),
}

impl Generation {
    /// The next piece of text (complete UTF-8, never empty), or `None` when the response is finished (stop token,
    /// `max_tokens`, or `cancel`). Each call runs the model for as many tokens as it takes to complete a character
    /// (usually one; the first call also reads the prompt). Use the same `Guardian` that started it. Always on
    /// the CPU model (a generation begun on the GPU re-reads its prompt and reply so far there).
    pub fn next(&mut self, g: &Guardian) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.end() {
                return Ok(end);
            }
            let logits = g.model.logits(&self.cpu_hidden(g)?)?;
            self.backend = "cpu";
            if let Some(piece) = self.accept(g, &logits) {
                return Ok(Some(piece));
            }
        }
    }

    /// `next` on the backend chosen at load: the WebGPU decoder while it works. If it fails (a lost device), the
    /// CPU model reads the prompt and the reply so far and generation goes on from the same token.
    pub async fn next_async(&mut self, g: &Guardian) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.end() {
                return Ok(end);
            }
            let logits = self.logits_async(g).await?;
            if let Some(piece) = self.accept(g, &logits) {
                return Ok(Some(piece));
            }
        }
    }

    /// Once stopped: the stream's last partial character (once), then `None`.
    fn end(&mut self) -> Option<Option<String>> {
        let stopped = self.stopped?;
        if self.flushed {
            return Some(None);
        }
        self.flushed = true;
        let tail = self.stream.finish();
        self.text.push_str(&tail);
        if tail.is_empty() || stopped == StopReason::Cancelled {
            return Some(None);
        }
        Some(Some(tail))
    }

    /// Take the greedy token from `logits` (or stop); the new text, if it completed any.
    fn accept(&mut self, g: &Guardian, logits: &[f32]) -> Option<String> {
        let next = argmax(logits);
        if g.ids.stop.contains(&next) {
            self.stopped = Some(StopReason::EndOfTurn);
            return None;
        }
        if repeated_ngram_completions(&self.tokens, self.no_repeat).contains(&next) {
            self.stopped = Some(StopReason::Repetition);
            return None;
        }
        self.tokens.push(next);
        let piece = self.stream.push(&g.tokenizer, next);
        if self.tokens.len() >= self.max_new {
            self.stopped = Some(StopReason::MaxTokens);
        }
        if piece.is_empty() {
            return None;
        }
        self.text.push_str(&piece);
        Some(piece)
    }

    /// Prompt and reply so far: what a fresh cache must read to continue.
    fn context(&self) -> Vec<u32> {
        [&self.prompt[..], &self.tokens[..]].concat()
    }

    /// The CPU model's hidden row for the next token: one step on its cache, or (first call, or the cache is the
    /// GPU's) a fresh cache reading the whole context.
    fn cpu_hidden(&mut self, g: &Guardian) -> Result<Vec<f32>> {
        if let (Some(SeqCache::Cpu(cache)), Some(&last)) = (&mut self.cache, self.tokens.last()) {
            return g.model.step(cache, last);
        }
        let mut cache = g.model.new_cache();
        let h = g.model.prefill(&mut cache, &self.context())?;
        self.cache = Some(SeqCache::Cpu(cache));
        Ok(h)
    }

    async fn logits_async(&mut self, g: &Guardian) -> Result<Vec<f32>> {
        #[cfg(feature = "webgpu")]
        if let Some(d) = g.active_gpu() {
            match self.gpu_logits(d).await {
                Ok(l) => {
                    self.backend = "webgpu";
                    return Ok(l);
                }
                Err(e) => {
                    // the GPU cache may be half-written: the CPU starts over from the context
                    self.cache = None;
                    if let Some(e) = g.gpu_failed(e) {
                        return Err(e);
                    }
                }
            }
        }
        let logits = g.model.logits(&self.cpu_hidden(g)?)?;
        self.backend = "cpu";
        Ok(logits)
    }

    /// As `cpu_hidden` on the decoder, then the head (on the GPU: its int8 table is already there).
    #[cfg(feature = "webgpu")]
    async fn gpu_logits(&mut self, d: &WebGpuDecoder) -> Result<Vec<f32>> {
        let h = match (&mut self.cache, self.tokens.last()) {
            (Some(SeqCache::Gpu(cache)), Some(&last)) => d.step(cache, last).await?,
            _ => {
                let mut cache = d.new_cache();
                let h = d.prefill(&mut cache, &self.context()).await?;
                self.cache = Some(SeqCache::Gpu(cache));
                h
            }
        };
        d.logits(&h).await
    }

    /// The backend that computed the last token ("cpu" before the first).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Stop here: the response ends `Cancelled` (unless it had already finished and released its last piece).
    pub fn cancel(&mut self) {
        if !self.flushed {
            self.stopped = Some(StopReason::Cancelled);
        }
    }

    /// Why it stopped; `None` while it can still produce text.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stopped.filter(|_| self.is_finished())
    }

    /// True once `next` has returned `None` (or would, after a cancel).
    pub fn is_finished(&self) -> bool {
        self.flushed || self.stopped == Some(StopReason::Cancelled)
    }

    /// Text released so far (by `next`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Generated ids so far (the stop token excluded).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Prompt length in tokens (control tokens included).
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// The response so far. Unfinished generations end `Cancelled`; a dangling partial character is released as
    /// U+FFFD into `text` (as `respond` does after a cancel).
    pub fn into_response(mut self) -> Response {
        if !self.flushed {
            if self.stopped.is_none() {
                self.stopped = Some(StopReason::Cancelled);
            }
            let tail = self.stream.finish();
            self.text.push_str(&tail);
        }
        let stopped = self.stopped.unwrap_or(StopReason::Cancelled);
        let text = if stopped == StopReason::Repetition {
            drop_unfinished_sentence(self.text)
        } else {
            self.text
        };
        Response {
            text,
            tokens: self.tokens,
            stopped,
            fallback: false,
            crisis_line_added: false,
            backend: self.backend,
        }
    }
}

/// Where a sentence ends (also where the reply gate checks a reply: `reply_gate.rs`).
pub(crate) const SENTENCE_ENDS: [char; 8] = ['.', '!', '?', '\n', '。', '！', '？', '…'];

/// A reply cut off because it began to repeat itself ends mid-sentence ("I can't help with that. I can't"): keep
/// it up to its last sentence end, when it has one. The streamed pieces still hold the fragment; the final
/// `Response::text` (what a UI settles on) does not.
fn drop_unfinished_sentence(text: String) -> String {
    match text
        .trim_end()
        .char_indices()
        .rev()
        .find(|(_, c)| SENTENCE_ENDS.contains(c))
    {
        Some((i, c)) if i > 0 => {
            let kept = text[..i + c.len_utf8()].trim_end();
            kept.to_string()
        }
        _ => text,
    }
}

/// Tokens that would complete an `n`-gram already present in `tokens` (same as `repeating_tokens` in
/// training/guardian/gemma3.py).
fn repeated_ngram_completions(tokens: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || tokens.len() < n {
        return Vec::new();
    }
    let prefix = &tokens[tokens.len() - (n - 1)..];
    tokens
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        s += *v;
    }
    x.iter_mut().for_each(|v| *v /= s);
}

#[cfg(test)]
mod tests {
    use super::repeated_ngram_completions as banned;

    #[test]
    fn a_repeating_reply_keeps_whole_sentences() {
        use super::drop_unfinished_sentence as cut;
        let s = |t: &str| t.to_string();
        assert_eq!(cut(s("I can't help. I can't")), "I can't help.");
        assert_eq!(
            cut(s("폭탄 만드는 방법은 알려줄 수 없어. 폭탄을 만드는 방법은")),
            "폭탄 만드는 방법은 알려줄 수 없어."
        );
        assert_eq!(cut(s("Stop here!\nAgain and")), "Stop here!");
        // no sentence end at all: nothing better to keep than the text
        assert_eq!(cut(s("no sentence end yet")), "no sentence end yet");
        assert_eq!(cut(s("Done. ")), "Done.");
    }

    #[test]
    fn repeated_ngrams_are_banned() {
        // 1 2 3 4 1 2 3 -> completing "1 2 3" with 4 again would repeat the 4-gram "1 2 3 4"
        assert_eq!(banned(&[1, 2, 3, 4, 1, 2, 3], 4), vec![4]);
        assert_eq!(banned(&[1, 2, 3, 4, 1, 2, 3], 0), Vec::<u32>::new());
        assert_eq!(banned(&[1, 2, 3], 4), Vec::<u32>::new());
        // bigrams: after "... 5" every token that followed a 5 before is banned
        assert_eq!(banned(&[5, 1, 5, 2, 5], 2), vec![1, 2]);
        assert_eq!(banned(&[7, 7, 7], 2), vec![7, 7]);
    }
}

/// Index of the largest value (the first one on ties, like `torch.argmax`).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}
