//! CPU backend: the classifier on candle's quantized matmul (AVX/NEON natively, simd128 on wasm32).

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
