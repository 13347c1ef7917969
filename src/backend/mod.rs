//! Compute backends: each runs the classifier's forward pass on token windows and returns logits.
//! `cpu` uses candle's quantized kernels; a `webgpu` backend (our own WGSL kernels) computes the same function.

pub mod cpu;
#[cfg(feature = "webgpu")]
pub mod webgpu;

use crate::error::Result;

pub trait Backend {
    /// Short name reported in verdicts (`"cpu"`, `"webgpu"`).
    fn name(&self) -> &'static str;
    /// Logits (one row per sequence, one column per label) for a batch of token-id sequences.
    fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}
