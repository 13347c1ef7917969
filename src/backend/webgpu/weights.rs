//! Upload the classifier's GGUF weights once. Linear weights stay 8-bit: each Q8_0 block's 32 int8 values are
//! packed 4 per u32 and its f16 scale widened to f32 in a side array (4-aligned, which 34-byte blocks are not);
//! the word embedding is uploaded byte for byte in its GGUF encoding and decoded in the shader. Small tensors
//! (LayerNorm, biases, position and type tables) are dequantized to f32 here.

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use wgpu::util::DeviceExt;

use super::device::Gpu;
use super::kernels::MAX_HEAD_DIM;
use crate::error::{GuardError, Result};
use crate::model::guardian::Rope;
use crate::model::{ClassifierConfig, GgufWeights};

/// The model's config (read and checked by the CPU model's own reader), plus this backend's own limit.
pub fn config(w: &GgufWeights) -> Result<ClassifierConfig> {
    let cfg = ClassifierConfig::from_gguf(w)?;
    if cfg.hidden / cfg.heads > MAX_HEAD_DIM {
        return Err(GuardError::Weights(format!(
            "webgpu backend: head size {} above {MAX_HEAD_DIM}",
            cfg.hidden / cfg.heads
        )));
    }
    Ok(cfg)
}

/// Shader code (`embed.wgsl` `fmt`) of a word-embedding encoding the gather kernel decodes.
pub fn embedding_format(dtype: GgmlDType) -> Option<u32> {
    match dtype {
        GgmlDType::Q4_0 => Some(0),
        GgmlDType::Q8_0 => Some(1),
        GgmlDType::F16 => Some(2),
        GgmlDType::F32 => Some(3),
        _ => None,
    }
}

/// Q8_0 blocks (f16 scale + 32 x i8) of an `n x k` matrix -> (int8 values, 4 per u32, as bytes; one f32 scale
/// per block). `None` unless `k` is a whole number of blocks and the size matches.
pub fn repack_q8_0(blocks: &[u8], n: usize, k: usize) -> Option<(Vec<u8>, Vec<f32>)> {
    if k % 32 != 0 || blocks.len() != n * k / 32 * 34 {
        return None;
    }
    let mut values = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k / 32);
    for b in blocks.chunks_exact(34) {
        scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        values.extend_from_slice(&b[2..]);
    }
    Some((values, scales))
}

/// The decoder's RoPE table as `rope.wgsl` reads it: the CPU's own cos values, then its sin values (`sin_off` =
/// half the length), so both paths rotate by the same f64-computed angles.
pub fn rope_table(rope: &Rope) -> Vec<f32> {
    rope.cos.iter().chain(&rope.sin).copied().collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A storage buffer holding `bytes` (padded to a multiple of 4 and at least one word, as bindings require).
pub fn storage(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let mut padded;
    let contents = if bytes.len() % 4 != 0 || bytes.is_empty() {
        padded = bytes.to_vec();
        padded.resize(bytes.len().max(4).next_multiple_of(4), 0);
        &padded[..]
    } else {
        bytes
    };
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        })
}

/// A linear weight as stored: Q8_0 blocks (uploaded as int8 + scales) or an unquantized matrix (F32/F16/BF16,
/// small ones such as the head), widened to f32.
pub enum LinearWeight<'a> {
    Q8_0(&'a [u8]),
    Dense(Vec<f32>),
}

/// y = x W^T + b on the GPU: `wq` int8 rows (or f32 rows when `dense`), `aux` = per-block scales then the bias.
pub struct QLinear {
    pub wq: wgpu::Buffer,
    pub aux: wgpu::Buffer,
    pub n: u32,
    pub k: u32,
    pub dense: bool,
}

impl QLinear {
    /// Offset of the bias in `aux`.
    pub fn bias_off(&self) -> u32 {
        if self.dense {
            0
        } else {
            self.n * self.k / 32
        }
    }

    /// Upload one or more matrices with the same `k` stacked along `n` (q, k and v become one matmul).
    pub fn upload(
        gpu: &Gpu,
        label: &str,
        parts: &[(LinearWeight, usize, Vec<f32>)],
        k: usize,
    ) -> Result<Self> {
        let (mut values, mut scales, mut bias) = (Vec::new(), Vec::new(), Vec::new());
        let dense = matches!(parts.first(), Some((LinearWeight::Dense(_), ..)));
        for (weight, n, b) in parts {
            match weight {
                LinearWeight::Q8_0(blocks) if !dense => {
                    let (v, s) = repack_q8_0(blocks, *n, k).ok_or_else(|| {
                        GuardError::Weights(format!(
                            "`{label}`: Q8_0 data does not match {n} x {k}"
                        ))
                    })?;
                    values.extend(v);
                    scales.extend(s);
                }
                LinearWeight::Dense(w) if dense => values.extend(f32_bytes(w)),
                _ => {
                    return Err(GuardError::Weights(format!(
                        "`{label}`: parts stored in different formats"
                    )))
                }
            }
            bias.extend_from_slice(b);
        }
        let n = bias.len();
        scales.extend(bias);
        Ok(Self {
            wq: storage(gpu, label, &values),
            aux: storage(gpu, label, &f32_bytes(&scales)),
            n: n as u32,
            k: k as u32,
            dense,
        })
    }
}

