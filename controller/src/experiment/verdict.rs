//! The verdict of an A/B/n experiment: which arm, if any, is better than every other arm on the
//! plan's primary metric without being worse than control on a guardrail. Pure policy over
//! per-arm summaries; the intervals come from [`crate::stats::confidence`]. No I/O.
//!
//! **Error budget.** Among `k` arms there are `k (k - 1) / 2` pairs, and every pair's primary
//! interval is an anytime-valid confidence sequence at `α = (1 - confidence) / pairs`
//! (Bonferroni). So the chance that any primary interval ever misses its true difference, at
//! any look, is at most `1 - confidence`, and a wrong winner needs such a miss. Guardrails are
//! compared at the same per-comparison level; they can only hold a winner back, never make one.
//!
//! **Winner.** Every arm (control too) has the planned number of users and at least two
//! observations of the primary metric, and one arm's primary interval against every other arm
//! lies wholly on the better side of 0. Control wins when it beats every variant. A variant that
//! wins on the primary metric but is significantly worse than control on a guardrail is held
//! back: the verdict is inconclusive, with the guardrail named.

use serde::{Deserialize, Serialize};

use crate::stats::confidence::{self, Interval, Moments};

/// The quantile that the latency metrics compare.
const TAIL: f64 = 0.99;

/// A Prometheus histogram as scraped: cumulative counts per upper bound (the last `+Inf`) and
/// the sum of the observations.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// Upper bounds of the buckets, increasing, the last `+Inf`. Written as Prometheus writes
    /// `le` ("0.05", "+Inf"), since JSON has no infinity.
    #[serde(with = "crate::counters::le_strings")]
    #[schemars(with = "Vec<String>")]
    pub bounds: Vec<f64>,
    /// Observations at or below each bound.
    pub cumulative: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
}

impl Histogram {
    /// How many observations, 0 for a histogram of the wrong shape.
    fn total(&self) -> f64 {
        confidence::histogram_moments(&self.bounds, &self.cumulative, self.sum).count
    }
}

/// What one arm has gathered since the experiment began.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArmSummary {
    /// The arm's name; arm 0 is the control (stable).
    pub name: String,
    /// Distinct sticky users, an estimate.
    pub users: f64,
    /// Requests answered.
    pub requests: f64,
    /// Requests that failed.
    pub errors: f64,
    /// Request durations.
    pub latency: Histogram,
    /// Times to the first byte of the response.
    pub first_byte: Histogram,
    /// Gaps between tokens of streamed responses.
    pub stream_gap: Histogram,
    /// Scores carried by responses.
    pub score: Moments,
}

/// A metric arms are compared on.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// Failed requests over requests.
    ErrorRatio,
    /// The 99th percentile of request duration.
    P99,
    /// The 99th percentile of time to first byte.
    FirstByteP99,
    /// The mean gap between streamed tokens.
    StreamGap,
    /// The mean score.
    Score,
}

