//! The generative guardian: Gemma 3 (270M) as llama.cpp's GGUF lays it out. Pre-norm decoder with sandwich
//! RMSNorms (GGUF norm weights already carry Gemma's `+1`), RMSNorm of every query and key head before NeoX-style
//! RoPE (base 1e4 on local layers, 1e6 on global ones: every `sliding_window_pattern`-th layer), grouped-query
//! attention (4 query heads share 1 KV head), a sliding window on local layers, GELU(tanh)-gated FFN, embeddings
//! scaled by sqrt(hidden) and an output head tied to the embedding.
//! Twin of `training/guardian/gemma3.py`; tensor names follow the GGUF.
//!
//! Not candle-transformers' `quantized_gemma3`: it uses SiLU instead of GELU and builds RoPE tables for 131k
//! positions per layer (7 GB). Here the tables cover `max_context` positions once, the KV cache grows with the
//! tokens actually seen (local layers keep a ring of the last `sliding_window`), and the model is immutable: all
//! state lives in a `Cache`, so one loaded model serves any number of sequences.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::gguf::GgufWeights;
use super::linear::{forward_shared, Linear};
use crate::backend::cpu::int8::Int8Linear;
use crate::backend::cpu::ops;
use crate::error::{GuardError, Result};

/// GGUF `slm_guard.format_version` this file reads (absent in the base model's GGUF).
const WEIGHTS_VERSION: u32 = 1;
/// Prompt tokens run through the layers at once: bounds working memory for long prompts (wasm memory never
/// shrinks) while keeping the matmuls wide.
const PREFILL_CHUNK: usize = 128;
/// Positions prepared when the caller does not say (RoPE tables, largest KV cache).
pub const DEFAULT_MAX_CONTEXT: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rms_norm_eps: f32,
    pub sliding_window: usize,
    pub sliding_window_pattern: usize,
    pub rope_global_base: f32,
    pub rope_local_base: f32,
    /// Context the checkpoint was trained for (`gemma3.context_length`).
    pub context_length: usize,
    /// Positions this runtime prepares: min(load parameter, context_length).
    pub max_context: usize,
}

impl Config {
    pub(crate) fn from_gguf(w: &GgufWeights, max_context: usize) -> Result<Self> {
        let arch = w.string("general.architecture")?;
        if arch != "gemma3" {
            return Err(GuardError::Weights(format!(
                "architecture `{arch}`, expected `gemma3`"
            )));
        }
        if w.has("slm_guard.format_version") {
            let version = w.u32("slm_guard.format_version")?;
            if version != WEIGHTS_VERSION {
                return Err(GuardError::Version {
                    found: version,
                    supported: WEIGHTS_VERSION,
                });
            }
        }
        let u = |k: &str| w.u32(&format!("gemma3.{k}")).map(|v| v as usize);
        let context_length = u("context_length")?;
        let cfg = Self {
            hidden: u("embedding_length")?,
            layers: u("block_count")?,
            heads: u("attention.head_count")?,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: u("attention.key_length")?,
            ffn: u("feed_forward_length")?,
            vocab: w.shape("token_embd.weight")?.first().copied().unwrap_or(0),
            rms_norm_eps: w.f32("gemma3.attention.layer_norm_rms_epsilon")?,
            sliding_window: u("attention.sliding_window")?,
            sliding_window_pattern: w.u32_or("gemma3.attention.sliding_window_pattern", 6)?
                as usize,
            rope_global_base: w.f32("gemma3.rope.freq_base")?,
            rope_local_base: w.f32_or("gemma3.rope.local_freq_base", 10_000.0)?,
            context_length,
            max_context: max_context.min(context_length),
        };
        let value_length = u("attention.value_length")?;
        if cfg.heads == 0
            || cfg.kv_heads == 0
            || cfg.heads % cfg.kv_heads != 0
            || cfg.head_dim % 2 != 0
            || value_length != cfg.head_dim
            || cfg.sliding_window == 0
            || cfg.sliding_window_pattern == 0
            || cfg.vocab == 0
            || cfg.max_context == 0
        {
            return Err(GuardError::Weights(format!("inconsistent config {cfg:?}")));
        }
        Ok(cfg)
    }

    /// Layer `i` attends to every earlier position (global) or only the last `sliding_window` (local).
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1) % self.sliding_window_pattern == 0
    }
}

