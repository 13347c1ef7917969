//! The wasm-bindgen surface used by the npm package (`js/index.js` wraps it into `Guard`). It only converts
//! types: model loading, verification, inference and policy logic all live in the Rust API.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::error::GuardError;
use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen_futures::future_to_promise;

use crate::cascade::Band;
use crate::guard::{BackendChoice, Guard, ModelFiles};
use crate::guardian::{Generation, Guardian, RespondOptions};
use crate::policy::Policy;
use crate::reply_gate::{Query, ReplyGate, Step};

fn js_error(e: &GuardError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error(&GuardError::Inference(e.to_string())))
}

/// Through JSON, so unknown fields are rejected exactly as in the CLI (serde-wasm-bindgen skips them).
fn policy_from(v: JsValue) -> Result<Policy, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(Policy::default());
    }
    let bad = |m: String| js_error(&GuardError::Policy(m));
    let json =
        js_sys::JSON::stringify(&v).map_err(|_| bad("policy is not JSON-serialisable".into()))?;
    Policy::from_json(&String::from(json)).map_err(|e| js_error(&e))
}

/// Low-level handle; use `Guard` from the package instead. Shared (`Rc`) so an in-flight async call keeps the
/// model alive even if the page disposes the handle meanwhile.
#[wasm_bindgen]
pub struct WasmGuard {
    inner: Option<Rc<Guard>>,
}

#[wasm_bindgen]
impl WasmGuard {
    /// Verify (sha256 against the manifest) and load a model from its files' bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(
        manifest: Vec<u8>,
        weights: Vec<u8>,
        tokenizer: Vec<u8>,
    ) -> Result<WasmGuard, JsValue> {
        let files = ModelFiles {
            manifest,
            weights,
            tokenizer,
        };
        let guard = Guard::load(&files).map_err(|e| js_error(&e))?;
        Ok(WasmGuard {
            inner: Some(Rc::new(guard)),
        })
    }

    /// As the constructor, then bring up `backend` (`'auto' | 'cpu' | 'webgpu'`); resolves to the handle.
    pub async fn create(
        manifest: Vec<u8>,
        weights: Vec<u8>,
        tokenizer: Vec<u8>,
        backend: String,
    ) -> Result<WasmGuard, JsValue> {
        let (files, choice) = load_args(manifest, weights, tokenizer, &backend)?;
        let guard = Guard::load_with_backend(&files, choice)
            .await
            .map_err(|e| js_error(&e))?;
        Ok(WasmGuard {
            inner: Some(Rc::new(guard)),
        })
    }

    fn guard(&self) -> Result<&Guard, JsValue> {
        self.inner
            .as_deref()
            .ok_or_else(|| js_error(&GuardError::Disposed))
    }

    fn shared(&self) -> Result<Rc<Guard>, JsValue> {
        self.inner
            .clone()
            .ok_or_else(|| js_error(&GuardError::Disposed))
    }

    /// `classify` on the backend chosen at load (WebGPU where chosen): a Promise of the verdict.
    #[wasm_bindgen(js_name = classifyAsync)]
    pub fn classify_async(
        &self,
        text: String,
        policy: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let policy = policy_from(policy)?;
        let guard = self.shared()?;
        Ok(future_to_promise(async move {
            let v = guard
                .classify_async(&text, &policy)
                .await
                .map_err(|e| js_error(&e))?;
            to_js(&v)
        }))
    }

    /// `classifyBatch` on the backend chosen at load: a Promise of the verdicts.
    #[wasm_bindgen(js_name = classifyBatchAsync)]
    pub fn classify_batch_async(
        &self,
        texts: Vec<String>,
        policy: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let policy = policy_from(policy)?;
        let guard = self.shared()?;
        Ok(future_to_promise(async move {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = guard
                .classify_batch_async(&refs, &policy)
                .await
                .map_err(|e| js_error(&e))?;
            to_js(&v)
        }))
    }

    pub fn classify(&self, text: &str, policy: JsValue) -> Result<JsValue, JsValue> {
        let policy = policy_from(policy)?;
        let v = self
            .guard()?
            .classify(text, &policy)
            .map_err(|e| js_error(&e))?;
        to_js(&v)
    }

    /// The reply gate's check on a guardian reply (`Guard::check_reply`).
    #[wasm_bindgen(js_name = checkReply)]
    pub fn check_reply(&self, text: &str, policy: JsValue) -> Result<JsValue, JsValue> {
        let policy = policy_from(policy)?;
        let c = self
            .guard()?
            .check_reply(text, &policy)
            .map_err(|e| js_error(&e))?;
        to_js(&c)
    }

    #[wasm_bindgen(js_name = classifyBatch)]
    pub fn classify_batch(&self, texts: Vec<String>, policy: JsValue) -> Result<JsValue, JsValue> {
        let policy = policy_from(policy)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let v = self
            .guard()?
            .classify_batch(&refs, &policy)
            .map_err(|e| js_error(&e))?;
        to_js(&v)
    }

    /// The verdict the policy's fail mode gives for an error (edge workers answer even when the model cannot run).
    #[wasm_bindgen(js_name = failVerdict)]
    pub fn fail_verdict(
        &self,
        code: String,
        message: String,
        text: &str,
        policy: JsValue,
    ) -> Result<JsValue, JsValue> {
        let policy = policy_from(policy)?;
        let err = GuardError::Inference(message.clone());
        let mut v = self.guard()?.fail_verdict(&err, text, &policy);
        // keep the caller's own error code (e.g. NETWORK, MODEL_INTEGRITY) rather than a generic one
        v.error = Some(crate::verdict::VerdictError { code, message });
        to_js(&v)
    }

    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.guard()?.info())
    }

    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