pub struct Layer {
    pub qkv: QLinear,
    pub attention_output: QLinear,
    pub intermediate: QLinear,
    pub output: QLinear,
    /// (weight, bias) offsets in `Weights::tables`
    pub attention_norm: (u32, u32),
    pub output_norm: (u32, u32),
}

pub struct Weights {
    /// word embedding in its GGUF encoding, and its `embedding_format` code
    pub word: wgpu::Buffer,
    pub word_format: u32,
    /// every small f32 tensor: position table at 0, then the type-0 row and the LayerNorm parameters
    pub tables: wgpu::Buffer,
    pub type_off: u32,
    pub embedding_norm: (u32, u32),
    pub layers: Vec<Layer>,
    pub head: QLinear,
}

/// Small tensors dequantized to f32 and appended to one table; returns the offset.
struct Tables(Vec<f32>);

impl Tables {
    fn push(&mut self, w: &mut GgufWeights, name: &str, shape: &[usize]) -> Result<u32> {
        let off = self.0.len() as u32;
        self.0.extend(dense(w, name, shape)?);
        Ok(off)
    }

    fn norm(&mut self, w: &mut GgufWeights, prefix: &str, h: usize) -> Result<(u32, u32)> {
        Ok((
            self.push(w, &format!("{prefix}.weight"), &[h])?,
            self.push(w, &format!("{prefix}.bias"), &[h])?,
        ))
    }
}

pub(super) fn dense(w: &mut GgufWeights, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(w.tensor(name, shape)?
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// A linear weight (raw Q8_0 blocks, or an unquantized matrix widened to f32) and its bias; a clear error for any
/// other quantization.
fn linear<'a>(
    w: &mut GgufWeights<'a>,
    prefix: &str,
    n: usize,
    k: usize,
) -> Result<(LinearWeight<'a>, usize, Vec<f32>)> {
    let name = format!("{prefix}.weight");
    let weight = match w.raw(&name, &[n, k])? {
        (GgmlDType::Q8_0, blocks) => LinearWeight::Q8_0(blocks),
        (GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16, _) => {
            LinearWeight::Dense(dense(w, &name, &[n, k])?)
        }
        (dtype, _) => {
            return Err(GuardError::Weights(format!(
            "webgpu backend: `{name}` is {dtype:?}; it reads Q8_0 or unquantized linear weights \
                 (use the CPU backend)"
        )))
        }
    };
    Ok((weight, n, dense(w, &format!("{prefix}.bias"), &[n])?))
}

impl Weights {
    pub fn upload(gpu: &Gpu, w: &mut GgufWeights, cfg: &ClassifierConfig) -> Result<Self> {
        let h = cfg.hidden;
        let name = "embeddings.word_embeddings.weight";
        let (dtype, word) = w.raw(name, &[cfg.vocab, h])?;
        let word_format = embedding_format(dtype).ok_or_else(|| {
            GuardError::Weights(format!(
                "webgpu backend: `{name}` is {dtype:?}; it reads Q4_0, Q8_0, F16 or F32"
            ))
        })?;
        let max_binding = gpu.device.limits().max_storage_buffer_binding_size as usize;
        if word.len() > max_binding {
            return Err(GuardError::BackendUnavailable(
                "webgpu".into(),
                format!(
                    "word embedding of {} bytes exceeds the device's storage binding limit",
                    word.len()
                ),
            ));
        }
        let mut t = Tables(Vec::new());
        t.push(
            w,
            "embeddings.position_embeddings.weight",
            &[cfg.max_position, h],
        )?;
        let type_off = t.push(w, "embeddings.token_type_embeddings.weight", &[2, h])?;
        let embedding_norm = t.norm(w, "embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            let a = format!("{p}.attention.self");
            let qkv = [
                linear(w, &format!("{a}.query"), h, h)?,
                linear(w, &format!("{a}.key"), h, h)?,
                linear(w, &format!("{a}.value"), h, h)?,
            ];
            layers.push(Layer {
                qkv: QLinear::upload(gpu, &format!("{a}.qkv"), &qkv, h)?,
                attention_output: QLinear::upload(
                    gpu,
                    &format!("{p}.attention.output.dense"),
                    &[linear(w, &format!("{p}.attention.output.dense"), h, h)?],
                    h,
                )?,
                intermediate: QLinear::upload(
                    gpu,
                    &format!("{p}.intermediate.dense"),
                    &[linear(w, &format!("{p}.intermediate.dense"), cfg.ffn, h)?],
                    h,
                )?,
                output: QLinear::upload(
                    gpu,
                    &format!("{p}.output.dense"),
                    &[linear(w, &format!("{p}.output.dense"), h, cfg.ffn)?],
                    cfg.ffn,
                )?,
                attention_norm: t.norm(w, &format!("{p}.attention.output.LayerNorm"), h)?,
                output_norm: t.norm(w, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let head = QLinear::upload(gpu, "head", &[linear(w, "head", cfg.labels.len(), h)?], h)?;
        Ok(Self {
            word: storage(gpu, name, word),
            word_format,
            tables: storage(gpu, "tables", &f32_bytes(&t.0)),
            type_off,
            embedding_norm,
            layers,
            head,
        })
    }
}