fn dense(w: &mut GgufWeights, name: &str, len: usize) -> Result<Vec<f32>> {
    Ok(w.tensor(name, &[len])?
        .dequantize(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn load(w: &mut GgufWeights, name: &str, len: usize, cfg: &Config) -> Result<Self> {
        Ok(Self {
            weight: dense(w, name, len)?,
            eps: cfg.rms_norm_eps,
        })
    }

    /// In place, every row of `weight.len()` values.
    fn forward(&self, x: &mut [f32]) {
        ops::rms_norm(x, &self.weight, self.eps);
    }
}

/// `token_embd`, used twice: rows gathered for the input (straight from the quantized table, never a dense copy)
/// and, tied, as the output head.
enum Embedding {
    /// Row-scaled Q8_0: one int8 table serves the gather and the head (our int8 kernels).
    Int8(Int8Linear),
    /// Anything else (the base GGUF's per-block Q8_0, Q4_0, ...): candle gathers rows and runs the head.
    Quantized { table: Arc<QTensor>, head: QMatMul },
}

impl Embedding {
    fn load(w: &mut GgufWeights, cfg: &Config) -> Result<Self> {
        let (name, shape) = ("token_embd.weight", [cfg.vocab, cfg.hidden]);
        if let (GgmlDType::Q8_0, data) = w.raw(name, &shape)? {
            if let Some(t) =
                Int8Linear::from_q8_0_blocks(data, cfg.vocab, cfg.hidden, vec![0.0; cfg.vocab])
            {
                return Ok(Self::Int8(t));
            }
        }
        let table = Arc::new(w.tensor(name, &shape)?);
        Ok(Self::Quantized {
            head: QMatMul::from_arc(table.clone())?,
            table,
        })
    }

    /// Dequantized rows for `ids`, concatenated.
    fn rows(&self, ids: &[u32], h: usize) -> Result<Vec<f32>> {
        match self {
            Self::Int8(t) => {
                let mut out = vec![0f32; ids.len() * h];
                for (o, &id) in out.chunks_exact_mut(h).zip(ids) {
                    t.row_into(id as usize, o);
                }
                Ok(out)
            }
            Self::Quantized { table, .. } => {
                let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
                Ok(table.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }

    /// Logits over the whole vocabulary for one hidden row (activations quantized inside the kernel).
    fn head(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        match self {
            Self::Int8(t) => Ok(t.forward(hidden, 1)),
            Self::Quantized { head, .. } => {
                let t = Tensor::from_slice(hidden, (1, hidden.len()), &Device::Cpu)?;
                Ok(head.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// cos/sin of NeoX-style rotary embeddings for positions 0..max_context (computed in f64, like the reference).
pub struct Rope {
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    half: usize,
}

impl Rope {
    pub fn new(base: f32, head_dim: usize, positions: usize) -> Self {
        let half = head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Self { cos, sin, half }
    }

    /// Rotate one head vector (first half against second half) to position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let (c, s) = (
            &self.cos[pos * self.half..][..self.half],
            &self.sin[pos * self.half..][..self.half],
        );
        let (x1, x2) = x.split_at_mut(self.half);
        for i in 0..self.half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c[i] - b * s[i];
            x2[i] = b * c[i] + a * s[i];
        }
    }
}

/// One layer's keys and values (rows of kv_heads * head_dim), after k-norm and RoPE. Global layers keep every
/// position; local layers a ring of the last `ring` positions (all their queries can see).
struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
    ring: Option<usize>,
}

impl LayerCache {
    fn slot(&self, pos: usize) -> usize {
        self.ring.map_or(pos, |r| pos % r)
    }

    /// Append rows for positions pos0.. (grows with use; a full ring overwrites its oldest rows).
    fn append(&mut self, k: &[f32], v: &[f32], pos0: usize, kvd: usize) {
        for (t, (kr, vr)) in k.chunks_exact(kvd).zip(v.chunks_exact(kvd)).enumerate() {
            let s = self.slot(pos0 + t);
            if s * kvd == self.k.len() {
                self.k.extend_from_slice(kr);
                self.v.extend_from_slice(vr);
            } else {
                self.k[s * kvd..(s + 1) * kvd].copy_from_slice(kr);
                self.v[s * kvd..(s + 1) * kvd].copy_from_slice(vr);
            }
        }
    }
}

/// The state of one sequence: per-layer KV caches and the number of positions seen.
pub struct Cache {
    layers: Vec<LayerCache>,
    pos: usize,
}

impl Cache {
    /// Positions (tokens) this cache holds.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Keys visible to a query: the last `window` positions (local layers) or all (global).
    window: Option<usize>,
}

impl Attention {
    fn load(w: &mut GgufWeights, p: &str, i: usize, cfg: &Config) -> Result<Self> {
        let (h, d) = (cfg.hidden, cfg.head_dim);
        Ok(Self {
            q: Linear::load(w, &format!("{p}.attn_q.weight"), cfg.heads * d, h, None)?,
            k: Linear::load(w, &format!("{p}.attn_k.weight"), cfg.kv_heads * d, h, None)?,
            v: Linear::load(w, &format!("{p}.attn_v.weight"), cfg.kv_heads * d, h, None)?,
            o: Linear::load(
                w,
                &format!("{p}.attn_output.weight"),
                h,
                cfg.heads * d,
                None,
            )?,
            q_norm: RmsNorm::load(w, &format!("{p}.attn_q_norm.weight"), d, cfg)?,
            k_norm: RmsNorm::load(w, &format!("{p}.attn_k_norm.weight"), d, cfg)?,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: d,
            window: (!cfg.is_global(i)).then_some(cfg.sliding_window),
        })
    }

    /// `x` (m x hidden, normed) at positions pos0..pos0+m; reads earlier positions from `cache`, then adds these.
    fn forward(
        &self,
        x: &[f32],
        m: usize,
        pos0: usize,
        cache: &mut LayerCache,
        rope: &Rope,
    ) -> Result<Vec<f32>> {
        let d = self.head_dim;
        let (qd, kvd) = (self.heads * d, self.kv_heads * d);
        let [mut q, mut k, v] = forward_shared([&self.q, &self.k, &self.v], x, m)?;
        self.q_norm.forward(&mut q);
        self.k_norm.forward(&mut k);
        for (t, row) in q.chunks_exact_mut(qd).enumerate() {
            row.chunks_exact_mut(d)
                .for_each(|hv| rope.apply(hv, pos0 + t));
        }
        for (t, row) in k.chunks_exact_mut(kvd).enumerate() {
            row.chunks_exact_mut(d)
                .for_each(|hv| rope.apply(hv, pos0 + t));
        }
        // query_pre_attn_scalar = head_dim for Gemma 3 270M
        let scale = 1.0 / (d as f32).sqrt();
        let group = self.heads / self.kv_heads;
        let mut ctx = vec![0f32; m * qd];
        let mut scores = Vec::new();
        for t in 0..m {
            let p = pos0 + t;
            let lo = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
            for head in 0..self.heads {
                let kvh = head / group;
                let qh = &q[t * qd + head * d..][..d];
                scores.clear();
                for j in lo..=p {
                    let (kr, _) = kv_row(j, pos0, kvd, &k, &v, cache);
                    scores.push(ops::dot(qh, &kr[kvh * d..][..d]) * scale);
                }
                ops::softmax(&mut scores);
                let out = &mut ctx[t * qd + head * d..][..d];
                for (j, &w) in (lo..=p).zip(&scores) {
                    let (_, vr) = kv_row(j, pos0, kvd, &k, &v, cache);
                    ops::axpy(w, &vr[kvh * d..][..d], out);
                }
            }
        }
        cache.append(&k, &v, pos0, kvd);
        self.o.forward(&ctx, m)
    }
}

/// Key and value rows of position `j`: this call's fresh rows (j >= pos0), else the cache's.
fn kv_row<'a>(
    j: usize,
    pos0: usize,
    kvd: usize,
    k: &'a [f32],
    v: &'a [f32],
    cache: &'a LayerCache,
) -> (&'a [f32], &'a [f32]) {
    if j >= pos0 {
        let r = (j - pos0) * kvd;
        (&k[r..r + kvd], &v[r..r + kvd])
    } else {
        let r = cache.slot(j) * kvd;
        (&cache.k[r..r + kvd], &cache.v[r..r + kvd])
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(w: &mut GgufWeights, p: &str, cfg: &Config) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(
                w,
                &format!("{p}.ffn_gate.weight"),
                cfg.ffn,
                cfg.hidden,
                None,
            )?,
            up: Linear::load(w, &format!("{p}.ffn_up.weight"), cfg.ffn, cfg.hidden, None)?,
            down: Linear::load(
                w,
                &format!("{p}.ffn_down.weight"),
                cfg.hidden,
                cfg.ffn,
                None,
            )?,
        })
    }

    /// down(gelu_tanh(gate(x)) * up(x))
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let [mut g, u] = forward_shared([&self.gate, &self.up], x, m)?;
        ops::gelu_tanh(&mut g);
        g.iter_mut().zip(&u).for_each(|(a, b)| *a *= b);
        self.down.forward(&g, m)
    }
}

struct Layer {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    post_ffw_norm: RmsNorm,
}

impl Layer {
    fn load(w: &mut GgufWeights, i: usize, cfg: &Config) -> Result<Self> {
        let p = format!("blk.{i}");
        let h = cfg.hidden;
        Ok(Self {
            attn_norm: RmsNorm::load(w, &format!("{p}.attn_norm.weight"), h, cfg)?,
            attn: Attention::load(w, &p, i, cfg)?,
            post_attention_norm: RmsNorm::load(
                w,
                &format!("{p}.post_attention_norm.weight"),
                h,
                cfg,
            )?,
            ffn_norm: RmsNorm::load(w, &format!("{p}.ffn_norm.weight"), h, cfg)?,
            mlp: Mlp::load(w, &p, cfg)?,
            post_ffw_norm: RmsNorm::load(w, &format!("{p}.post_ffw_norm.weight"), h, cfg)?,
        })
    }

    /// Sandwich norms: x += post_attention_norm(attn(attn_norm(x))); x += post_ffw_norm(mlp(ffn_norm(x))).
    fn forward(
        &self,
        x: &mut [f32],
        m: usize,
        pos0: usize,
        cache: &mut LayerCache,
        rope: &Rope,
    ) -> Result<()> {
        let mut h = x.to_vec();
        self.attn_norm.forward(&mut h);
        let mut a = self.attn.forward(&h, m, pos0, cache, rope)?;
        self.post_attention_norm.forward(&mut a);
        x.iter_mut().zip(&a).for_each(|(v, d)| *v += d);
        h.copy_from_slice(x);
        self.ffn_norm.forward(&mut h);
        let mut f = self.mlp.forward(&h, m)?;
        self.post_ffw_norm.forward(&mut f);
        x.iter_mut().zip(&f).for_each(|(v, d)| *v += d);
        Ok(())
    }
}

pub struct GuardianModel {
    config: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    output_norm: RmsNorm,
    rope_local: Rope,
    rope_global: Rope,
}

impl GuardianModel {
    /// Parse the GGUF and prepare RoPE tables for `max_context` positions (capped at the checkpoint's context).
    pub fn from_gguf(bytes: &[u8], max_context: usize) -> Result<Self> {
        let mut w = GgufWeights::from_bytes(bytes)?;
        let config = Config::from_gguf(&w, max_context)?;
        let embed = Embedding::load(&mut w, &config)?;
        let layers = (0..config.layers)
            .map(|i| Layer::load(&mut w, i, &config))
            .collect::<Result<Vec<_>>>()?;
        let output_norm = RmsNorm::load(&mut w, "output_norm.weight", config.hidden, &config)?;
        let (d, n) = (config.head_dim, config.max_context);
        Ok(Self {
            rope_local: Rope::new(config.rope_local_base, d, n),
            rope_global: Rope::new(config.rope_global_base, d, n),
            config,
            embed,
            layers,
            output_norm,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An empty cache for one sequence (memory is taken as positions arrive).
    pub fn new_cache(&self) -> Cache {
        let ring = self.config.sliding_window.min(self.config.max_context);
        Cache {
            layers: (0..self.config.layers)
                .map(|i| LayerCache {
                    k: Vec::new(),
                    v: Vec::new(),
                    ring: (!self.config.is_global(i)).then_some(ring),
                })
                .collect(),
            pos: 0,
        }
    }

    /// Run `ids` at the next positions of `cache`; returns the final-normed hidden state of the last one.
    pub fn prefill(&self, cache: &mut Cache, ids: &[u32]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        if ids.is_empty() {
            return Err(GuardError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab) {
            return Err(GuardError::Input(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        if cache.pos + ids.len() > cfg.max_context {
            return Err(GuardError::Input(format!(
                "{} positions exceed the context of {}",
                cache.pos + ids.len(),
                cfg.max_context
            )));
        }
        let h = cfg.hidden;
        let mut last = Vec::new();
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let m = chunk.len();
            let mut x = self.embed.rows(chunk, h)?;
            let s = (h as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
            for (i, (layer, lc)) in self.layers.iter().zip(&mut cache.layers).enumerate() {
                let rope = if cfg.is_global(i) {
                    &self.rope_global
                } else {
                    &self.rope_local
                };
                layer.forward(&mut x, m, cache.pos, lc, rope)?;
            }
            cache.pos += m;
            last = x[(m - 1) * h..].to_vec();
        }
        self.output_norm.forward(&mut last);
        Ok(last)
    }

    /// One more token: `prefill` of a single id.
    pub fn step(&self, cache: &mut Cache, id: u32) -> Result<Vec<f32>> {
        self.prefill(cache, &[id])
    }

    /// Logits of the chosen token ids only (classification reads a handful of rows, not 262k): f32 dot products
    /// with the dequantized embedding rows.
    pub fn logits_for(&self, hidden: &[f32], ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.config.hidden;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(GuardError::Input(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        let rows = self.embed.rows(ids, h)?;
        Ok(rows.chunks_exact(h).map(|r| ops::dot(hidden, r)).collect())
    }

    /// Logits over the whole vocabulary (generation), on the quantized head.
    pub fn logits(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        self.embed.head(hidden)
    }
}