impl Metric {
    /// Whether a higher value is better: only for the score.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Score)
    }

    /// The metric's name in reasons.
    fn name(self) -> &'static str {
        match self {
            Metric::ErrorRatio => "error ratio",
            Metric::P99 => "p99 latency",
            Metric::FirstByteP99 => "p99 time to first byte",
            Metric::StreamGap => "mean stream gap",
            Metric::Score => "mean score",
        }
    }

    /// Why an arm with no observations of this metric cannot be compared.
    fn nothing_observed(self, arm: &str) -> String {
        match self {
            Metric::ErrorRatio => format!("arm {arm} served no requests"),
            Metric::P99 => format!("no request of arm {arm} was timed"),
            Metric::FirstByteP99 => format!("no response of arm {arm} recorded a first byte"),
            Metric::StreamGap => format!("no response of arm {arm} streamed two tokens"),
            Metric::Score => format!("no response of arm {arm} carried a score"),
        }
    }

    /// How many observations of this metric an arm has; 0 for a count that is not a number.
    pub fn observations(self, arm: &ArmSummary) -> f64 {
        let count = match self {
            Metric::ErrorRatio => arm.requests,
            Metric::P99 => arm.latency.total(),
            Metric::FirstByteP99 => arm.first_byte.total(),
            Metric::StreamGap => arm.stream_gap.total(),
            Metric::Score => arm.score.count,
        };
        if count.is_finite() { count.max(0.0) } else { 0.0 }
    }

    /// The arm's value of this metric (a ratio, seconds, a score), if it can be computed.
    pub fn value(self, arm: &ArmSummary) -> Option<f64> {
        match self {
            Metric::ErrorRatio => {
                let (errors, requests) = (arm.errors, arm.requests);
                let counted = requests.is_finite() && requests > 0.0 && errors >= 0.0 && errors <= requests;
                counted.then(|| errors / requests)
            }
            Metric::P99 => confidence::histogram_quantile(&arm.latency.bounds, &arm.latency.cumulative, TAIL),
            Metric::FirstByteP99 => {
                confidence::histogram_quantile(&arm.first_byte.bounds, &arm.first_byte.cumulative, TAIL)
            }
            Metric::StreamGap => gap_moments(arm).mean(),
            Metric::Score => arm.score.mean(),
        }
    }

    /// The variance of one observation, for metrics compared by their mean, inflated by the
    /// arm's design effect (see [`design_effect`]).
    fn observation_variance(self, arm: &ArmSummary) -> Option<f64> {
        let d = design_effect(arm, self.observations(arm));
        let variance = match self {
            Metric::ErrorRatio => confidence::proportion_variance(arm.errors, arm.requests),
            Metric::P99 | Metric::FirstByteP99 => None,
            Metric::StreamGap => gap_moments(arm).variance(),
            Metric::Score => arm.score.variance(),
        }?;
        Some(variance * d)
    }

    /// The interval of `treatment - control` on this metric at level `alpha`, each arm's data
    /// counted as no more observations than it has users.
    fn difference(self, treatment: &ArmSummary, control: &ArmSummary, alpha: f64) -> Option<Interval> {
        let (dt, dc) = (
            design_effect(treatment, self.observations(treatment)),
            design_effect(control, self.observations(control)),
        );
        let (t, c) = (treatment, control);
        match self {
            Metric::ErrorRatio => {
                confidence::proportion_difference(t.errors / dt, t.requests / dt, c.errors / dc, c.requests / dc, alpha)
            }
            Metric::P99 => quantiles(&thin(&t.latency, dt), &thin(&c.latency, dc), alpha),
            Metric::FirstByteP99 => quantiles(&thin(&t.first_byte, dt), &thin(&c.first_byte, dc), alpha),
            Metric::StreamGap => confidence::mean_difference(
                &thin_moments(&gap_moments(t), dt),
                &thin_moments(&gap_moments(c), dc),
                alpha,
            ),
            Metric::Score => {
                confidence::mean_difference(&thin_moments(&t.score, dt), &thin_moments(&c.score, dc), alpha)
            }
        }
    }
}

/// How many observations of an arm count as one: users are what the split randomises, and one
/// user's requests (the same person's prompts) and one response's token gaps are alike, so
/// treating them as independent would make the intervals too narrow (a user whose requests
/// score alike would count for hundreds). An arm's `n` observations count as at most its
/// `users` independent ones: the design effect of clusters that are alike within, `n / users`
/// when that is above 1. With no users counted (a route without a sticky key) each observation
/// counts as one.
fn design_effect(arm: &ArmSummary, observations: f64) -> f64 {
    if arm.users.is_finite() && arm.users >= 1.0 && observations > arm.users {
        observations / arm.users
    } else {
        1.0
    }
}

/// Moments of `d` times fewer observations with the same mean and (nearly) the same spread.
fn thin_moments(m: &Moments, d: f64) -> Moments {
    Moments {
        count: m.count / d,
        sum: m.sum / d,
        squares: m.squares / d,
    }
}