/// Check a policy's shape (unknown fields, types, value ranges) without a model; categories are checked at use.
#[wasm_bindgen(js_name = checkPolicy)]
pub fn check_policy(policy: JsValue) -> Result<(), JsValue> {
    let p = policy_from(policy)?;
    p.resolve(&[], &Default::default())
        .map(|_| ())
        .map_err(|e| js_error(&e))
}

/// The fail-mode verdict when no model could be loaded at all (edge workers must still answer).
#[wasm_bindgen(js_name = unavailableVerdict)]
pub fn unavailable_verdict(
    code: String,
    message: String,
    text: &str,
    policy: JsValue,
    categories: Vec<String>,
) -> Result<JsValue, JsValue> {
    let p = policy_from(policy)?
        .resolve(&[], &Default::default())
        .map_err(|e| js_error(&e))?;
    let p = crate::policy::ResolvedPolicy {
        categories: categories
            .into_iter()
            .map(|c| (c, 1.0, crate::policy::Action::Block))
            .collect(),
        ..p
    };
    to_js(&crate::verdict::Verdict::failed_with_code(
        &code,
        &message,
        &p,
        crate::reply::language(text),
        "unavailable",
        "cpu",
    ))
}

/// The text normalisation the model sees (exported for tests and debugging).
#[wasm_bindgen(js_name = normalizeText)]
pub fn normalize_text(text: &str) -> String {
    crate::text::normalize(text)
}

/// The files and the backend choice of a `create` call (`backend`: 'auto' | 'cpu' | 'webgpu').
fn load_args(
    manifest: Vec<u8>,
    weights: Vec<u8>,
    tokenizer: Vec<u8>,
    backend: &str,
) -> Result<(ModelFiles, BackendChoice), JsValue> {
    let choice: BackendChoice = backend.parse().map_err(|e| js_error(&e))?;
    let files = ModelFiles {
        manifest,
        weights,
        tokenizer,
    };
    Ok((files, choice))
}

/// sha256 of bytes as lowercase hex (used to check cached model files before handing them to Rust).
#[wasm_bindgen(js_name = sha256Hex)]
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::manifest::sha256_hex(bytes)
}

/// Low-level handle on the generative guardian; use `Guard.load({ guardian })` from the package instead.
#[wasm_bindgen]
pub struct WasmGuardian {
    inner: Option<Rc<Guardian>>,
}

