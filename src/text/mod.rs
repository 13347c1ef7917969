//! Text preparation before tokenization.

mod normalize;

pub use normalize::normalize;
