//! CPU backend: the classifier with candle's tensor ops, our int8 matmul for row-scaled Q8_0 weights
//! (`int8.rs`: simd128 on wasm32, AVX2 or AVX-512 VNNI natively), f32 ops (`ops.rs`) and candle's quantized matmul
//! for any other weight format.

pub mod int8;
pub mod ops;

use super::Backend;
use crate::error::Result;
use crate::model::Classifier;

pub struct CpuBackend {
    model: Classifier,
}

impl CpuBackend {
    pub fn new(model: Classifier) -> Self {
        Self { model }
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.model.forward(batch)
    }
}