/// A histogram of `d` times fewer observations in the same proportions.
fn thin(h: &Histogram, d: f64) -> Histogram {
    Histogram {
        bounds: h.bounds.clone(),
        cumulative: h.cumulative.iter().map(|c| (*c as f64 / d).floor() as u64).collect(),
        sum: h.sum / d,
    }
}

fn gap_moments(arm: &ArmSummary) -> Moments {
    confidence::histogram_moments(&arm.stream_gap.bounds, &arm.stream_gap.cumulative, arm.stream_gap.sum)
}

fn quantiles(treatment: &Histogram, control: &Histogram, alpha: f64) -> Option<Interval> {
    let (t, c) = (treatment, control);
    confidence::quantile_difference(&t.bounds, &t.cumulative, &c.bounds, &c.cumulative, TAIL, alpha)
}

/// What the experiment decides on, from the spec.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The metric a winner must be better on than every other arm.
    pub primary: Metric,
    /// Metrics on which a winning variant must not be worse than control.
    #[serde(default)]
    pub guardrails: Vec<Metric>,
    /// Chance that no primary interval ever misses, e.g. 0.95.
    pub confidence: f64,
    /// Users each arm needs before any verdict.
    pub min_users_per_variant: f64,
    /// The relative effect that matters (0.02 for 2 %), used only for the sample still needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<f64>,
}

/// Where a variant stands against control on one metric, for the report.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The variant.
    pub arm: String,
    /// What it is compared with (control).
    pub against: String,
    /// The metric.
    pub metric: Metric,
    /// The interval of `arm - against`, `None` without enough data.
    pub interval: Option<Interval>,
    /// What the interval says, given which direction of the metric is better.
    pub significance: Significance,
}

/// Whether an arm is significantly better or worse than another on a metric.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Significance {
    /// The interval lies wholly on the better side of 0.
    Better,
    /// The interval lies wholly on the worse side of 0.
    Worse,
    /// The interval holds 0, or there is none.
    Unclear,
}

impl Significance {
    /// Reads an interval of `arm - other` on `metric`.
    pub fn of(metric: Metric, interval: Option<&Interval>) -> Significance {
        let Some(interval) = interval.filter(|i| i.excludes_zero()) else {
            return Significance::Unclear;
        };
        if (interval.low > 0.0) == metric.higher_is_better() {
            Significance::Better
        } else {
            Significance::Worse
        }
    }
}

/// The outcome of an experiment at one look.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Outcome {
    /// This arm is better than every other arm and no worse than control on any guardrail.
    Winner {
        /// The winning arm.
        arm: String,
    },
    /// No verdict yet.
    Inconclusive {
        /// Why not, naming the arm or metric at fault.
        reason: String,
        /// Observations per arm the deciding comparison would need, at today's variance.
        samples_needed: Option<f64>,
    },
}

impl Outcome {
    /// The winning arm, if there is one.
    pub fn winner(&self) -> Option<&str> {
        match self {
            Outcome::Winner { arm } => Some(arm),
            Outcome::Inconclusive { .. } => None,
        }
    }

    fn inconclusive(reason: String) -> Outcome {
        Outcome::Inconclusive {
            reason,
            samples_needed: None,
        }
    }
}

/// The verdict at one look: the comparisons for the report and the outcome.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Every variant against control on every metric of the plan, primary first.
    pub comparisons: Vec<Comparison>,
    /// The outcome.
    #[schemars(with = "OutcomeSchema")]
    pub outcome: Outcome,
}

/// The schema of [`Outcome`] as one object: Kubernetes structural schemas cannot say "one of
/// two objects told apart by `kind`", and this flat shape is exactly what serde writes.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct OutcomeSchema {
    /// `winner` or `inconclusive`.
    kind: OutcomeKind,
    /// The winning arm (`winner`).
    arm: Option<String>,
    /// Why there is no verdict yet (`inconclusive`).
    reason: Option<String>,
    /// Observations per arm the deciding comparison would need (`inconclusive`).
    samples_needed: Option<f64>,
}

#[derive(schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
enum OutcomeKind {
    Winner,
    Inconclusive,
}

