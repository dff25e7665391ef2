//! What an experiment records in the Rollout's status (`status.experiment`): each arm's
//! weight and what it has gathered since the split began, the verdict at the last look, and
//! a bounded history of looks that `weir report` draws. Plain data and pure helpers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::verdict::{ArmSummary, Comparison, Metric, Plan, Verdict};
use crate::stats::confidence::{self, Interval};

/// Most points `history` keeps; older ones are thinned evenly as it grows.
pub const MAX_HISTORY: usize = 120;

/// `status.experiment`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// When traffic began to split between the arms (RFC 3339).
    pub started_at: String,
    /// How the arms are judged.
    pub plan: Plan,
    /// Each arm, control first.
    pub arms: Vec<ArmState>,
    /// Each arm's revision (pod template hash) when the split began, control first: data
    /// from another revision would judge something nobody is comparing.
    #[serde(default)]
    pub revisions: Vec<String>,
    /// The verdict at the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// When the experiment ended (RFC 3339), if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The arm found better than every other, once the experiment has ended with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// The arm whose failure stopped the experiment (it failed more often than control, or
    /// lost its pods): no new experiment starts until its template changes, or a person asks
    /// to `retry`, so its users are not sent back to the version that failed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// Looks over time, oldest first, at most [`MAX_HISTORY`].
    #[serde(default)]
    pub history: Vec<HistoryPoint>,
}

/// One arm: its share of traffic and what it has gathered since the start.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArmState {
    /// Percent of weight- and sticky-decided traffic.
    pub weight: f64,
    /// The Deployment serving it.
    pub deployment: String,
    /// Since the start.
    #[serde(flatten)]
    pub summary: ArmSummary,
}

/// One look, for the plots over time.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// When (RFC 3339).
    pub at: String,
    /// Each arm at this look, control first.
    pub arms: Vec<ArmPoint>,
    /// Each variant against control on the primary metric.
    pub differences: Vec<Comparison>,
}

/// One arm at one look: its counts and its own anytime-valid bands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArmPoint {
    /// The arm.
    pub name: String,
    /// Distinct sticky users, an estimate.
    pub users: f64,
    /// Requests answered.
    pub requests: f64,
    /// Its error ratio with its band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<Interval>,
    /// Its mean score with its band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Interval>,
}

impl HistoryPoint {
    /// The point for a look at `at`, with bands at the plan's per-comparison level.
    pub fn of(at: String, plan: &Plan, arms: &[ArmSummary], verdict: &Verdict) -> HistoryPoint {
        let alpha = 1.0 - plan.confidence;
        HistoryPoint {
            at,
            arms: arms
                .iter()
                .map(|arm| ArmPoint {
                    name: arm.name.clone(),
                    users: arm.users,
                    requests: arm.requests,
                    error_ratio: confidence::proportion_interval(arm.errors, arm.requests, alpha),
                    score: confidence::mean_interval(&arm.score, alpha),
                })
                .collect(),
            differences: verdict
                .comparisons
                .iter()
                .filter(|c| c.metric == plan.primary)
                .cloned()
                .collect(),
        }
    }
}

/// Appends `point`, keeping at most [`MAX_HISTORY`]: when full, every second point of the
/// older ones goes (the first and the newest stay), so the history always spans the whole
/// experiment at an even, coarser spacing.
pub fn push_point(history: &mut Vec<HistoryPoint>, point: HistoryPoint) {
    if history.len() >= MAX_HISTORY {
        let mut index = 0;
        history.retain(|_| {
            index += 1;
            index % 2 == 1
        });
    }
    history.push(point);
}

/// The metrics a plan judges, primary first.
pub fn judged(plan: &Plan) -> Vec<Metric> {
    let mut metrics = vec![plan.primary];
    metrics.extend(plan.guardrails.iter().copied().filter(|m| *m != plan.primary));
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: usize) -> HistoryPoint {
        HistoryPoint {
            at: format!("t{i}"),
            arms: Vec::new(),
            differences: Vec::new(),
        }
    }

    /// Status is JSON, which has no infinity: a histogram's `+Inf` bound must survive the trip
    /// (the API server refused the status when it was written as `null`).
    #[test]
    fn an_arm_with_its_infinite_bucket_round_trips_through_json() {
        use crate::experiment::verdict::Histogram;
        let arm = ArmSummary {
            name: "control".into(),
            latency: Histogram {
                bounds: vec![0.1, f64::INFINITY],
                cumulative: vec![3, 4],
                sum: 0.5,
            },
            ..ArmSummary::default()
        };
        let json = serde_json::to_value(&arm).expect("serialises");
        assert_eq!(json["latency"]["bounds"], serde_json::json!(["0.1", "+Inf"]));
        let back: ArmSummary = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, arm);
    }

    #[test]
    fn history_stays_bounded_and_spans_the_whole_run() {
        let mut history = Vec::new();
        for i in 0..1000 {
            push_point(&mut history, point(i));
            assert!(history.len() <= MAX_HISTORY);
        }
        assert_eq!(history.first().map(|p| p.at.as_str()), Some("t0"));
        assert_eq!(history.last().map(|p| p.at.as_str()), Some("t999"));
        assert!(history.len() > MAX_HISTORY / 2);
    }
}
