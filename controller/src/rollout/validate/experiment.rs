//! Validation of the `experiment` strategy. Pure.

use std::collections::HashSet;
use std::time::Duration;

use super::{Errors, is_label_value, side};
use crate::experiment::verdict::{Metric, Plan};
use crate::rollout::{CONTROL, Experiment, ExperimentDecide, RolloutSpec, proxy_route};

/// Most variants beside control: the proxy splits a route at most 8 ways.
const MAX_VARIANTS: usize = weir_proxy::split::MAX_VARIANTS - 1;

/// A validated experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidExperiment {
    /// The variants, in spec order (control, stable, is not among them).
    pub variants: Vec<ValidVariant>,
    /// Each arm's weight in basis points, control first; they sum to 10000.
    pub weights: Vec<u16>,
    /// How the arms are judged.
    pub plan: Plan,
    /// How long it runs.
    pub duration: Duration,
    /// What happens to a winning variant.
    pub decide: ExperimentDecide,
    /// End at the first verdict that names a winner.
    pub stop_when_conclusive: bool,
}

impl ValidExperiment {
    /// Every arm's name, control first.
    pub fn arm_names(&self) -> Vec<String> {
        std::iter::once(CONTROL.to_owned())
            .chain(self.variants.iter().map(|v| v.name.clone()))
            .collect()
    }
}

/// A validated variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidVariant {
    /// Its name.
    pub name: String,
    /// Its Deployment.
    pub deployment: String,
}

/// Checks `experiment`, recording every bad field in `errors`.
pub(super) fn validate(spec: &RolloutSpec, experiment: &Experiment, errors: &mut Errors) -> ValidExperiment {
    const PATH: &str = "spec.strategy.experiment";
    let count = experiment.variants.len();
    if !(1..=MAX_VARIANTS).contains(&count) {
        errors.add(
            format!("{PATH}.variants"),
            format!("has {count} variants; an experiment compares 1 to {MAX_VARIANTS} with control"),
        );
    }
    let mut names = HashSet::new();
    let mut deployments = HashSet::from([spec.stable.deployment.as_str()]);
    let mut variants = Vec::new();
    let mut total = 0.0;
    for (i, variant) in experiment.variants.iter().enumerate() {
        let path = format!("{PATH}.variants[{i}]");
        if !is_label_value(&variant.name) {
            errors.add(
                format!("{path}.name"),
                format!(
                    "{:?} is not a name (1 to 63 letters, digits, '-', '_' or '.')",
                    variant.name
                ),
            );
        } else if [CONTROL, "stable", "candidate", "mirror"].contains(&variant.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!(
                    "{:?} names an arm weir keeps for itself; name the variant otherwise",
                    variant.name
                ),
            );
        } else if !names.insert(variant.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!("duplicate variant name {:?}", variant.name),
            );
        }
        if variant.side.deployment.is_empty() {
            errors.add(format!("{path}.deployment"), "is empty");
        } else if !deployments.insert(variant.side.deployment.as_str()) {
            errors.add(
                format!("{path}.deployment"),
                format!(
                    "{:?} is stable's or another variant's Deployment",
                    variant.side.deployment
                ),
            );
        }
        side(errors, &path, &variant.side);
        let hundredths = variant.weight * 100.0;
        if !(variant.weight > 0.0 && variant.weight < 100.0) {
            errors.add(
                format!("{path}.weight"),
                format!("{} is not above 0 and below 100", variant.weight),
            );
        } else if (hundredths - hundredths.round()).abs() > 1e-6 {
            errors.add(
                format!("{path}.weight"),
                format!("{} is finer than 0.01 percent", variant.weight),
            );
        }
        total += variant.weight;
        variants.push(ValidVariant {
            name: variant.name.clone(),
            deployment: variant.side.deployment.clone(),
        });
    }
    if total >= 100.0 - 1e-9 {
        errors.add(
            format!("{PATH}.variants"),
            format!("weights sum to {total}%, leaving control (stable) nothing; they must sum below 100"),
        );
    }
    let duration = errors.duration(&format!("{PATH}.duration"), &experiment.duration);
    if !(experiment.confidence > 0.5 && experiment.confidence < 1.0) {
        errors.add(
            format!("{PATH}.confidence"),
            format!("{} is not above 0.5 and below 1", experiment.confidence),
        );
    }
    if let Some(effect) = experiment.min_effect
        && !(effect > 0.0 && effect.is_finite())
    {
        errors.add(format!("{PATH}.minEffect"), format!("{effect} is not above 0"));
    }
    let uses_score = experiment.primary == Metric::Score || experiment.guardrails.contains(&Metric::Score);
    if uses_score && http::HeaderName::from_bytes(experiment.score_header.as_bytes()).is_err() {
        errors.add(
            format!("{PATH}.scoreHeader"),
            format!("{:?} is not a header name", experiment.score_header),
        );
    }
    if experiment.min_users_per_variant > 0 && spec.route.sticky.is_none() {
        errors.add(
            "spec.route.sticky",
            "is needed by an experiment, which pins each user to one arm and counts users by this key \
             (or set minUsersPerVariant: 0)",
        );
    }
    if !spec.route.overrides.is_empty() {
        errors.add(
            "spec.route.overrides",
            "cannot be used by an experiment: who sees which arm is the split's alone, and a caller choosing \
             its arm would bias that arm's numbers",
        );
    }
    if spec.analysis.source.prometheus.is_some() {
        errors.add(
            "spec.analysis.source.prometheus",
            "cannot feed an experiment yet: its arms are read from the proxies' own metrics",
        );
    }
    if spec.scaling.max_surge.is_some() {
        errors.add(
            "spec.scaling.maxSurge",
            "does not apply to an experiment, which scales no Deployment",
        );
    }
    ValidExperiment {
        variants,
        weights: proxy_route::arm_weights(experiment),
        plan: Plan {
            primary: experiment.primary,
            guardrails: experiment.guardrails.clone(),
            confidence: experiment.confidence,
            min_users_per_variant: experiment.min_users_per_variant as f64,
            min_effect: experiment.min_effect,
        },
        duration,
        decide: experiment.decide,
        stop_when_conclusive: experiment.stop_when_conclusive,
    }
}
