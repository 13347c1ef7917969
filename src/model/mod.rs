//! Model definitions (one file per model family) and what they share: the GGUF weight reader and the
//! quantized linear layer.

pub mod classifier;
mod gguf;
pub mod guardian;
mod linear;

pub use classifier::{Classifier, Config as ClassifierConfig};
pub use gguf::GgufWeights;
pub use guardian::{Cache as GuardianCache, Config as GuardianConfig, GuardianModel};
