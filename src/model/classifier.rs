//! The fast classifier: a BERT encoder (multilingual-e5-small, post-LayerNorm, exact GELU, absolute positions from
//! 0, token type 0), mean pooling over the attention mask and one linear head with a sigmoid per label
//! (`unsafe`, then one per category). Linear layers with row-scaled Q8_0 weights run on our int8 kernels
//! (`backend/cpu/int8.rs`), other formats on candle's `QMatMul`; the word embedding stays quantized and is gathered
//! row by row; the rest works on plain `f32` rows (`backend/cpu/ops.rs`), one sequence at a time in attention,
//! so batches of different lengths need no padding.
//! The reply check is a branch (`ReplyBranch`): its own copy of the top encoder layers, each weight matrix stored as
//! the shared layer's plus a low-rank change, run on the hidden states after the layers it shares with the message
//! head, mean-pooled, one logit.
//! Twin of `training/classifier/model.py`; tensor names follow Hugging Face BERT (the branch's under `reply.`).

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::gguf::GgufWeights;
use super::linear::{forward_shared, Linear};
use crate::backend::cpu::ops;
use crate::error::{GuardError, Result};
use crate::manifest::REPLY_LABEL;

/// GGUF `slm_guard.format_version` this file reads.
const WEIGHTS_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_position: usize,
    pub layer_norm_eps: f64,
    /// The message head's labels (`unsafe`, then the categories).
    pub labels: Vec<String>,
    /// The reply branch, where the model has one.
    pub reply: Option<ReplyConfig>,
}

/// The reply branch's shape: the top `layers` encoder layers retrained, each weight matrix's change of rank `rank`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyConfig {
    pub layers: usize,
    pub rank: usize,
}

impl Config {
    pub(crate) fn from_gguf(w: &GgufWeights) -> Result<Self> {
        let version = w.u32("slm_guard.format_version")?;
        if version != WEIGHTS_VERSION {
            return Err(GuardError::Version {
                found: version,
                supported: WEIGHTS_VERSION,
            });
        }
        let cfg = Self {
            hidden: w.u32("slm_guard.hidden")? as usize,
            layers: w.u32("slm_guard.layers")? as usize,
            heads: w.u32("slm_guard.heads")? as usize,
            ffn: w.u32("slm_guard.ffn")? as usize,
            vocab: w.u32("slm_guard.vocab")? as usize,
            max_position: w.u32("slm_guard.max_pos")? as usize,
            layer_norm_eps: w.f32("slm_guard.layer_norm_eps")? as f64,
            labels: w.strings("slm_guard.labels")?,
            reply: match w.has("slm_guard.reply_layers") {
                true => Some(ReplyConfig {
                    layers: w.u32("slm_guard.reply_layers")? as usize,
                    rank: w.u32("slm_guard.reply_rank")? as usize,
                }),
                false => None,
            },
        };
        if cfg.labels.iter().any(|l| l == REPLY_LABEL) {
            // classifier 1.1.0 kept the reply check as a row of the message head
            return Err(GuardError::Weights(format!(
                "`{REPLY_LABEL}` as a head row is no longer read: re-export the reply check as a branch \
                 (training/classifier/reply_head.py export)"
            )));
        }
        let bad_reply = cfg
            .reply
            .as_ref()
            .is_some_and(|r| r.layers == 0 || r.layers > cfg.layers || r.rank == 0);
        if cfg.heads == 0 || cfg.hidden % cfg.heads != 0 || cfg.labels.is_empty() || bad_reply {
            return Err(GuardError::Weights(format!("inconsistent config {cfg:?}")));
        }
        Ok(cfg)
    }

    /// Every output label: the message head's, then `reply_unsafe` where the model has the reply branch (what the
    /// manifest lists).
    pub fn output_labels(&self) -> Vec<String> {
        let reply = self.reply.as_ref().map(|_| REPLY_LABEL.to_string());
        self.labels.iter().cloned().chain(reply).collect()
    }

