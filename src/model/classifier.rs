//! The fast classifier: a BERT encoder (multilingual-e5-small, post-LayerNorm, exact GELU, absolute positions from
//! 0, token type 0), mean pooling over the attention mask and one linear head with a sigmoid per label
//! (`unsafe`, then one per category). Linear layers with row-scaled Q8_0 weights run on our int8 kernels
//! (`backend/cpu/int8.rs`), other formats on candle's `QMatMul`; the word embedding stays quantized and is gathered
//! row by row; the rest works on plain `f32` rows (`backend/cpu/ops.rs`), one sequence at a time in attention,
//! so batches of different lengths need no padding.
//! Twin of `training/classifier/model.py`; tensor names follow Hugging Face BERT.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::gguf::GgufWeights;
use super::linear::{forward_shared, Linear};
use crate::backend::cpu::ops;
use crate::error::{GuardError, Result};

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
    pub labels: Vec<String>,
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
        };
        if cfg.heads == 0 || cfg.hidden % cfg.heads != 0 || cfg.labels.is_empty() {
            return Err(GuardError::Weights(format!("inconsistent config {cfg:?}")));
        }
        Ok(cfg)
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

    /// Scaled dot-product attention of every sequence over its own tokens only (no padding, so no mask).
    fn forward(&self, x: &[f32], lens: &[usize]) -> Result<Vec<f32>> {
        let m: usize = lens.iter().sum();
        let h = self.heads * self.head_dim;
        let [q, k, v] = forward_shared([&self.query, &self.key, &self.value], x, m)?;
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

    /// Post-LayerNorm BERT block, in place on `x` (m x hidden).
    fn forward(&self, x: &mut Vec<f32>, lens: &[usize]) -> Result<()> {
        let m: usize = lens.iter().sum();
        let ctx = self.attention.forward(x, lens)?;
        let mut a = self.attention_output.forward(&ctx, m)?;
        self.attention_norm.forward(&mut a, Some(x));
        let mut hidden = self.intermediate.forward(&a, m)?;
        ops::gelu_erf(&mut hidden);
        let mut f = self.output.forward(&hidden, m)?;
        self.output_norm.forward(&mut f, Some(&a));
        *x = f;
        Ok(())
    }
}

pub struct Classifier {
    config: Config,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    head: Linear,
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
        Ok(Self {
            config,
            embeddings,
            layers,
            head,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Logits (one row per sequence, one column per label) for token-id sequences of any lengths.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.config.check_batch(batch)?;
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let h = self.config.hidden;
        let mut x = self.embeddings.forward(batch, h)?;
        for layer in &self.layers {
            layer.forward(&mut x, &lens)?;
        }
        // mean pooling per sequence, then the head
        let mut pooled = vec![0f32; batch.len() * h];
        let mut row = 0;
        for (s, &len) in lens.iter().enumerate() {
            let out = &mut pooled[s * h..(s + 1) * h];
            for t in row..row + len {
                ops::axpy(1.0, &x[t * h..(t + 1) * h], out);
            }
            out.iter_mut().for_each(|v| *v /= len as f32);
            row += len;
        }
        let logits = self.head.forward(&pooled, batch.len())?;
        let n = self.head.rows();
        Ok(logits.chunks_exact(n).map(<[f32]>::to_vec).collect())
    }
}
