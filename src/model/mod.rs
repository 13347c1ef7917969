//! Model definitions (one file per model family) and the GGUF weight reader they share.

pub mod classifier;
mod gguf;
pub mod guardian;

pub use classifier::{Classifier, Config as ClassifierConfig};
pub use gguf::GgufWeights;
pub use guardian::{Cache as GuardianCache, Config as GuardianConfig, GuardianModel};
