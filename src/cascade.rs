//! The cascade: the fast classifier decides the clear cases, and the generative guardian re-decides the messages
//! whose classifier score falls inside an uncertain band. The band comes from the guardian manifest's
//! `thresholds.cascade_band` (chosen on dev by `training/guardian/eval.py`) or defaults to [0.2, 0.8].
//!
//! Inside the band the guardian's score alone decides, unless the manifest has `thresholds.cascade_fusion`: then the
//! verdict's P(unsafe) combines both models' scores ([`Fusion`]): their errors on the uncertain messages differ, and
//! together they rank them better than either alone (training/guardian/fusion.py measures it on the whole dev and
//! test splits).

use serde::{Deserialize, Serialize};

use crate::error::{GuardError, Result};
use crate::guardian::Guardian;
use crate::manifest::Manifest;
use crate::policy::Policy;
use crate::verdict::{CascadeInfo, DecidedBy, Scores, Verdict, VerdictError};

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

/// How the cascade combines the two scores inside the band: P(unsafe) = sigmoid(bias + classifier * logit(c) +
/// guardian * logit(g)), with weights per message language. A logistic regression fitted on the dev split's hard
/// rows (training/guardian/fusion.py); its bias already folds in the decision threshold, so the fused score is
/// read at the guardian's own `unsafe` threshold and the policy's sensitivity moves it as it moves any score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    pub ko: FusionWeights,
    pub en: FusionWeights,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionWeights {
    pub bias: f32,
    pub classifier: f32,
    pub guardian: f32,
}

impl Fusion {
    /// The weights for a message in `lang` (`ko` or `en`, as `reply::language` says).
    pub fn weights(&self, lang: &str) -> &FusionWeights {
        if lang == "en" {
            &self.en
        } else {
            &self.ko
        }
    }

    /// The fused P(unsafe) of a message in `lang` from the classifier's and the guardian's P(unsafe).
    pub fn score(&self, lang: &str, classifier: f32, guardian: f32) -> f32 {
        let w = self.weights(lang);
        let z = w.bias + w.classifier * logit(classifier) + w.guardian * logit(guardian);
        1.0 / (1.0 + (-z).exp())
    }

    fn check(&self) -> bool {
        [self.ko, self.en]
            .iter()
            .all(|w| w.bias.is_finite() && w.classifier.is_finite() && w.guardian.is_finite())
    }

    /// Parse `thresholds.cascade_fusion` (`{"ko": {"bias", "classifier", "guardian"}, "en": {...}}`).
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        serde_json::from_value::<Fusion>(v.clone())
            .ok()
            .filter(Fusion::check)
            .ok_or_else(|| {
                GuardError::Manifest(format!(
                    "thresholds.cascade_fusion must be {{\"ko\": {{\"bias\", \"classifier\", \"guardian\"}}, \"en\": {{...}}}} with finite numbers, got {v}"
                ))
            })
    }
}

/// Scores are probabilities; clamp so that 0 and 1 stay finite.
fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
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
    let g = guardian
        .classify(text, policy)
        .and_then(|v| fuse(v, &classifier, guardian, policy));
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
    let g = guardian
        .classify_async(text, policy)
        .await
        .and_then(|v| fuse(v, &classifier, guardian, policy));
    settle(classifier, band, Some(g))
}

/// The guardian's answer inside the band: the verdict it gives, its own P(unsafe), and the fusion weights that
/// made the verdict's score (none: its own score decided).
struct Decided {
    verdict: Verdict,
    guardian_score: f32,
    fusion: Option<FusionWeights>,
}

/// The guardian's verdict, re-decided on the fused score when its manifest has a [`Fusion`].
fn fuse(v: Verdict, classifier: &Verdict, guardian: &Guardian, policy: &Policy) -> Result<Decided> {
    let m = guardian.manifest();
    let Some(f) = m.cascade_fusion else {
        return Ok(Decided {
            guardian_score: v.score,
            verdict: v,
            fusion: None,
        });
    };
    let p = policy.resolve(&m.categories, &m.thresholds)?;
    let fused = f.score(&v.lang, classifier.score, v.score);
    // the guardian's category scores are P(unsafe) * P(category | unsafe): keep the conditional, swap P(unsafe)
    let scale = if v.score > 0.0 { fused / v.score } else { 0.0 };
    let scores = Scores {
        unsafe_prob: fused,
        categories: m
            .categories
            .iter()
            .map(|c| v.category_scores.get(c).copied().unwrap_or(0.0) * scale)
            .collect(),
        tokens: v.tokens,
        windows: v.windows,
    };
    let mut verdict = Verdict::decide(&scores, &p, &v.lang, &v.model, &v.backend, v.timing_ms);
    verdict.decided_by = v.decided_by;
    Ok(Decided {
        verdict,
        guardian_score: v.score,
        fusion: Some(*f.weights(&v.lang)),
    })
}

