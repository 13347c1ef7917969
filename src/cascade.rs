//! The cascade: the fast classifier decides the clear cases, and the generative guardian re-decides the messages
//! whose classifier score falls inside an uncertain band. The band comes from the guardian manifest's
//! `thresholds.cascade_band` (chosen on dev by `training/guardian/eval.py`) or defaults to [0.2, 0.8].

use serde::{Deserialize, Serialize};

use crate::error::{GuardError, Result};
use crate::guardian::Guardian;
use crate::manifest::Manifest;
use crate::policy::Policy;
use crate::verdict::{CascadeInfo, DecidedBy, Verdict, VerdictError};

/// Classifier scores strictly between `low` and `high` go to the guardian.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub low: f32,
    pub high: f32,
}

impl Default for Band {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Band {
    pub const DEFAULT: Band = Band {
        low: 0.2,
        high: 0.8,
    };

    /// A band with 0 <= low <= high <= 1 (else INVALID_POLICY). `low == high` sends nothing to the guardian.
    pub fn new(low: f32, high: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
            return Err(GuardError::Policy(format!(
                "cascade band must have 0 <= low <= high <= 1, got [{low}, {high}]"
            )));
        }
        Ok(Self { low, high })
    }

    /// The guardian manifest's `thresholds.cascade_band`, else [`Band::DEFAULT`].
    pub fn from_manifest(m: &Manifest) -> Self {
        m.cascade_band
            .map(|[low, high]| Band { low, high })
            .unwrap_or(Self::DEFAULT)
    }

    /// Is the classifier unsure about this score (strictly inside the band)?
    pub fn contains(&self, score: f32) -> bool {
        self.low < score && score < self.high
    }
}

/// What the cascade does with a classifier verdict, before running anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The classifier's verdict stands (clear score, or it carries a fail-mode `error`).
    Classifier,
    /// Ask the guardian.
    Guardian,
}

/// The band logic alone: a verdict that the fail mode produced (it has `error`) is never re-decided.
pub fn route(classifier: &Verdict, band: &Band) -> Route {
    if classifier.error.is_none() && band.contains(classifier.score) {
        Route::Guardian
    } else {
        Route::Classifier
    }
}

/// Refine a classifier verdict for `text`: inside the band the guardian's verdict (same policy) replaces it and
/// says `decided_by: guardian`; outside, the classifier's stands. Either way the result carries `cascade` with
/// the classifier's score. If the guardian cannot answer (e.g. INPUT_TOO_LONG: it reads at most 512 tokens, the
/// classifier reads any length in windows) the classifier's verdict stands and `cascade.guardian_error` says why.
/// Errors: only an invalid policy (which the classifier would already have refused).
pub fn refine(
    classifier: Verdict,
    guardian: &Guardian,
    text: &str,
    policy: &Policy,
    band: &Band,
) -> Result<Verdict> {
    if route(&classifier, band) == Route::Classifier {
        return settle(classifier, band, None);
    }
    let g = guardian.classify(text, policy);
    settle(classifier, band, Some(g))
}

/// [`refine`] with the guardian on the backend chosen at load (`Guardian::classify_async`).
pub async fn refine_async(
    classifier: Verdict,
    guardian: &Guardian,
    text: &str,
    policy: &Policy,
    band: &Band,
) -> Result<Verdict> {
    if route(&classifier, band) == Route::Classifier {
        return settle(classifier, band, None);
    }
    let g = guardian.classify_async(text, policy).await;
    settle(classifier, band, Some(g))
}

/// The cascade's verdict from the classifier's and, when it ran, the guardian's result: a policy error is passed
/// on, any other guardian error leaves the classifier's verdict standing (see `refine`).
fn settle(classifier: Verdict, band: &Band, guardian: Option<Result<Verdict>>) -> Result<Verdict> {
    let mut info = CascadeInfo {
        classifier_score: classifier.score,
        classifier_model: classifier.model.clone(),
        guardian_score: None,
        band: *band,
        guardian_error: None,
    };
    match guardian {
        None => {}
        Some(Ok(mut v)) => {
            info.guardian_score = Some(v.score);
            v.timing_ms += classifier.timing_ms;
            v.decided_by = DecidedBy::Guardian;
            v.cascade = Some(info);
            return Ok(v);
        }
        Some(Err(e @ GuardError::Policy(_))) => return Err(e),
        Some(Err(e)) => {
            info.guardian_error = Some(VerdictError {
                code: e.code().to_string(),
                message: e.to_string(),
            })
        }
    }
    Ok(Verdict {
        cascade: Some(info),
        ..classifier
    })
}

/// [`refine`] for a batch: verdict `i` is refined for `texts[i]` (the same routing per message, so a batch gives
/// the verdicts that one `classify` call per message would).
pub fn refine_batch(
    classifier: Vec<Verdict>,
    guardian: &Guardian,
    texts: &[&str],
    policy: &Policy,
    band: &Band,
) -> Result<Vec<Verdict>> {
    same_length(&classifier, texts)?;
    classifier
        .into_iter()
        .zip(texts)
        .map(|(v, text)| refine(v, guardian, text, policy, band))
        .collect()
}