    /// Every backend's input check: each sequence 1..=max_position tokens, every id inside the vocabulary.
    pub(crate) fn check_batch(&self, batch: &[Vec<u32>]) -> Result<()> {
        let max = self.max_position;
        if let Some(bad) = batch.iter().map(Vec::len).find(|&l| l == 0 || l > max) {
            return Err(GuardError::Input(format!(
                "sequence length {bad} outside 1..={max}"
            )));
        }
        if let Some(&bad) = batch
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.vocab)
        {
            return Err(GuardError::Input(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        Ok(())
    }
}

fn dense(t: QTensor) -> Result<Vec<f32>> {
    Ok(t.dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &mut GgufWeights, prefix: &str, cfg: &Config) -> Result<Self> {
        Ok(Self {
            weight: dense(w.tensor(&format!("{prefix}.weight"), &[cfg.hidden])?)?,
            bias: dense(w.tensor(&format!("{prefix}.bias"), &[cfg.hidden])?)?,
            eps: cfg.layer_norm_eps as f32,
        })
    }

    /// x <- LayerNorm(x + residual), row by row.
    fn forward(&self, x: &mut [f32], residual: Option<&[f32]>) {
        ops::add_layer_norm(
            x,
            residual,
            &self.weight,
            &self.bias,
            self.eps,
            self.weight.len(),
        );
    }
}

/// A BERT linear layer: weight `{prefix}.weight` and bias `{prefix}.bias`.
fn linear(w: &mut GgufWeights, prefix: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    let bias = dense(w.tensor(&format!("{prefix}.bias"), &[out_dim])?)?;
    Linear::load(w, &format!("{prefix}.weight"), out_dim, in_dim, Some(bias))
}

/// The reply branch's change to one of the shared linear layers: y = W x + b' + B^T (A x), with A (rank x in) and
/// B (rank x out) the stored Q8_0 factors and b' the branch's own bias. Applied after the shared layer's output
/// (W x + b), so the branch keeps no copy of W.
struct LinearDelta {
    /// A^T, in x rank: x A^T is one small matrix product per batch
    a_t: Vec<f32>,
    /// B, rank x out
    b: Vec<f32>,
    /// b' - b
    bias_shift: Vec<f32>,
    rank: usize,
}

impl LinearDelta {
    /// `shared`: the shared layer's name (its bias is read again to shift it), `prefix`: the branch's.
    fn load(
        w: &mut GgufWeights,
        shared: &str,
        prefix: &str,
        (out_dim, in_dim): (usize, usize),
        rank: usize,
    ) -> Result<Self> {
        let a = dense(w.tensor(&format!("{prefix}.delta_a"), &[rank, in_dim])?)?;
        let b = dense(w.tensor(&format!("{prefix}.delta_b"), &[rank, out_dim])?)?;
        let own = dense(w.tensor(&format!("{prefix}.bias"), &[out_dim])?)?;
        let base = dense(w.tensor(&format!("{shared}.bias"), &[out_dim])?)?;
        let mut a_t = vec![0f32; in_dim * rank];
        for (r, row) in a.chunks_exact(in_dim).enumerate() {
            for (i, v) in row.iter().enumerate() {
                a_t[i * rank + r] = *v;
            }
        }
        Ok(Self {
            a_t,
            b,
            bias_shift: own.iter().zip(&base).map(|(o, b)| o - b).collect(),
            rank,
        })
    }

    /// y (m x out, the shared layer's output for x) += B^T (A x) + (b' - b), row by row.
    fn apply(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (k, out) = (self.a_t.len() / self.rank, self.bias_shift.len());
        let mut low = vec![0f32; m * self.rank];
        ops::matmul(x, &self.a_t, m, k, self.rank, &mut low);
        let mut change = vec![0f32; m * out];
        ops::matmul(&low, &self.b, m, self.rank, out, &mut change);
        for (yr, cr) in y.chunks_exact_mut(out).zip(change.chunks_exact(out)) {
            for ((v, c), s) in yr.iter_mut().zip(cr).zip(&self.bias_shift) {
                *v += c + s;
            }
        }
    }
}

/// A shared linear layer's output, with the branch's change where it runs.
fn with_delta(mut y: Vec<f32>, delta: Option<&LinearDelta>, x: &[f32], m: usize) -> Vec<f32> {
    if let Some(d) = delta {
        d.apply(x, m, &mut y);
    }
    y
}

struct Embeddings {
    word: QTensor,
    position: Vec<f32>,
    token_type: Vec<f32>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(w: &mut GgufWeights, cfg: &Config) -> Result<Self> {
        let word = w.tensor(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab, cfg.hidden],
        )?;
        let position = dense(w.tensor(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position, cfg.hidden],
        )?)?;
        let types = dense(w.tensor("embeddings.token_type_embeddings.weight", &[2, cfg.hidden])?)?;
        Ok(Self {
            word,
            position,
            token_type: types[..cfg.hidden].to_vec(),
            layer_norm: LayerNorm::load(w, "embeddings.LayerNorm", cfg)?,
        })
    }

