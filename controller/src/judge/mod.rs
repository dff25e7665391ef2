//! The judge: from both sides' counters over the same window to a verdict (pass, fail,
//! inconclusive) with its numbers. Pure: no I/O, no clock.
//!
//! Two kinds of check run side by side:
//! - comparisons with stable, by anytime-valid sequential tests ([`sequential`]) on errors and
//!   on slow requests, which abort as soon as the evidence is strong and keep the chance of
//!   aborting an equal candidate under `falseAbortRate` (split evenly over the tests);
//! - fixed guardrails (`max`, `maxOverStable`, `maxMs`, `maxRatioToStable`) on each window,
//!   whose failures count toward `failureLimit`.
//!
//! A window with fewer than `minRequests` candidate requests is inconclusive, never a pass.

pub mod sequential;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::validate::{ValidAnalysis, ValidCheck};
use crate::rollout::{CheckMetric, VerdictKind};
pub use sequential::SequentialTest;

/// A latency histogram as Prometheus exposes it: upper bounds (the last may be +Inf) and the
/// cumulative count of observations at or below each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Buckets {
    /// Upper bounds in seconds, ascending. Stored as Prometheus writes `le` ("0.05", "+Inf"),
    /// since JSON has no infinity.
    #[serde(with = "le_strings")]
    #[schemars(with = "Vec<String>")]
    pub bounds: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub cumulative: Vec<u64>,
}

impl Buckets {
    /// Observations in all.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Observations above `bound` (which should be one of the bounds).
    pub fn above(&self, bound: f64) -> u64 {
        let at_or_below = self
            .bounds
            .iter()
            .zip(&self.cumulative)
            .rev()
            .find(|(b, _)| **b <= bound)
            .map(|(_, c)| *c);
        self.total() - at_or_below.unwrap_or(0)
    }

    /// The smallest bound with at least `quantile` of the observations at or below it.
    pub fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (quantile * total as f64).ceil() as u64;
        self.bounds
            .iter()
            .zip(&self.cumulative)
            .find(|(_, c)| **c >= rank)
            .map(|(b, _)| *b)
    }

    /// The quantile, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, quantile: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = quantile * total as f64;
        let i = self.cumulative.iter().position(|c| *c as f64 >= rank)?;
        let (lower, below) = if i == 0 {
            (0.0, 0)
        } else {
            (self.bounds[i - 1], self.cumulative[i - 1])
        };
        let upper = self.bounds[i];
        if upper.is_infinite() {
            return Some(lower);
        }
        let in_bucket = (self.cumulative[i] - below) as f64;
        Some(if in_bucket == 0.0 {
            upper
        } else {
            lower + (upper - lower) * (rank - below as f64) / in_bucket
        })
    }

    /// Element-wise sum (for adding proxy replicas); bounds must match or one side be empty.
    pub fn add(&mut self, other: &Buckets) {
        if self.bounds.is_empty() {
            *self = other.clone();
        } else if self.bounds == other.bounds {
            self.cumulative
                .iter_mut()
                .zip(&other.cumulative)
                .for_each(|(a, b)| *a += b);
        }
    }

    /// `self - earlier`, or `self` whole when a count went down (the proxy restarted).
    fn since(&self, earlier: &Buckets) -> Buckets {
        if self.bounds != earlier.bounds
            || self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .any(|(now, then)| now < then)
        {
            return self.clone();
        }
        Buckets {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .map(|(now, then)| now - then)
                .collect(),
        }
    }
}

mod le_strings {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bounds: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(bounds.iter().map(|b| {
            if b.is_infinite() {
                "+Inf".to_owned()
            } else {
                b.to_string()
            }
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| match text.as_str() {
                "+Inf" => Ok(f64::INFINITY),
                other => other
                    .parse()
                    .map_err(|_| D::Error::custom(format!("{other:?} is not a bucket bound"))),
            })
            .collect()
    }
}

/// One side's cumulative counters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SideCounters {
    /// Requests answered.
    pub requests: u64,
    /// Of those, errors (5xx, gRPC errors, no response).
    pub errors: u64,
    /// Whole-request durations.
    pub latency: Buckets,
    /// Times to first response byte.
    pub first_byte: Buckets,
}