fn same_length(classifier: &[Verdict], texts: &[&str]) -> Result<()> {
    if classifier.len() != texts.len() {
        return Err(GuardError::Input(format!(
            "{} verdicts for {} texts",
            classifier.len(),
            texts.len()
        )));
    }
    Ok(())
}

/// [`refine_batch`] with the guardian on the backend chosen at load (one message after another: the guardian
/// reads one prompt at a time).
pub async fn refine_batch_async(
    classifier: Vec<Verdict>,
    guardian: &Guardian,
    texts: &[&str],
    policy: &Policy,
    band: &Band,
) -> Result<Vec<Verdict>> {
    same_length(&classifier, texts)?;
    let mut out = Vec::with_capacity(texts.len());
    for (v, text) in classifier.into_iter().zip(texts) {
        out.push(refine_async(v, guardian, text, policy, band).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action;
    use std::collections::BTreeMap;

    fn verdict(score: f32) -> Verdict {
        Verdict {
            flagged: score >= 0.5,
            score,
            category: None,
            categories: BTreeMap::new(),
            category_scores: BTreeMap::new(),
            action: Action::Allow,
            model: "c@1".into(),
            backend: "cpu".into(),
            timing_ms: 1.0,
            tokens: 1,
            windows: 1,
            lang: "en".into(),
            reply: None,
            error: None,
            decided_by: DecidedBy::Classifier,
            cascade: None,
        }
    }

    #[test]
    fn band_is_exclusive_and_validated() {
        let b = Band::DEFAULT;
        assert!(!b.contains(0.2) && !b.contains(0.8));
        assert!(b.contains(0.2001) && b.contains(0.5) && b.contains(0.7999));
        assert!(!b.contains(0.0) && !b.contains(1.0) && !b.contains(f32::NAN));
        let empty = Band::new(0.5, 0.5).unwrap();
        assert!(!empty.contains(0.5));
        assert!(Band::new(0.0, 1.0).unwrap().contains(0.5));
        for (l, h) in [(0.9, 0.1), (-0.1, 0.5), (0.5, 1.5), (f32::NAN, 0.5)] {
            assert_eq!(Band::new(l, h).unwrap_err().code(), "INVALID_POLICY");
        }
    }

    #[test]
    fn route_follows_the_band_and_keeps_fail_mode_verdicts() {
        let b = Band::new(0.3, 0.7).unwrap();
        assert_eq!(route(&verdict(0.1), &b), Route::Classifier);
        assert_eq!(route(&verdict(0.3), &b), Route::Classifier);
        assert_eq!(route(&verdict(0.5), &b), Route::Guardian);
        assert_eq!(route(&verdict(0.95), &b), Route::Classifier);
        let mut failed = verdict(0.5);
        failed.error = Some(VerdictError {
            code: "INFERENCE_FAILED".into(),
            message: "x".into(),
        });
        assert_eq!(route(&failed, &b), Route::Classifier);
    }

    #[test]
    fn verdict_json_is_backward_compatible() {
        let v = verdict(0.1);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["decided_by"], "classifier");
        assert!(json.get("cascade").is_none());
        // an old verdict (no decided_by) still parses, as the classifier's
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("decided_by");
        let back: Verdict = serde_json::from_value(old).unwrap();
        assert_eq!(back.decided_by, DecidedBy::Classifier);
    }

    #[test]
    fn manifest_band() {
        let base = r#"{"name":"g","version":"1","format_version":1,"task":"guardian",
            "architecture":{"type":"gemma3-decoder","hidden":640,"layers":18,"heads":4,"ffn":2048,"vocab":100,"context":2048},
            "quantization":{},"text":{"normalization":"slm-guard-v1","max_tokens":512},"categories":["crime"],
            "special_tokens":{"<bos>":2,"<|pred|>":6,"<|expl|>":7,"<|force-safety|>":8,"<|safe|>":9,"<|unsafe|>":10,"<|cat_crime|>":11},
            "files":{"model.gguf":{"sha256":"x","bytes":1},"tokenizer.json":{"sha256":"y","bytes":1}},
            "thresholds":THRESHOLDS}"#;
        let parse = |t: &str| Manifest::parse(base.replace("THRESHOLDS", t).as_bytes());
        let m = parse(r#"{"unsafe":0.4,"cascade_band":[0.1,0.9]}"#).unwrap();
        assert_eq!(m.thresholds.get("unsafe"), Some(&0.4));
        assert!(!m.thresholds.contains_key("cascade_band"));
        assert_eq!(
            Band::from_manifest(&m),
            Band {
                low: 0.1,
                high: 0.9
            }
        );
        let m = parse(r#"{"unsafe":0.5}"#).unwrap();
        assert_eq!(Band::from_manifest(&m), Band::DEFAULT);
        for bad in [
            r#"{"cascade_band":[0.9,0.1]}"#,
            r#"{"cascade_band":[0.1]}"#,
            r#"{"cascade_band":"x"}"#,
            r#"{"unsafe":"x"}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), "MODEL_MANIFEST", "{bad}");
        }
    }
}