#[wasm_bindgen]
impl WasmGuardian {
    /// Verify (sha256 against the manifest, which must say `task: "guardian"`) and load the guardian.
    #[wasm_bindgen(constructor)]
    pub fn new(
        manifest: Vec<u8>,
        weights: Vec<u8>,
        tokenizer: Vec<u8>,
    ) -> Result<WasmGuardian, JsValue> {
        let files = ModelFiles {
            manifest,
            weights,
            tokenizer,
        };
        let g = Guardian::load(&files).map_err(|e| js_error(&e))?;
        Ok(WasmGuardian {
            inner: Some(Rc::new(g)),
        })
    }

    /// As the constructor, then bring up `backend` (`'auto' | 'cpu' | 'webgpu'`) for `classifyAsync` and
    /// `nextAsync`; resolves to the handle.
    pub async fn create(
        manifest: Vec<u8>,
        weights: Vec<u8>,
        tokenizer: Vec<u8>,
        backend: String,
    ) -> Result<WasmGuardian, JsValue> {
        let (files, choice) = load_args(manifest, weights, tokenizer, &backend)?;
        let g = Guardian::load_with_backend(&files, choice)
            .await
            .map_err(|e| js_error(&e))?;
        Ok(WasmGuardian {
            inner: Some(Rc::new(g)),
        })
    }

    fn shared(&self) -> Result<Rc<Guardian>, JsValue> {
        self.inner
            .clone()
            .ok_or_else(|| js_error(&GuardError::Disposed))
    }

    /// The classify format alone: `{ unsafe_prob, category_probs, tokens }`.
    pub fn score(&self, text: &str) -> Result<JsValue, JsValue> {
        to_js(&self.shared()?.score(text).map_err(|e| js_error(&e))?)
    }

    /// The guardian's own verdict (same shape as the classifier's, `decided_by: "guardian"`).
    pub fn classify(&self, text: &str, policy: JsValue) -> Result<JsValue, JsValue> {
        let policy = policy_from(policy)?;
        to_js(
            &self
                .shared()?
                .classify(text, &policy)
                .map_err(|e| js_error(&e))?,
        )
    }

    /// `classify` on the backend chosen at load: a Promise of the verdict (`backend` says which ran).
    #[wasm_bindgen(js_name = classifyAsync)]
    pub fn classify_async(
        &self,
        text: String,
        policy: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let policy = policy_from(policy)?;
        let guardian = self.shared()?;
        Ok(future_to_promise(async move {
            let v = guardian
                .classify_async(&text, &policy)
                .await
                .map_err(|e| js_error(&e))?;
            to_js(&v)
        }))
    }

    /// Begin a greedy response; drive it with `WasmGeneration.nextAsync()`. `max_tokens` 0 means the default (256),
    /// `no_repeat_ngram` < 0 the default (4).
    pub fn start(
        &self,
        text: &str,
        force_safety: bool,
        max_tokens: u32,
        no_repeat_ngram: i32,
    ) -> Result<WasmGeneration, JsValue> {
        let guardian = self.shared()?;
        let mut opts = RespondOptions {
            force_safety,
            ..RespondOptions::default()
        };
        if max_tokens > 0 {
            opts.max_tokens = max_tokens as usize;
        }
        if no_repeat_ngram >= 0 {
            opts.no_repeat_ngram = no_repeat_ngram as usize;
        }
        let t0 = crate::clock::now_ms();
        let gen = guardian.start(text, &opts).map_err(|e| js_error(&e))?;
        Ok(WasmGeneration {
            state: Rc::new(RefCell::new(GenerationState {
                guardian,
                gen: Some(gen),
                gate: None,
                query: text.to_string(),
                t0,
                first_ms: None,
                max_tokens: opts.max_tokens,
                force_safety,
            })),
        })
    }

    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.shared()?.info())
    }

    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

/// One response being generated. `nextAsync()` runs the model until one more piece of text is complete (a few tens
/// of ms) and resolves to it, or to `undefined` at the end; JS yields to the event loop between calls, so an
/// AbortSignal or the page stays responsive. One call at a time (a second while one runs is a BUSY error).
#[wasm_bindgen]
pub struct WasmGeneration {
    /// Shared with the future of a `nextAsync` in flight.
    state: Rc<RefCell<GenerationState>>,
}

struct GenerationState {
    guardian: Rc<Guardian>,
    gen: Option<Generation>,
    /// The classifier that checks each sentence before it is released (`gate`), with the gate's state.
    gate: Option<(Rc<Guard>, ReplyGate)>,
    query: String,
    t0: f64,
    first_ms: Option<f64>,
    max_tokens: usize,
    force_safety: bool,
}