    /// Token rows for all sequences, concatenated: word (gathered from the quantized table) + position + type 0.
    fn forward(&self, batch: &[Vec<u32>], h: usize) -> Result<Vec<f32>> {
        let ids: Vec<u32> = batch.iter().flatten().copied().collect();
        let n = ids.len();
        let ids = Tensor::from_vec(ids, n, &Device::Cpu)?;
        let mut x = self.word.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        let mut row = 0;
        for seq in batch {
            for p in 0..seq.len() {
                let xr = &mut x[row * h..(row + 1) * h];
                for ((v, pv), tv) in xr
                    .iter_mut()
                    .zip(&self.position[p * h..(p + 1) * h])
                    .zip(&self.token_type)
                {
                    *v += pv + tv;
                }
                row += 1;
            }
        }
        self.layer_norm.forward(&mut x, None);
        Ok(x)
    }
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(w: &mut GgufWeights, prefix: &str, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden;
        Ok(Self {
            query: linear(w, &format!("{prefix}.query"), h, h)?,
            key: linear(w, &format!("{prefix}.key"), h, h)?,
            value: linear(w, &format!("{prefix}.value"), h, h)?,
            heads: cfg.heads,
            head_dim: h / cfg.heads,
        })
    }

    /// Scaled dot-product attention of every sequence over its own tokens only (no padding, so no mask); `delta`:
    /// the reply branch's changes to query, key and value.
    fn forward(&self, x: &[f32], lens: &[usize], delta: Option<&LayerDelta>) -> Result<Vec<f32>> {
        let m: usize = lens.iter().sum();
        let h = self.heads * self.head_dim;
        let [q, k, v] = forward_shared([&self.query, &self.key, &self.value], x, m)?;
        let (q, k, v) = (
            with_delta(q, delta.map(|d| &d.query), x, m),
            with_delta(k, delta.map(|d| &d.key), x, m),
            with_delta(v, delta.map(|d| &d.value), x, m),
        );
        let (d, scale) = (self.head_dim, 1.0 / (self.head_dim as f32).sqrt());
        let mut ctx = vec![0f32; m * h];
        // one head of one sequence at a time, as two small matrix products: scores = Q K^T and ctx = P V, keys
        // padded to a multiple of 8 with zeros (their scores are set to probability 0 before P V)
        let (mut qh, mut kt, mut vh, mut scores, mut out) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut start = 0;
        for &len in lens {
            let padded = len.next_multiple_of(8);
            for head in 0..self.heads {
                let cols = head * d..(head + 1) * d;
                qh.clear();
                kt.clear();
                kt.resize(d * padded, 0.0);
                vh.clear();
                vh.resize(padded * d, 0.0);
                for j in 0..len {
                    let row = (start + j) * h;
                    qh.extend_from_slice(&q[row..][cols.clone()]);
                    for (c, &kv) in k[row..][cols.clone()].iter().enumerate() {
                        kt[c * padded + j] = kv;
                    }
                    vh[j * d..(j + 1) * d].copy_from_slice(&v[row..][cols.clone()]);
                }
                scores.resize(len * padded, 0.0);
                ops::matmul(&qh, &kt, len, d, padded, &mut scores);
                for row in scores.chunks_exact_mut(padded) {
                    let (real, pad) = row.split_at_mut(len);
                    for s in real.iter_mut() {
                        *s *= scale;
                    }
                    ops::softmax(real);
                    pad.fill(0.0);
                }
                out.resize(len * d, 0.0);
                ops::matmul(&scores, &vh, len, padded, d, &mut out);
                for (j, o) in out.chunks_exact(d).enumerate() {
                    ctx[(start + j) * h..][cols.clone()].copy_from_slice(o);
                }
            }
            start += len;
        }
        Ok(ctx)
    }
}