/// The cascade's verdict from the classifier's and, when it ran, the guardian's result: a policy error is passed
/// on, any other guardian error leaves the classifier's verdict standing (see `refine`).
fn settle(classifier: Verdict, band: &Band, guardian: Option<Result<Decided>>) -> Result<Verdict> {
    let mut info = CascadeInfo {
        classifier_score: classifier.score,
        classifier_model: classifier.model.clone(),
        guardian_score: None,
        band: *band,
        guardian_error: None,
        fusion: None,
    };
    match guardian {
        None => {}
        Some(Ok(Decided {
            verdict: mut v,
            guardian_score,
            fusion,
        })) => {
            info.guardian_score = Some(guardian_score);
            info.fusion = fusion;
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

    /// A minimal guardian manifest with these `thresholds`, parsed.
    fn parse(thresholds: &str) -> Result<Manifest> {
        let base = r#"{"name":"g","version":"1","format_version":1,"task":"guardian",
            "architecture":{"type":"gemma3-decoder","hidden":640,"layers":18,"heads":4,"ffn":2048,"vocab":100,"context":2048},
            "quantization":{},"text":{"normalization":"slm-guard-v1","max_tokens":512},"categories":["crime"],
            "special_tokens":{"<bos>":2,"<|pred|>":6,"<|expl|>":7,"<|force-safety|>":8,"<|safe|>":9,"<|unsafe|>":10,"<|cat_crime|>":11},
            "files":{"model.gguf":{"sha256":"x","bytes":1},"tokenizer.json":{"sha256":"y","bytes":1}},
            "thresholds":THRESHOLDS}"#;
        Manifest::parse(base.replace("THRESHOLDS", thresholds).as_bytes())
    }

    #[test]
    fn fusion_is_a_logistic_combination_per_language() {
        let w = |bias, classifier, guardian| FusionWeights {
            bias,
            classifier,
            guardian,
        };
        let f = Fusion {
            ko: w(0.0, 1.0, 0.0),
            en: w(0.5, 0.5, 0.5),
        };
        // Korean: the classifier's score alone comes back
        assert!((f.score("ko", 0.3, 0.9) - 0.3).abs() < 1e-6);
        // English: sigmoid(0.5 + 0.5 logit(0.3) + 0.5 logit(0.9))
        let l = |p: f32| (p / (1.0 - p)).ln();
        let want = 1.0 / (1.0 + (-(0.5 + 0.5 * l(0.3) + 0.5 * l(0.9))).exp());
        assert!((f.score("en", 0.3, 0.9) - want).abs() < 1e-6);
        // 0 and 1 stay finite and ordered
        let (lo, hi) = (f.score("en", 0.0, 0.0), f.score("en", 1.0, 1.0));
        assert!(lo.is_finite() && hi.is_finite() && lo < 0.01 && hi > 0.99);
        // more unsafe evidence from either model never lowers the fused score (positive weights)
        assert!(f.score("en", 0.4, 0.6) < f.score("en", 0.5, 0.6));
        assert!(f.score("en", 0.4, 0.6) < f.score("en", 0.4, 0.7));
    }

    #[test]
    fn manifest_fusion() {
        let m = parse(r#"{"unsafe":0.5,"cascade_fusion":{"ko":{"bias":0.1,"classifier":0.6,"guardian":0.2},"en":{"bias":-0.2,"classifier":0.4,"guardian":0.3}}}"#).unwrap();
        let f = m.cascade_fusion.expect("fusion parsed");
        assert_eq!((f.ko.bias, f.ko.classifier, f.ko.guardian), (0.1, 0.6, 0.2));
        assert_eq!(f.weights("en").guardian, 0.3);
        assert!(!m.thresholds.contains_key("cascade_fusion"));
        assert!(parse(r#"{"unsafe":0.5}"#).unwrap().cascade_fusion.is_none());
        for bad in [
            r#"{"cascade_fusion":{"ko":{"bias":0,"classifier":1,"guardian":1}}}"#,
            r#"{"cascade_fusion":{"ko":{"bias":0,"classifier":1},"en":{"bias":0,"classifier":1,"guardian":1}}}"#,
            r#"{"cascade_fusion":{"ko":{"bias":0,"classifier":1,"guardian":1,"x":2},"en":{"bias":0,"classifier":1,"guardian":1}}}"#,
            r#"{"cascade_fusion":{"ko":{"bias":"a","classifier":1,"guardian":1},"en":{"bias":0,"classifier":1,"guardian":1}}}"#,
            r#"{"cascade_fusion":{"ko":{"bias":1e60,"classifier":1,"guardian":1},"en":{"bias":0,"classifier":1,"guardian":1}}}"#,
            r#"{"cascade_fusion":[1,2,3]}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), "MODEL_MANIFEST", "{bad}");
        }
    }

    #[test]
    fn manifest_band() {
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
