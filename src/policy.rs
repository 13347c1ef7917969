//! Run-time policy: per-category thresholds and actions, a global sensitivity, the action for a message that is
//! unsafe without a clear category, the input size limit and what to do when the model cannot run.
//! Defaults come from the model manifest; every field of the JSON form is optional.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{GuardError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Flag,
    #[default]
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// The message passes (action `allow`) when the model cannot run; the verdict carries the error.
    Open,
    /// The message is blocked when the model cannot run.
    #[default]
    Closed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRule {
    /// Probability at or above which the category is flagged (before sensitivity). Default: the manifest's.
    pub threshold: Option<f32>,
    pub action: Option<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// 0..=1; 0.5 uses the thresholds as given, higher flags more (each threshold moves in logit space by up to
    /// +-2 at the ends: threshold 0.5 becomes 0.12 at sensitivity 1 and 0.88 at sensitivity 0).
    pub sensitivity: f32,
    /// Threshold on the overall `unsafe` probability. Default: the manifest's.
    pub unsafe_threshold: Option<f32>,
    /// Action when the message is unsafe but no category reaches its threshold.
    pub default_action: Action,
    pub categories: BTreeMap<String, CategoryRule>,
    pub fail_mode: FailMode,
    /// Inputs longer than this (UTF-8 bytes) are refused with `INPUT_TOO_LONG` rather than silently cut.
    pub max_input_bytes: usize,
    /// Operator override (the seed paper's `<|force-safety|>`): answer every message with a safe reply instead of
    /// passing it on, whatever the model says. The verdict still reports the model's own scores and `flagged`.
    pub force_safety: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            sensitivity: 0.5,
            unsafe_threshold: None,
            default_action: Action::Block,
            categories: BTreeMap::new(),
            fail_mode: FailMode::Closed,
            max_input_bytes: 256 * 1024,
            force_safety: false,
        }
    }
}

/// A policy resolved against a model's labels: one effective threshold and action per label.
#[derive(Debug, Clone)]
pub struct ResolvedPolicy {
    pub unsafe_threshold: f32,
    pub categories: Vec<(String, f32, Action)>,
    /// The reply check's threshold (`manifest::REPLY_LABEL`), shifted by `sensitivity` like the others; `None` for
    /// a model without it.
    pub reply_threshold: Option<f32>,
    pub default_action: Action,
    pub fail_mode: FailMode,
    pub max_input_bytes: usize,
    pub force_safety: bool,
}

fn shift(threshold: f32, sensitivity: f32) -> f32 {
    let t = threshold.clamp(1e-6, 1.0 - 1e-6) as f64;
    let logit = (t / (1.0 - t)).ln() - 4.0 * (sensitivity as f64 - 0.5);
    (1.0 / (1.0 + (-logit).exp())) as f32
}

impl Policy {
    pub fn from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| GuardError::Policy(e.to_string()))?;
        if !value.is_object() {
            return Err(GuardError::Policy("a policy must be a JSON object".into()));
        }
        serde_json::from_value(value).map_err(|e| GuardError::Policy(e.to_string()))
    }

    /// Check values and resolve thresholds against the model's categories and default thresholds.
    pub fn resolve(
        &self,
        categories: &[String],
        defaults: &BTreeMap<String, f32>,
    ) -> Result<ResolvedPolicy> {
        let prob = |name: &str, v: f32| -> Result<f32> {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(GuardError::Policy(format!(
                    "{name} must be between 0 and 1, got {v}"
                )))
            }
        };
        prob("sensitivity", self.sensitivity)?;
        if self.max_input_bytes == 0 {
            return Err(GuardError::Policy(
                "max_input_bytes must be positive".into(),
            ));
        }
        // (an empty list means "shape check only": category names are checked against a model's list)
        if let Some(unknown) = self
            .categories
            .keys()
            .find(|k| !categories.is_empty() && !categories.contains(k))
        {
            return Err(GuardError::Policy(format!(
                "unknown category `{unknown}` (known: {})",
                categories.join(", ")
            )));
        }
        let default = |label: &str| defaults.get(label).copied().unwrap_or(0.5);
        let u = prob(
            "unsafe_threshold",
            self.unsafe_threshold.unwrap_or_else(|| default("unsafe")),
        )?;
        let mut cats = Vec::with_capacity(categories.len());
        for (name, rule) in &self.categories {
            if let Some(t) = rule.threshold {
                prob(&format!("categories.{name}.threshold"), t)?;
            }
        }
        for c in categories {
            let rule = self.categories.get(c).cloned().unwrap_or_default();
            let t = prob(
                &format!("categories.{c}.threshold"),
                rule.threshold.unwrap_or_else(|| default(c)),
            )?;
            cats.push((
                c.clone(),
                shift(t, self.sensitivity),
                rule.action.unwrap_or(Action::Block),
            ));
        }
        Ok(ResolvedPolicy {
            unsafe_threshold: shift(u, self.sensitivity),
            categories: cats,
            reply_threshold: defaults
                .get(crate::manifest::REPLY_LABEL)
                .map(|&t| shift(t, self.sensitivity)),
            default_action: self.default_action,
            fail_mode: self.fail_mode,
            max_input_bytes: self.max_input_bytes,
            force_safety: self.force_safety,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats() -> Vec<String> {
        vec!["hate".into(), "crime".into()]
    }

    #[test]
    fn sensitivity_moves_thresholds_monotonically() {
        assert!((shift(0.5, 0.5) - 0.5).abs() < 1e-6);
        assert!(shift(0.5, 1.0) < 0.13 && shift(0.5, 0.0) > 0.87);
        assert!(shift(0.3, 0.7) < shift(0.3, 0.6));
    }

    #[test]
    fn rejects_bad_values_and_unknown_categories() {
        let d = BTreeMap::new();
        assert!(Policy::from_json(r#"{"sensitivity": 2}"#)
            .unwrap()
            .resolve(&cats(), &d)
            .is_err());
        assert!(Policy::from_json(r#"{"categories": {"spam": {}}}"#)
            .unwrap()
            .resolve(&cats(), &d)
            .is_err());
        assert!(
            Policy::from_json(r#"{"categories": {"hate": {"threshold": -1}}}"#)
                .unwrap()
                .resolve(&cats(), &d)
                .is_err()
        );
        assert!(Policy::from_json(r#"{"colour": 1}"#).is_err());
        assert!(Policy::from_json("[]").is_err() && Policy::from_json("null").is_err());
        let e = Policy::from_json(r#"{"categories": {"hate": {"action": "delete"}}}"#).unwrap_err();
        assert_eq!(e.code(), "INVALID_POLICY");
    }

    #[test]
    fn resolves_defaults_and_overrides() {
        let d: BTreeMap<String, f32> = [
            ("unsafe".into(), 0.4),
            ("hate".into(), 0.3),
            ("crime".into(), 0.6),
        ]
        .into();
        let p =
            Policy::from_json(r#"{"categories": {"crime": {"threshold": 0.9, "action": "flag"}}}"#)
                .unwrap();
        let r = p.resolve(&cats(), &d).unwrap();
        assert!((r.unsafe_threshold - 0.4).abs() < 1e-6);
        assert_eq!(
            r.categories[0],
            ("hate".to_string(), r.categories[0].1, Action::Block)
        );
        assert!((r.categories[0].1 - 0.3).abs() < 1e-6);
        assert!((r.categories[1].1 - 0.9).abs() < 1e-6 && r.categories[1].2 == Action::Flag);
    }
}
