//! The `experiment` strategy: control (`spec.stable`) and up to seven variants, each a
//! Deployment, split by fixed weights, judged together with anytime-valid intervals. Plain
//! data; validation is in [`super::validate`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::experiment::verdict::Metric;

use super::SideSpec;

/// The name of the control arm (stable) in the route and in reports.
pub const CONTROL: &str = "control";

/// An A/B/n experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Experiment {
    /// The variants compared with control; control takes the weight they leave.
    pub variants: Vec<VariantSpec>,
    /// The metric a winner must be better on than every other arm.
    #[serde(default = "default_primary")]
    pub primary: Metric,
    /// Metrics on which a winning variant must not be significantly worse than control.
    #[serde(default = "default_guardrails")]
    pub guardrails: Vec<Metric>,
    /// How long the experiment runs, like `2h`.
    pub duration: String,
    /// Distinct users (by the route's sticky key) each arm needs before any verdict.
    #[serde(default = "default_min_users")]
    pub min_users_per_variant: u64,
    /// Chance that no interval of the primary metric ever misses, at any look, like 0.95.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// What happens to a winning variant: `manual` (a person runs `weir promote`) or
    /// `promoteWinner` (its template is promoted into stable at once).
    #[serde(default)]
    pub decide: ExperimentDecide,
    /// End as soon as the verdict names a winner, before `duration`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_when_conclusive: bool,
    /// The relative effect that matters (0.02 for 2 %), for the sample an inconclusive
    /// verdict still needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<f64>,
    /// The response header or trailer carrying a score, when a metric is `score`.
    #[serde(default = "default_score_header")]
    pub score_header: String,
}

/// One variant: a Deployment and where the proxy sends its traffic, and its weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantSpec {
    /// Its name: the side label of its metrics and the value of the side header.
    pub name: String,
    /// Percent of traffic, 0.01 to 99.99, in steps of 0.01.
    pub weight: f64,
    /// Its Deployment and endpoints, as a Rollout side takes them.
    #[serde(flatten)]
    pub side: SideSpec,
}

/// What happens to a winning variant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum ExperimentDecide {
    /// Report the winner; a person promotes it with `weir promote`.
    #[default]
    Manual,
    /// Promote the winner's template into stable, through the same path as a canary.
    PromoteWinner,
}

fn default_primary() -> Metric {
    Metric::Score
}

fn default_guardrails() -> Vec<Metric> {
    vec![Metric::ErrorRatio, Metric::P99]
}

fn default_min_users() -> u64 {
    100
}

fn default_confidence() -> f64 {
    0.95
}

fn default_score_header() -> String {
    "x-weir-score".to_owned()
}
