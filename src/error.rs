//! One error type for the whole crate. Every variant has a stable `code()` that the JS API exposes as
//! `error.code`, so callers can branch on it without parsing messages.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GuardError {
    /// A model file's sha256 differs from the manifest: tampered, truncated or the wrong file.
    #[error("model file `{file}` failed its integrity check: sha256 {actual}, manifest expects {expected}")]
    Integrity {
        file: String,
        expected: String,
        actual: String,
    },
    /// The manifest is missing, not JSON, or lacks a field.
    #[error("invalid model manifest: {0}")]
    Manifest(String),
    /// The manifest or weights are of a format version this runtime does not read.
    #[error("unsupported model format version {found} (this runtime reads version {supported})")]
    Version { found: u32, supported: u32 },
    /// The weights file is not a readable GGUF for this architecture (truncated, missing tensor, wrong shape).
    #[error("invalid model weights: {0}")]
    Weights(String),
    #[error("invalid tokenizer: {0}")]
    Tokenizer(String),
    #[error("input too long: {len} bytes, the limit is {limit} bytes (set `max_input_bytes` to change it)")]
    InputTooLong { len: usize, limit: usize },
    /// The guardian reads a query in one pass, so a longer one is refused rather than silently truncated.
    #[error("input too long: {tokens} tokens, the model reads at most {limit}")]
    TooManyTokens { tokens: usize, limit: usize },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("invalid policy: {0}")]
    Policy(String),
    #[error("backend `{0}` is not available: {1}")]
    BackendUnavailable(String, String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("model was disposed")]
    Disposed,
    #[error("i/o error: {0}")]
    Io(String),
}

impl GuardError {
    /// Stable machine-readable code (part of the public API: never rename).
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::Integrity { .. } => "MODEL_INTEGRITY",
            GuardError::Manifest(_) => "MODEL_MANIFEST",
            GuardError::Version { .. } => "MODEL_VERSION",
            GuardError::Weights(_) => "MODEL_WEIGHTS",
            GuardError::Tokenizer(_) => "MODEL_TOKENIZER",
            GuardError::InputTooLong { .. } | GuardError::TooManyTokens { .. } => "INPUT_TOO_LONG",
            GuardError::Input(_) => "INVALID_INPUT",
            GuardError::Policy(_) => "INVALID_POLICY",
            GuardError::BackendUnavailable(..) => "BACKEND_UNAVAILABLE",
            GuardError::Inference(_) => "INFERENCE_FAILED",
            GuardError::Disposed => "DISPOSED",
            GuardError::Io(_) => "IO",
        }
    }
}

impl From<candle_core::Error> for GuardError {
    fn from(e: candle_core::Error) -> Self {
        GuardError::Inference(e.to_string())
    }
}

impl From<std::io::Error> for GuardError {
    fn from(e: std::io::Error) -> Self {
        GuardError::Io(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, GuardError>;
