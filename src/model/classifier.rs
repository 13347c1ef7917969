//! The fast classifier: a BERT encoder (multilingual-e5-small, post-LayerNorm, exact GELU, absolute positions from
//! 0, token type 0), mean pooling over the attention mask and one linear head with a sigmoid per label
//! (`unsafe`, then one per category). Linear layers run on candle's quantized matmul (`QMatMul`: AVX natively,
//! simd128 on wasm32); the word embedding stays quantized and is gathered row by row.
//! Twin of `training/classifier/model.py`; tensor names follow Hugging Face BERT.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::gguf::GgufWeights;
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
    fn from_gguf(w: &GgufWeights) -> Result<Self> {
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
}

fn dense(t: QTensor) -> Result<Tensor> {
    Ok(t.dequantize(&Device::Cpu)?)
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
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

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// y = x W^T + b with W quantized.
struct Linear {
    weight: QMatMul,
    bias: Tensor,
}

impl Linear {
    fn load(w: &mut GgufWeights, prefix: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let weight =
            QMatMul::from_qtensor(w.tensor(&format!("{prefix}.weight"), &[out_dim, in_dim])?)?;
        let bias = dense(w.tensor(&format!("{prefix}.bias"), &[out_dim])?)?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.weight.forward(x)?.broadcast_add(&self.bias)?)
    }
}

struct Embeddings {
    word: Arc<QTensor>,
    position: Tensor,
    token_type: Tensor,
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
            word: Arc::new(word),
            position,
            token_type: types.get(0)?,
            layer_norm: LayerNorm::load(w, "embeddings.LayerNorm", cfg)?,
        })
    }

    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let x = self.word.embedding(ids)?;
        let x = x
            .broadcast_add(&self.position.narrow(0, 0, t)?)?
            .broadcast_add(&self.token_type)?;
        self.layer_norm.forward(&x)
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
            query: Linear::load(w, &format!("{prefix}.query"), h, h)?,
            key: Linear::load(w, &format!("{prefix}.key"), h, h)?,
            value: Linear::load(w, &format!("{prefix}.value"), h, h)?,
            heads: cfg.heads,
            head_dim: h / cfg.heads,
        })
    }

    /// `bias`: additive mask (B, 1, 1, T), 0 on tokens and a large negative number on padding; None = no padding.
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?;
        Ok(ctx.transpose(1, 2)?.reshape((b, t, h))?)
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
            attention_output: Linear::load(
                w,
                &format!("{p}.attention.output.dense"),
                cfg.hidden,
                cfg.hidden,
            )?,
            attention_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), cfg)?,
            intermediate: Linear::load(w, &format!("{p}.intermediate.dense"), cfg.ffn, cfg.hidden)?,
            output: Linear::load(w, &format!("{p}.output.dense"), cfg.hidden, cfg.ffn)?,
            output_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), cfg)?,
        })
    }

    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let a = self
            .attention_output
            .forward(&self.attention.forward(x, bias)?)?;
        let x = self.attention_norm.forward(&(a + x)?)?;
        let f = self
            .output
            .forward(&self.intermediate.forward(&x)?.gelu_erf()?)?;
        self.output_norm.forward(&(f + x)?)
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
        let head = Linear::load(&mut w, "head", config.labels.len(), config.hidden)?;
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

    /// Logits (B, labels) for a batch of token-id sequences; shorter ones are padded and masked out.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let b = batch.len();
        let t = batch.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 {
            return Ok(Vec::new());
        }
        if t == 0 || t > self.config.max_position {
            return Err(GuardError::Input(format!(
                "sequence length {t} outside 1..={}",
                self.config.max_position
            )));
        }
        if let Some(&bad) = batch
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.config.vocab)
        {
            return Err(GuardError::Input(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        let padded = batch.iter().any(|s| s.len() != t);
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for s in batch {
            ids.extend(
                s.iter()
                    .copied()
                    .chain(std::iter::repeat(1).take(t - s.len())),
            );
            mask.extend((0..t).map(|i| if i < s.len() { 1f32 } else { 0f32 }));
        }
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu)?;
        let bias = if padded {
            Some(((mask.ones_like()? - &mask)? * -1e9)?.reshape((b, 1, 1, t))?)
        } else {
            None
        };
        let mut x = self.embeddings.forward(&ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, bias.as_ref())?;
        }
        // mean pooling over real tokens
        let m = mask.unsqueeze(2)?;
        let pooled = x.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
        let logits = self.head.forward(&pooled)?.to_dtype(DType::F32)?;
        Ok(logits.to_vec2::<f32>()?)
    }
}
