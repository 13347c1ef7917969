//! Model definitions (one file per model family) and the GGUF weight reader they share.

pub mod classifier;
mod gguf;

pub use classifier::{Classifier, Config as ClassifierConfig};
pub use gguf::GgufWeights;
