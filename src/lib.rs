//! slm-guard: a bilingual (Korean + English) safety guard that checks a chat message on the client before it is
//! sent to a large model. See ARCHITECTURE.md for the map of this crate.

pub mod backend;
pub mod cascade;
mod clock;
pub mod error;
pub mod guard;
pub mod guardian;
pub mod helpline;
pub mod manifest;
pub mod model;
pub mod policy;
pub mod reply;
pub mod reply_gate;
pub mod text;
pub mod tokenizer;
pub mod verdict;

pub use cascade::Band;
pub use error::{GuardError, Result};
pub use guard::{BackendChoice, Guard, ModelFiles, ModelInfo};
pub use guardian::{Generation, Guardian, GuardianScore, RespondOptions, Response, StopReason};
pub use policy::{Action, FailMode, Policy};
pub use reply_gate::ReplyGate;
pub use verdict::{CascadeInfo, DecidedBy, ReplyCheck, Scores, Verdict};

#[cfg(target_arch = "wasm32")]
mod wasm;