impl SideCounters {
    /// Adds another replica's counters.
    pub fn add(&mut self, other: &SideCounters) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.add(&other.latency);
        self.first_byte.add(&other.first_byte);
    }

    fn since(&self, earlier: &SideCounters) -> SideCounters {
        if self.requests < earlier.requests || self.errors < earlier.errors {
            return self.clone();
        }
        SideCounters {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
            latency: self.latency.since(&earlier.latency),
            first_byte: self.first_byte.since(&earlier.first_byte),
        }
    }

    fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// Both sides' counters of one route: cumulative from the proxy, or a window's difference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// The stable side.
    pub stable: SideCounters,
    /// The candidate side.
    pub candidate: SideCounters,
}

impl Counters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            stable: self.stable.since(&earlier.stable),
            candidate: self.candidate.since(&earlier.candidate),
        }
    }
}

/// The judge's memory across windows: the sequential tests and the counters last seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Cumulative counters at the last analysis; the next window starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Counters>,
    /// Errors, candidate against stable.
    #[serde(default)]
    pub errors: SequentialTest,
    /// Requests slower than stable's p99, candidate against stable.
    #[serde(default)]
    pub latency: SequentialTest,
    /// First bytes later than stable's p99, candidate against stable.
    #[serde(default)]
    pub first_byte: SequentialTest,
    /// Stable's p99 latency bucket bound as of the last analysis: the next window's "slow".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_threshold: Option<f64>,
    /// Stable's p99 first-byte bucket bound as of the last analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_threshold: Option<f64>,
}

impl Evidence {
    /// Evidence that starts counting from `baseline`.
    pub fn starting_at(baseline: Option<Counters>) -> Self {
        Evidence {
            baseline,
            ..Evidence::default()
        }
    }
}

/// One side's numbers of a window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SideValues {
    /// Requests in the window.
    pub requests: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Errors over requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// p99 of request duration, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// p99 of time to first byte, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_p99_ms: Option<f64>,
}

/// The numbers behind a verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisValues {
    /// Stable's window.
    pub stable: SideValues,
    /// The candidate's window.
    pub candidate: SideValues,
    /// Evidence (Bayes factor) that the candidate has more errors; aborts at `threshold`.
    pub error_evidence: f64,
    /// Evidence that the candidate is slower.
    pub latency_evidence: f64,
    /// Evidence that the candidate's first byte is later.
    pub first_byte_evidence: f64,
    /// The evidence at which a comparison aborts: the number of comparisons over `falseAbortRate`.
    pub threshold: f64,
}

/// The outcome of one analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Pass, fail or inconclusive.
    pub verdict: VerdictKind,
    /// A failure strong enough to abort at once (a sequential test crossed its threshold),
    /// rather than count toward `failureLimit`.
    pub decisive: bool,
    /// Why, in one line with the numbers.
    pub reason: String,
    /// The numbers.
    pub values: AnalysisValues,
    /// The updated evidence, to store in status.
    pub evidence: Evidence,
}