/// Judges the arms (arm 0 the control) under `plan`.
pub fn verdict(plan: &Plan, arms: &[ArmSummary]) -> Verdict {
    let Some(alpha) = comparison_alpha(plan, arms.len()) else {
        let reason = if arms.len() < 2 {
            "an experiment needs a control and at least one variant".to_string()
        } else {
            "confidence must lie strictly between 0 and 1".to_string()
        };
        return Verdict {
            comparisons: Vec::new(),
            outcome: Outcome::inconclusive(reason),
        };
    };
    let mut metrics = vec![plan.primary];
    for &metric in &plan.guardrails {
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    let control = &arms[0];
    let comparisons = arms[1..]
        .iter()
        .flat_map(|arm| metrics.iter().map(move |&metric| (arm, metric)))
        .map(|(arm, metric)| {
            let interval = metric.difference(arm, control, alpha);
            Comparison {
                arm: arm.name.clone(),
                against: control.name.clone(),
                metric,
                significance: Significance::of(metric, interval.as_ref()),
                interval,
            }
        })
        .collect();
    Verdict {
        comparisons,
        outcome: outcome(plan, arms, alpha),
    }
}

/// The per-comparison level: `1 - confidence` over the pairs of arms.
/// The first variant whose errors are significantly more frequent than control's, with the
/// interval of the difference: the experiment's safety stop, checked at every look whatever
/// metrics the plan judges (a variant answering 5xx must not keep its users for the whole
/// experiment because errors are not a guardrail). At the plan's per-comparison level.
pub fn failing_more_than_control(plan: &Plan, arms: &[ArmSummary]) -> Option<(String, Interval)> {
    let alpha = comparison_alpha(plan, arms.len())?;
    let control = arms.first()?;
    arms[1..].iter().find_map(|arm| {
        let interval = Metric::ErrorRatio.difference(arm, control, alpha)?;
        (Significance::of(Metric::ErrorRatio, Some(&interval)) == Significance::Worse)
            .then(|| (arm.name.clone(), interval))
    })
}

fn comparison_alpha(plan: &Plan, arms: usize) -> Option<f64> {
    let pairs = (arms * arms.saturating_sub(1) / 2) as f64;
    let alpha = (1.0 - plan.confidence) / pairs;
    (pairs >= 1.0 && plan.confidence > 0.0 && plan.confidence < 1.0).then_some(alpha)
}

fn outcome(plan: &Plan, arms: &[ArmSummary], alpha: f64) -> Outcome {
    let primary = plan.primary;
    // An arm that served traffic but has none of the primary metric points at a missing
    // header or histogram; say so before asking for more users.
    if let Some(arm) = arms
        .iter()
        .find(|arm| arm.requests > 0.0 && primary.observations(arm) < 1.0)
    {
        return Outcome::inconclusive(primary.nothing_observed(&arm.name));
    }
    let minimum = plan.min_users_per_variant;
    if !minimum.is_finite() {
        return Outcome::inconclusive("minUsersPerVariant must be a finite number".to_string());
    }
    let standing = Standing::new(primary, arms, alpha);
    if let Some(arm) = arms.iter().find(|arm| !arm.users.is_finite() || arm.users < minimum) {
        let users = if arm.users.is_finite() { arm.users.max(0.0) } else { 0.0 };
        let reason = format!(
            "arm {} has {users:.0} users of the {minimum:.0} each arm needs",
            arm.name
        );
        let samples_needed = standing.and_then(|standing| standing.samples_needed(plan, arms, alpha));
        return Outcome::Inconclusive { reason, samples_needed };
    }
    if let Some(arm) = arms.iter().find(|arm| primary.observations(arm) < 2.0) {
        let reason = if primary.observations(arm) >= 1.0 {
            format!("arm {} has a single observation of the {}", arm.name, primary.name())
        } else {
            primary.nothing_observed(&arm.name)
        };
        return Outcome::inconclusive(reason);
    }
    let Some(standing) = standing else {
        return Outcome::inconclusive(format!("the {} of no arm can be computed", primary.name()));
    };
    if !standing.unresolved.is_empty() {
        let others: Vec<&str> = standing
            .unresolved
            .iter()
            .map(|&other| arms[other].name.as_str())
            .collect();
        let reason = format!(
            "the {} does not yet separate arm {} from arm {}",
            primary.name(),
            arms[standing.leader].name,
            others.join(", arm ")
        );
        let samples_needed = standing.samples_needed(plan, arms, alpha);
        return Outcome::Inconclusive { reason, samples_needed };
    }
    let winner = &arms[standing.leader];
    if standing.leader != 0 {
        let worse = plan.guardrails.iter().find(|&&metric| {
            let interval = metric.difference(winner, &arms[0], alpha);
            Significance::of(metric, interval.as_ref()) == Significance::Worse
        });
        if let Some(metric) = worse {
            return Outcome::inconclusive(format!(
                "arm {} is better on the {} but worse than control on the {}",
                winner.name,
                primary.name(),
                metric.name()
            ));
        }
        // A guardrail the winner has no data for, though control has, cannot vouch for it: a
        // variant that stopped streaming has no stream gaps to be worse on.
        let unseen = plan
            .guardrails
            .iter()
            .find(|&&metric| metric.observations(winner) < 1.0 && metric.observations(&arms[0]) >= 1.0);
        if let Some(metric) = unseen {
            return Outcome::inconclusive(format!(
                "arm {} is better on the {} but has no {} to compare with control's",
                winner.name,
                primary.name(),
                metric.name()
            ));
        }
    }
    Outcome::Winner {
        arm: winner.name.clone(),
    }
}

/// The arm with the best primary value and the arms it is not yet significantly better than.
struct Standing {
    leader: usize,
    unresolved: Vec<usize>,
    /// The primary interval of `leader - other`, indexed by `other`.
    against: Vec<Option<Interval>>,
}

impl Standing {
    /// `None` when no arm's primary value can be computed.
    fn new(primary: Metric, arms: &[ArmSummary], alpha: f64) -> Option<Standing> {
        let sign = if primary.higher_is_better() { 1.0 } else { -1.0 };
        let leader = (0..arms.len())
            .filter_map(|index| Some((index, sign * primary.value(&arms[index])?)))
            .fold(None, |best: Option<(usize, f64)>, (index, value)| match best {
                Some((_, top)) if top >= value => best,
                _ => Some((index, value)),
            })?
            .0;
        // Only the winner candidate's pairs decide: any winner has the best point value,
        // because its difference with every other arm lies on the better side.
        let against: Vec<Option<Interval>> = arms
            .iter()
            .enumerate()
            .map(|(other, arm)| {
                (other != leader)
                    .then(|| primary.difference(&arms[leader], arm, alpha))
                    .flatten()
            })
            .collect();
        let unresolved = (0..arms.len())
            .filter(|&other| other != leader)
            .filter(|&other| Significance::of(primary, against[other].as_ref()) != Significance::Better)
            .collect();
        Some(Standing {
            leader,
            unresolved,
            against,
        })
    }

    /// Observations per arm for the leader's unresolved comparisons to resolve an effect of the
    /// size estimated today, or of `min_effect` relative to control when the plan gives one;
    /// the largest over those comparisons. `None` for quantiles, which are bounded by buckets.
    fn samples_needed(&self, plan: &Plan, arms: &[ArmSummary], alpha: f64) -> Option<f64> {
        let primary = plan.primary;
        let planned = match plan.min_effect {
            Some(relative) => Some((relative * primary.value(&arms[0])?).abs()),
            None => None,
        };
        let leader = primary.observation_variance(&arms[self.leader])?;
        self.unresolved.iter().try_fold(None, |most: Option<f64>, &other| {
            let effect = planned.or_else(|| self.against[other].map(|i| i.estimate.abs()))?;
            let needed =
                confidence::samples_for_half_width(leader, primary.observation_variance(&arms[other])?, effect, alpha)?;
            Some(Some(most.map_or(needed, |most| most.max(needed))))
        })?
    }
}

#[cfg(test)]
mod tests;
