//! The verdict returned for each message, shaped like the OpenAI moderation result so users recognise it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::GuardError;
use crate::policy::{Action, FailMode, ResolvedPolicy};
use crate::reply::safe_reply;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The message is unsafe under the policy (overall score or any category at or above its threshold).
    pub flagged: bool,
    /// Probability that the message is unsafe.
    pub score: f32,
    /// Highest-scoring flagged category, if flagged.
    pub category: Option<String>,
    pub categories: BTreeMap<String, bool>,
    pub category_scores: BTreeMap<String, f32>,
    /// What the caller should do: `block`, `flag` (let it through, but record it) or `allow`.
    pub action: Action,
    /// `name@version` of the model that decided.
    pub model: String,
    pub backend: String,
    pub timing_ms: f64,
    /// Tokens read and windows run (long inputs are split into overlapping windows; the worst one decides).
    pub tokens: usize,
    pub windows: usize,
    /// Language of the message (`ko` or `en`), used for the reply.
    pub lang: String,
    /// When the action is `block`: a safe reply in the message's language to show instead of sending it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Set when the model could not run and the policy's fail mode decided instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<VerdictError>,
    /// Which model's scores decided: the fast `classifier`, or the generative `guardian` (the cascade hands it
    /// the classifier's uncertain scores and it re-decides them, alone or combined with the classifier's score as
    /// `cascade.fusion` says; `Guardian::classify` always says `guardian`).
    #[serde(default)]
    pub decided_by: DecidedBy,
    /// Present when the cascade ran (`cascade::refine`): the classifier's score, the guardian's (when it ran)
    /// and the band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeInfo>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    #[default]
    Classifier,
    Guardian,
}

/// How the cascade reached a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeInfo {
    /// The classifier's `score` (P(unsafe)).
    pub classifier_score: f32,
    /// `name@version` of the classifier.
    pub classifier_model: String,
    /// The guardian's P(unsafe), when the classifier's score was inside the band and the guardian ran.
    pub guardian_score: Option<f32>,
    /// Scores strictly between `low` and `high` go to the guardian.
    pub band: crate::cascade::Band,
    /// Set when the guardian was asked but could not answer (e.g. INPUT_TOO_LONG: it reads at most 512 tokens);
    /// the classifier's verdict stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_error: Option<VerdictError>,
    /// The weights that combined both scores into the verdict's `score` (the guardian manifest's
    /// `cascade_fusion`, for the message's language); absent when the guardian's score alone decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::cascade::FusionWeights>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictError {
    pub code: String,
    pub message: String,
}

/// The reply check's answer for one guardian reply (`Guard::check_reply`): what the reply gate decides on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyCheck {
    /// The reply is unsafe to show: the gate would withhold it.
    pub flagged: bool,
    /// P(unsafe to show) from the classifier's reply check (`reply_unsafe`) and its threshold under the policy;
    /// both absent for a classifier without the reply check, whose message verdict decides instead.
    pub score: Option<f32>,
    pub threshold: Option<f32>,
}

/// Per-label probabilities for one message (after worst-window aggregation).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub unsafe_prob: f32,
    pub categories: Vec<f32>,
    pub tokens: usize,
    pub windows: usize,
}

impl Verdict {
    pub fn decide(
        s: &Scores,
        p: &ResolvedPolicy,
        lang: &str,
        model: &str,
        backend: &str,
        timing_ms: f64,
    ) -> Self {
        let mut categories = BTreeMap::new();
        let mut category_scores = BTreeMap::new();
        let mut hit: Vec<(f32, &str, Action)> = Vec::new();
        let mut top: Option<(f32, &str)> = None;
        for ((name, threshold, action), &score) in p.categories.iter().zip(&s.categories) {
            let on = score >= *threshold;
            categories.insert(name.clone(), on);
            category_scores.insert(name.clone(), score);
            if on {
                hit.push((score, name, *action));
            }
            if top.is_none_or(|(t, _)| score > t) {
                top = Some((score, name));
            }
        }
        let flagged = s.unsafe_prob >= p.unsafe_threshold || !hit.is_empty();
        hit.sort_by(|a, b| b.0.total_cmp(&a.0));
        let category = if !flagged {
            None
        } else {
            hit.first()
                .map(|h| h.1)
                .or(top.map(|t| t.1))
                .map(str::to_string)
        };
        let action = if p.force_safety {
            Action::Block
        } else if !flagged {
            Action::Allow
        } else if hit.is_empty() {
            p.default_action
        } else {
            hit.iter().map(|h| h.2).max().unwrap_or(p.default_action)
        };
        let reply =
            (action == Action::Block).then(|| safe_reply(category.as_deref(), lang).to_string());
        Verdict {
            flagged,
            score: s.unsafe_prob,
            category,
            categories,
            category_scores,
            action,
            model: model.to_string(),
            backend: backend.to_string(),
            timing_ms,
            tokens: s.tokens,
            windows: s.windows,
            lang: lang.to_string(),
            reply,
            error: None,
            decided_by: DecidedBy::Classifier,
            cascade: None,
        }
    }

    /// The verdict the fail mode gives when the model could not run.
    pub fn failed(
        err: &GuardError,
        p: &ResolvedPolicy,
        lang: &str,
        model: &str,
        backend: &str,
    ) -> Self {
        Self::failed_with_code(err.code(), &err.to_string(), p, lang, model, backend)
    }

    /// As `failed`, for an error that arrived as a code and a message (from JS: a fetch or load failure keeps its
    /// own code, e.g. `MODEL_INTEGRITY`, in the verdict).
    pub fn failed_with_code(
        code: &str,
        message: &str,
        p: &ResolvedPolicy,
        lang: &str,
        model: &str,
        backend: &str,
    ) -> Self {
        let blocked = p.fail_mode == FailMode::Closed;
        Verdict {
            flagged: blocked,
            score: if blocked { 1.0 } else { 0.0 },
            category: None,
            categories: p.categories.iter().map(|c| (c.0.clone(), false)).collect(),
            category_scores: BTreeMap::new(),
            action: if blocked {
                Action::Block
            } else {
                Action::Allow
            },
            model: model.to_string(),
            backend: backend.to_string(),
            timing_ms: 0.0,
            tokens: 0,
            windows: 0,
            lang: lang.to_string(),
            reply: blocked.then(|| safe_reply(None, lang).to_string()),
            error: Some(VerdictError {
                code: code.to_string(),
                message: message.to_string(),
            }),
            decided_by: DecidedBy::Classifier,
            cascade: None,
        }
    }
}