struct Layer {
    attention: SelfAttention,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(w: &mut GgufWeights, i: usize, cfg: &Config) -> Result<Self> {
        let p = format!("encoder.layer.{i}");
        Ok(Self {
            attention: SelfAttention::load(w, &format!("{p}.attention.self"), cfg)?,
            attention_output: linear(
                w,
                &format!("{p}.attention.output.dense"),
                cfg.hidden,
                cfg.hidden,
            )?,
            attention_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), cfg)?,
            intermediate: linear(w, &format!("{p}.intermediate.dense"), cfg.ffn, cfg.hidden)?,
            output: linear(w, &format!("{p}.output.dense"), cfg.hidden, cfg.ffn)?,
            output_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), cfg)?,
        })
    }

    /// Post-LayerNorm BERT block, in place on `x` (m x hidden); with `delta`, the reply branch's version of it.
    fn forward(&self, x: &mut Vec<f32>, lens: &[usize], delta: Option<&LayerDelta>) -> Result<()> {
        let m: usize = lens.iter().sum();
        let ctx = self.attention.forward(x, lens, delta)?;
        let mut a = self.attention_output.forward(&ctx, m)?;
        a = with_delta(a, delta.map(|d| &d.attention_output), &ctx, m);
        let norm = delta.map_or(&self.attention_norm, |d| &d.attention_norm);
        norm.forward(&mut a, Some(x));
        let mut hidden = self.intermediate.forward(&a, m)?;
        hidden = with_delta(hidden, delta.map(|d| &d.intermediate), &a, m);
        ops::gelu_erf(&mut hidden);
        let mut f = self.output.forward(&hidden, m)?;
        f = with_delta(f, delta.map(|d| &d.output), &hidden, m);
        let norm = delta.map_or(&self.output_norm, |d| &d.output_norm);
        norm.forward(&mut f, Some(&a));
        *x = f;
        Ok(())
    }
}

/// The reply branch's version of one encoder layer: a change to each linear layer, its own layer norms.
struct LayerDelta {
    query: LinearDelta,
    key: LinearDelta,
    value: LinearDelta,
    attention_output: LinearDelta,
    attention_norm: LayerNorm,
    intermediate: LinearDelta,
    output: LinearDelta,
    output_norm: LayerNorm,
}

impl LayerDelta {
    fn load(w: &mut GgufWeights, i: usize, cfg: &Config, rank: usize) -> Result<Self> {
        let (h, f) = (cfg.hidden, cfg.ffn);
        let mut delta = |name: &str, shape| {
            LinearDelta::load(
                w,
                &format!("encoder.layer.{i}.{name}"),
                &format!("reply.encoder.layer.{i}.{name}"),
                shape,
                rank,
            )
        };
        let (query, key, value) = (
            delta("attention.self.query", (h, h))?,
            delta("attention.self.key", (h, h))?,
            delta("attention.self.value", (h, h))?,
        );
        let attention_output = delta("attention.output.dense", (h, h))?;
        let (intermediate, output) = (
            delta("intermediate.dense", (f, h))?,
            delta("output.dense", (h, f))?,
        );
        let p = format!("reply.encoder.layer.{i}");
        Ok(Self {
            query,
            key,
            value,
            attention_output,
            attention_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), cfg)?,
            intermediate,
            output,
            output_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), cfg)?,
        })
    }
}