#[derive(Serialize)]
struct GenerationResult {
    text: String,
    stopped: crate::guardian::StopReason,
    prompt_tokens: usize,
    generated_tokens: usize,
    max_tokens: usize,
    force_safety: bool,
    /// Each sentence was checked by the classifier before release (`gate`).
    checked: bool,
    /// Nothing passed the check: `text` is the built-in safe reply.
    fallback: bool,
    /// The gate ended `text` with a crisis line (the message was rated a self-harm risk, the model gave none).
    crisis_line_added: bool,
    lang: &'static str,
    model: String,
    /// The backend that computed the last token ("cpu" or "webgpu").
    backend: &'static str,
    timing_ms: f64,
    first_token_ms: Option<f64>,
    tokens_per_s: f64,
}

#[wasm_bindgen]
impl WasmGeneration {
    fn state(&self) -> Result<std::cell::RefMut<'_, GenerationState>, JsValue> {
        self.state.try_borrow_mut().map_err(|_| busy())
    }

    /// A Promise of the next piece of text, `undefined` at the end, or (gated) `""` while a sentence is still
    /// unchecked. Runs on the backend chosen when the guardian was loaded (the CPU after a GPU failure).
    #[wasm_bindgen(js_name = nextAsync)]
    pub fn next_async(&self) -> Result<js_sys::Promise, JsValue> {
        // fail fast (not inside the promise) when a call is already running or the generation is finished
        if self.state()?.gen.is_none() {
            return Err(js_error(&GuardError::Disposed));
        }
        let state = self.state.clone();
        Ok(future_to_promise(async move {
            let mut st = state.try_borrow_mut().map_err(|_| busy())?;
            let st = &mut *st;
            let gen = st
                .gen
                .as_mut()
                .ok_or_else(|| js_error(&GuardError::Disposed))?;
            let piece = match &mut st.gate {
                None => gen.next_async(&st.guardian).await,
                Some((guard, gate)) => {
                    let policy = Policy::default();
                    let mut check = crate::reply_gate::classifier_check(guard, &policy);
                    gate.step_async(gen, &st.guardian, &mut check)
                        .await
                        .map(|step| match step {
                            // "": a token went into a sentence that is not checked yet (JS yields, calls again)
                            Step::Held => Some(String::new()),
                            Step::Released(s) => Some(s),
                            Step::End => None,
                        })
                }
            }
            .map_err(|e| js_error(&e))?;
            if piece.is_some() && st.first_ms.is_none() {
                st.first_ms = Some(crate::clock::now_ms() - st.t0);
            }
            Ok(piece.map_or(JsValue::UNDEFINED, JsValue::from))
        }))
    }

    /// Release the reply sentence by sentence, each only once `classifier` (with its manifest's policy) does not
    /// flag the reply so far; a flagged sentence is withheld and ends the reply (`stopped: 'unsafe'`). A reply to a
    /// message `classifier` rates a self-harm risk ends with a crisis line if it gave none. Call before the first
    /// `next()`.
    pub fn gate(&self, classifier: &WasmGuard) -> Result<(), JsValue> {
        let guard = classifier.shared()?;
        let mut st = self.state()?;
        let query = Query::read(&guard, &Policy::default(), &st.query);
        st.gate = Some((guard, ReplyGate::new(query)));
        Ok(())
    }

    /// Stop before the next token (the response ends `cancelled`). BUSY while a `nextAsync` runs: await it first.
    pub fn cancel(&self) -> Result<(), JsValue> {
        if let Some(g) = self.state()?.gen.as_mut() {
            g.cancel();
        }
        Ok(())
    }

    /// End the generation (cancelled if unfinished) and return the response with its timing.
    pub fn finish(&self) -> Result<JsValue, JsValue> {
        let mut st = self.state()?;
        let st = &mut *st;
        let gen = st
            .gen
            .take()
            .ok_or_else(|| js_error(&GuardError::Disposed))?;
        let prompt_tokens = gen.prompt_tokens();
        let checked = st.gate.is_some();
        let r = match st.gate.take() {
            Some((_, gate)) => crate::reply_gate::finish(gate, gen),
            None => gen.into_response(),
        };
        let timing_ms = crate::clock::now_ms() - st.t0;
        // decode speed: tokens after the first over the time after the first (the prompt read is not decode)
        let tokens_per_s = match st.first_ms {
            Some(f) if r.tokens.len() > 1 && timing_ms > f => {
                (r.tokens.len() - 1) as f64 * 1000.0 / (timing_ms - f)
            }
            _ => 0.0,
        };
        to_js(&GenerationResult {
            lang: crate::reply::language(&r.text),
            text: r.text,
            stopped: r.stopped,
            prompt_tokens,
            generated_tokens: r.tokens.len(),
            max_tokens: st.max_tokens,
            force_safety: st.force_safety,
            checked,
            fallback: r.fallback,
            crisis_line_added: r.crisis_line_added,
            model: st.guardian.model_id(),
            backend: r.backend,
            timing_ms,
            first_token_ms: st.first_ms,
            tokens_per_s,
        })
    }
}