/// Judges the window from `evidence.baseline` to `current` (cumulative counters).
pub fn judge(analysis: &ValidAnalysis, evidence: &Evidence, current: &Counters) -> Judgement {
    let Some(baseline) = &evidence.baseline else {
        return Judgement {
            verdict: VerdictKind::Inconclusive,
            decisive: false,
            reason: "first look at the metrics: measuring from now".into(),
            values: AnalysisValues {
                threshold: f64::INFINITY,
                ..AnalysisValues::default()
            },
            evidence: Evidence {
                baseline: Some(current.clone()),
                ..evidence.clone()
            },
        };
    };
    let window = current.since(baseline);
    let (s, c) = (&window.stable, &window.candidate);
    let mut next = Evidence {
        baseline: Some(current.clone()),
        ..evidence.clone()
    };

    let compared: Vec<CheckMetric> = analysis
        .checks
        .iter()
        .filter_map(|check| match check {
            ValidCheck::Metric { metric, .. } => Some(*metric),
            ValidCheck::Promql { .. } => None,
        })
        .collect();
    let alpha = 1.0 / threshold(analysis);
    for metric in &compared {
        match metric {
            CheckMetric::ErrorRatio => next.errors.update(c.requests, c.errors, s.requests, s.errors),
            CheckMetric::LatencyP99 => {
                update_slow(&mut next.latency, evidence.latency_threshold, &s.latency, &c.latency);
                next.latency_threshold = stable_p99_bound(&current.stable.latency).or(evidence.latency_threshold);
            }
            CheckMetric::FirstByteP99 => {
                update_slow(
                    &mut next.first_byte,
                    evidence.first_byte_threshold,
                    &s.first_byte,
                    &c.first_byte,
                );
                next.first_byte_threshold =
                    stable_p99_bound(&current.stable.first_byte).or(evidence.first_byte_threshold);
            }
        }
    }

    let side_values = |side: &SideCounters| SideValues {
        requests: side.requests,
        errors: side.errors,
        error_ratio: side.error_ratio(),
        p99_ms: side.latency.quantile(0.99).map(|v| v * 1000.0),
        first_byte_p99_ms: side.first_byte.quantile(0.99).map(|v| v * 1000.0),
    };
    let values = AnalysisValues {
        stable: side_values(s),
        candidate: side_values(c),
        error_evidence: next.errors.evidence(),
        latency_evidence: next.latency.evidence(),
        first_byte_evidence: next.first_byte.evidence(),
        threshold: 1.0 / alpha,
    };
    let summary = summary(&values);
    let verdict = |verdict, decisive, reason: String| Judgement {
        verdict,
        decisive,
        reason: format!("{reason}; {summary}"),
        values: values.clone(),
        evidence: next.clone(),
    };

    for metric in &compared {
        let (test, what) = comparison(&next, *metric);
        if test.rejects(alpha) {
            let reason = format!(
                "candidate is worse than stable on {what}: evidence {} reached {} ({} candidate vs {} stable events)",
                round(test.evidence()),
                round(1.0 / alpha),
                test.candidate_events,
                test.stable_events
            );
            return verdict(VerdictKind::Fail, true, reason);
        }
    }

    if c.requests < analysis.min_requests {
        return verdict(
            VerdictKind::Inconclusive,
            false,
            format!(
                "{} candidate requests in the window, {} needed",
                c.requests, analysis.min_requests
            ),
        );
    }
    for check in &analysis.checks {
        if let Some(breach) = guardrail_breach(check, &values) {
            return verdict(VerdictKind::Fail, false, breach);
        }
    }
    // Evidence past the square root of the threshold is not proof, but it is no pass either:
    // the weight waits while it builds (an equal candidate's evidence rarely gets there).
    let suspicion = (1.0 / alpha).sqrt();
    for metric in &compared {
        let (test, what) = comparison(&next, *metric);
        if test.evidence() >= suspicion {
            return verdict(
                VerdictKind::Inconclusive,
                false,
                format!(
                    "evidence against the candidate on {what} is building: {} of {}",
                    round(test.evidence()),
                    round(1.0 / alpha)
                ),
            );
        }
    }
    verdict(VerdictKind::Pass, false, "all checks passed".into())
}

/// The evidence at which a comparison aborts: `falseAbortRate` is split evenly over the
/// comparisons with stable, so that together they keep within it.
fn threshold(analysis: &ValidAnalysis) -> f64 {
    let comparisons = analysis
        .checks
        .iter()
        .filter(|c| matches!(c, ValidCheck::Metric { .. }))
        .count();
    comparisons.max(1) as f64 / analysis.false_abort_rate
}