/// The reply check: from layer `start` on, the shared layers with the branch's changes, then mean pooling and a
/// one-logit head (`reply.head`).
struct ReplyBranch {
    start: usize,
    layers: Vec<LayerDelta>,
    head: Linear,
}

impl ReplyBranch {
    fn load(w: &mut GgufWeights, cfg: &Config, reply: &ReplyConfig) -> Result<Self> {
        let start = cfg.layers - reply.layers;
        Ok(Self {
            start,
            layers: (start..cfg.layers)
                .map(|i| LayerDelta::load(w, i, cfg, reply.rank))
                .collect::<Result<Vec<_>>>()?,
            head: linear(w, "reply.head", 1, cfg.hidden)?,
        })
    }
}

/// Mean of each sequence's token rows (`lens` tokens each, concatenated in `x`).
fn mean_pool(x: &[f32], lens: &[usize], h: usize) -> Vec<f32> {
    let mut pooled = vec![0f32; lens.len() * h];
    let mut row = 0;
    for (s, &len) in lens.iter().enumerate() {
        let out = &mut pooled[s * h..(s + 1) * h];
        for t in row..row + len {
            ops::axpy(1.0, &x[t * h..(t + 1) * h], out);
        }
        out.iter_mut().for_each(|v| *v /= len as f32);
        row += len;
    }
    pooled
}

pub struct Classifier {
    config: Config,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    head: Linear,
    reply: Option<ReplyBranch>,
}

impl Classifier {
    pub fn from_gguf(bytes: &[u8]) -> Result<Self> {
        let mut w = GgufWeights::from_bytes(bytes)?;
        let config = Config::from_gguf(&w)?;
        let embeddings = Embeddings::load(&mut w, &config)?;
        let layers = (0..config.layers)
            .map(|i| Layer::load(&mut w, i, &config))
            .collect::<Result<Vec<_>>>()?;
        let head = linear(&mut w, "head", config.labels.len(), config.hidden)?;
        let reply = config
            .reply
            .as_ref()
            .map(|r| ReplyBranch::load(&mut w, &config, r))
            .transpose()?;
        Ok(Self {
            config,
            embeddings,
            layers,
            head,
            reply,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Message logits (one row per sequence, one column per message label) for token-id sequences of any lengths.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.head.forward(&self.pooled(batch, None)?, batch.len())?;
        let n = self.head.rows();
        Ok(logits.chunks_exact(n).map(<[f32]>::to_vec).collect())
    }

    /// The reply check's logit for each sequence: the shared lower layers, then the branch (as much work as
    /// `forward`). An error for a model without the branch.
    pub fn reply_logits(&self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
        let branch = self.reply.as_ref().ok_or_else(|| {
            GuardError::Weights(format!("this classifier has no `{REPLY_LABEL}` branch"))
        })?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        branch
            .head
            .forward(&self.pooled(batch, Some(branch))?, batch.len())
    }

    /// Mean-pooled final hidden states (one row per sequence) of the encoder, or with `branch`, of the reply
    /// branch: the shared layers, then the branch's changes from its first layer on.
    fn pooled(&self, batch: &[Vec<u32>], branch: Option<&ReplyBranch>) -> Result<Vec<f32>> {
        self.config.check_batch(batch)?;
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let h = self.config.hidden;
        let mut x = self.embeddings.forward(batch, h)?;
        let start = branch.map_or(self.layers.len(), |b| b.start);
        for (i, layer) in self.layers.iter().enumerate() {
            let delta = branch.and_then(|b| b.layers.get(i.checked_sub(start)?));
            layer.forward(&mut x, &lens, delta)?;
        }
        Ok(mean_pool(&x, &lens, h))
    }
}
