//! y = x W^T (+ b) with W quantized, for both models: row-scaled Q8_0 weights (our exports) run on our int8
//! kernels (`backend/cpu/int8.rs`), any other format (e.g. the base Gemma GGUF's Q4_K / Q6_K / per-block Q8_0) on
//! candle's `QMatMul`, so other exports keep working.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

use super::gguf::GgufWeights;
use crate::backend::cpu::int8::{forward_shared_input, Int8Linear};
use crate::error::Result;

pub(crate) enum Linear {
    Int8(Int8Linear),
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
        rows: usize,
        k: usize,
    },
}

impl Linear {
    /// Tensor `name` (out_dim x in_dim), with `bias` (BERT) or without (Gemma).
    pub(crate) fn load(
        w: &mut GgufWeights,
        name: &str,
        out_dim: usize,
        in_dim: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        // straight from the file's bytes: no intermediate copy of the weights (wasm memory never shrinks)
        if let (GgmlDType::Q8_0, data) = w.raw(name, &[out_dim, in_dim])? {
            let b = bias.clone().unwrap_or_else(|| vec![0.0; out_dim]);
            if let Some(lin) = Int8Linear::from_q8_0_blocks(data, out_dim, in_dim, b) {
                return Ok(Self::Int8(lin));
            }
        }
        Ok(Self::Quantized {
            weight: QMatMul::from_qtensor(w.tensor(name, &[out_dim, in_dim])?)?,
            bias: bias
                .map(|b| Tensor::from_vec(b, out_dim, &Device::Cpu))
                .transpose()?,
            rows: out_dim,
            k: in_dim,
        })
    }

    /// `x`: m x in_dim, returns m x out_dim.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Self::Int8(lin) => Ok(lin.forward(x, m)),
            Self::Quantized {
                weight, bias, k, ..
            } => {
                let y = weight.forward(&Tensor::from_slice(x, (m, *k), &Device::Cpu)?)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                Ok(y.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }

    pub(crate) fn rows(&self) -> usize {
        match self {
            Self::Int8(lin) => lin.rows(),
            Self::Quantized { rows, .. } => *rows,
        }
    }
}

/// Several layers on one input (query / key / value, gate / up): with int8 weights the input is quantized once.
pub(crate) fn forward_shared<const N: usize>(
    layers: [&Linear; N],
    x: &[f32],
    m: usize,
) -> Result<[Vec<f32>; N]> {
    let int8: Option<Vec<&Int8Linear>> = layers
        .iter()
        .map(|l| match l {
            Linear::Int8(lin) => Some(lin),
            Linear::Quantized { .. } => None,
        })
        .collect();
    if let Some(Ok(int8)) = int8.map(<[&Int8Linear; N]>::try_from) {
        return Ok(forward_shared_input(int8, x, m));
    }
    let mut out = Vec::with_capacity(N);
    for l in layers {
        out.push(l.forward(x, m)?);
    }
    Ok(out.try_into().expect("one output per layer"))
}