fn comparison(evidence: &Evidence, metric: CheckMetric) -> (&SequentialTest, &'static str) {
    match metric {
        CheckMetric::ErrorRatio => (&evidence.errors, "errors"),
        CheckMetric::LatencyP99 => (&evidence.latency, "latency"),
        CheckMetric::FirstByteP99 => (&evidence.first_byte, "time to first byte"),
    }
}

/// Adds a window's slow requests to `test`. "Slow" is above `threshold`, stable's p99 bucket
/// bound as known *before* this window: fixed in advance, so under the null hypothesis the
/// window's slow requests still fall on each side in proportion to its traffic and the test
/// stays valid (a threshold taken from the same window could be pulled up by a slow
/// candidate, or would favour one side). A bucket bound, so both sides' counts above it are
/// exact. The first window only learns the threshold.
fn update_slow(test: &mut SequentialTest, threshold: Option<f64>, stable: &Buckets, candidate: &Buckets) {
    if let Some(threshold) = threshold {
        test.update(
            candidate.total(),
            candidate.above(threshold),
            stable.total(),
            stable.above(threshold),
        );
    }
}

/// The bucket bound at or above stable's p99, if it is finite.
fn stable_p99_bound(stable: &Buckets) -> Option<f64> {
    stable.quantile_bound(0.99).filter(|t| t.is_finite())
}

fn guardrail_breach(check: &ValidCheck, v: &AnalysisValues) -> Option<String> {
    let ValidCheck::Metric {
        metric,
        max,
        max_over_stable,
        max_ms,
        max_ratio_to_stable,
    } = check
    else {
        return None;
    };
    let (candidate, stable) = match metric {
        CheckMetric::ErrorRatio => (v.candidate.error_ratio, v.stable.error_ratio),
        CheckMetric::LatencyP99 => (v.candidate.p99_ms, v.stable.p99_ms),
        CheckMetric::FirstByteP99 => (v.candidate.first_byte_p99_ms, v.stable.first_byte_p99_ms),
    };
    let candidate = candidate?;
    let name = metric.as_str();
    if let Some(max) = max.filter(|m| candidate > *m) {
        return Some(format!("{name} {} is over its limit {max}", round(candidate)));
    }
    if let (Some(limit), Some(stable)) = (max_over_stable, stable)
        && candidate - stable > *limit
    {
        return Some(format!(
            "{name} {} is more than {limit} over stable's {}",
            round(candidate),
            round(stable)
        ));
    }
    if let Some(max) = max_ms.filter(|m| candidate > *m) {
        return Some(format!("{name} {}ms is over its limit {max}ms", round(candidate)));
    }
    if let (Some(limit), Some(stable)) = (max_ratio_to_stable, stable)
        && stable > 0.0
        && candidate / stable > *limit
    {
        return Some(format!(
            "{name} {}ms is {}x stable's {}ms, over {limit}x",
            round(candidate),
            round(candidate / stable),
            round(stable)
        ));
    }
    None
}

/// The numbers of a window in one line, for `status.message` and the demo.
pub fn summary(v: &AnalysisValues) -> String {
    let ratio = |s: &SideValues| s.error_ratio.map_or("-".to_owned(), |r| format!("{:.4}", r));
    let ms = |m: Option<f64>| m.map_or("-".to_owned(), |m| format!("{:.0}ms", m));
    format!(
        "errors {}/{} = {} (stable {}/{} = {}), p99 {} (stable {}), evidence errors {} latency {} of {}",
        v.candidate.errors,
        v.candidate.requests,
        ratio(&v.candidate),
        v.stable.errors,
        v.stable.requests,
        ratio(&v.stable),
        ms(v.candidate.p99_ms),
        ms(v.stable.p99_ms),
        round(v.error_evidence),
        round(v.latency_evidence),
        round(v.threshold)
    )
}

/// Three significant digits, for messages.
fn round(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    if x.abs() >= 1e6 {
        return format!("{x:.2e}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests;