/// A second call on a generation while its `nextAsync` runs.
fn busy() -> JsValue {
    let err = js_sys::Error::new("this generation is busy: await its nextAsync() first");
    let _ = js_sys::Reflect::set(&err, &"code".into(), &"BUSY".into());
    err.into()
}

fn band_from(v: JsValue, guardian: &Guardian) -> Result<Band, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(Band::from_manifest(guardian.manifest()));
    }
    let get = |k: &str| {
        js_sys::Reflect::get(&v, &k.into())
            .ok()
            .and_then(|x| x.as_f64())
            .ok_or_else(|| {
                js_error(&GuardError::Policy(format!(
                    "cascade band needs numeric `low` and `high` (missing `{k}`)"
                )))
            })
    };
    Band::new(get("low")? as f32, get("high")? as f32).map_err(|e| js_error(&e))
}

impl WasmGuard {
    /// What a cascade call needs, checked before its Promise starts: policy, both models, the band.
    fn cascade_inputs(
        &self,
        policy: JsValue,
        guardian: &WasmGuardian,
        band: JsValue,
    ) -> Result<(Policy, Rc<Guard>, Rc<Guardian>, Band), JsValue> {
        let policy = policy_from(policy)?;
        let guard = self.shared()?;
        let guardian = guardian.shared()?;
        let band = band_from(band, &guardian)?;
        Ok((policy, guard, guardian, band))
    }
}

#[wasm_bindgen]
impl WasmGuard {
    /// The cascade: the classifier's verdict, re-decided by `guardian` when its score is inside `band`
    /// (`{low, high}`; undefined: the guardian manifest's band). A Promise of the verdict (`decided_by`, `cascade`).
    #[wasm_bindgen(js_name = classifyCascadeAsync)]
    pub fn classify_cascade_async(
        &self,
        text: String,
        policy: JsValue,
        guardian: &WasmGuardian,
        band: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let (policy, guard, guardian, band) = self.cascade_inputs(policy, guardian, band)?;
        Ok(future_to_promise(async move {
            let v = guard
                .classify_async(&text, &policy)
                .await
                .map_err(|e| js_error(&e))?;
            let v = crate::cascade::refine_async(v, &guardian, &text, &policy, &band)
                .await
                .map_err(|e| js_error(&e))?;
            to_js(&v)
        }))
    }

    /// `classifyBatch` through the cascade: each message is routed as `classifyCascadeAsync` routes it.
    #[wasm_bindgen(js_name = classifyBatchCascadeAsync)]
    pub fn classify_batch_cascade_async(
        &self,
        texts: Vec<String>,
        policy: JsValue,
        guardian: &WasmGuardian,
        band: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let (policy, guard, guardian, band) = self.cascade_inputs(policy, guardian, band)?;
        Ok(future_to_promise(async move {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = guard
                .classify_batch_async(&refs, &policy)
                .await
                .map_err(|e| js_error(&e))?;
            let v = crate::cascade::refine_batch_async(v, &guardian, &refs, &policy, &band)
                .await
                .map_err(|e| js_error(&e))?;
            to_js(&v)
        }))
    }
}
