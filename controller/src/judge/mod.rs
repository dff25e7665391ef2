//! The judge: from one window of both sides' counters to a verdict (pass, fail, inconclusive)
//! with its numbers. Pure: no I/O, no clock.
//!
//! Three kinds of check run side by side:
//! - comparisons with stable, by anytime-valid sequential tests ([`crate::stats::sequential`])
//!   on errors, on cancellations (clients that gave up before the response ended), and on slow
//!   requests and late first bytes, which abort as soon as the evidence is strong and keep the
//!   chance of aborting an equal candidate under `falseAbortRate` (split evenly over them);
//! - fixed guardrails (`max`, `maxOverStable`, `maxMs`, `maxRatioToStable`, PromQL checks) on
//!   each window, whose failures count toward `failureLimit`;
//! - power: a step passes only once the candidate has had the requests that give the tests
//!   80 % power against `analysis.detect` ([`crate::stats::power`]).
//!
//! When stable takes no traffic (a blue-green switch, a 100 % step) the candidate is compared
//! with an upper confidence bound on stable's rates from its last step with traffic (the
//! reference); with no reference and no absolute limit there is nothing to judge by, and the
//! window is inconclusive.

mod checks;

use crate::counters::{Buckets, Counters, SideCounters};
use crate::rollout::CheckMetric;
use crate::rollout::validate::{ValidAnalysis, ValidCheck};
use crate::stats::{SequentialTest, bound, power};
use crate::status::{AnalysisValues, Evidence, Power, SideValues, VerdictKind};

/// Share of the error test's prior weight on `detect.errorRatio`.
const FOCUS: f64 = 0.6;
/// Share of each comparison's error budget spent on the bound on stable's rate, when a step
/// judges against it.
const BOUND_SHARE: f64 = 0.2;
/// Stable observations a step needs before its p99 replaces the slow-request threshold.
const MIN_THRESHOLD_SAMPLE: u64 = 100;
/// The power a passing step's sample must give.
const POWER_Z: f64 = power::Z_80;

/// How the candidate is compared in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Both sides take traffic split by weight: compare them in the same window.
    Concurrent,
    /// Stable takes none: compare the candidate with stable's reference from before.
    AgainstReference,
    /// A blue-green preview: the candidate's requests are testers', chosen by header, not a
    /// random share of production, so comparing their rates with stable's would test the
    /// testers, not the candidate. Only the guardrails judge; stable's windows become the
    /// reference for the switch.
    Preview,
}

/// Least share of the traffic stable must have carried in the reference step for the
/// candidate's latency at full weight to be held to it: latency depends on load per pod, and a
/// stable that carried half the traffic was faster than the same pods at all of it.
const REFERENCE_LOAD_SHARE: f64 = 0.9;

/// A custom PromQL check's value this window, or why there is none.
pub type PromqlValue = Result<f64, String>;

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
    /// Whether every guardrail was evaluated on this window and none was breached: such a
    /// window ends a run of consecutive failed checks, even if it is not yet a pass.
    pub checked: bool,
}

/// Fresh evidence for a rollout under `analysis`: the error test focuses its prior on
/// `detect.errorRatio`.
pub fn new_evidence(analysis: &ValidAnalysis) -> Evidence {
    Evidence {
        errors: SequentialTest::focused(analysis.detect.error_ratio, FOCUS),
        ..Evidence::default()
    }
}

/// The error budget of one comparison.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// For the sequential test: it aborts at `1 / test`.
    test: f64,
    /// For the bound on stable's rate, at full weight.
    bound: f64,
}

impl Budget {
    fn of(analysis: &ValidAnalysis) -> Budget {
        let share = analysis.false_abort_rate / comparisons(analysis).len() as f64;
        if analysis.full_weight_step {
            Budget {
                test: share * (1.0 - BOUND_SHARE),
                bound: share * BOUND_SHARE,
            }
        } else {
            Budget {
                test: share,
                bound: 0.0,
            }
        }
    }
}

/// A sequential comparison with stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Errors,
    Cancellations,
    Latency,
    FirstByte,
}

impl Comparison {
    fn what(self) -> &'static str {
        match self {
            Comparison::Errors => "errors",
            Comparison::Cancellations => "cancellations",
            Comparison::Latency => "latency",
            Comparison::FirstByte => "time to first byte",
        }
    }

    fn test(self, evidence: &Evidence) -> &SequentialTest {
        match self {
            Comparison::Errors => &evidence.errors,
            Comparison::Cancellations => &evidence.cancellations,
            Comparison::Latency => &evidence.latency,
            Comparison::FirstByte => &evidence.first_byte,
        }
    }
}

/// The comparisons the checks ask for; cancellations are always compared, since a hung
/// candidate shows nowhere else.
fn comparisons(analysis: &ValidAnalysis) -> Vec<Comparison> {
    let mut list: Vec<Comparison> = analysis
        .checks
        .iter()
        .filter_map(|check| match check {
            ValidCheck::Metric { metric, .. } => Some(match metric {
                CheckMetric::ErrorRatio => Comparison::Errors,
                CheckMetric::LatencyP99 => Comparison::Latency,
                CheckMetric::FirstByteP99 => Comparison::FirstByte,
            }),
            ValidCheck::Promql { .. } => None,
        })
        .collect();
    list.push(Comparison::Cancellations);
    list
}

/// The evidence at which a comparison aborts.
pub fn threshold(analysis: &ValidAnalysis) -> f64 {
    1.0 / Budget::of(analysis).test
}

/// Judges one window (`window`: both sides' increase since the window began) under `mode`,
/// with the custom checks' values `promql` in check order.
pub fn judge(
    analysis: &ValidAnalysis,
    evidence: &Evidence,
    window: &Counters,
    promql: &[PromqlValue],
    mode: Mode,
) -> Judgement {
    let budget = Budget::of(analysis);
    let compared = comparisons(analysis);
    let (s, c) = (&window.stable, &window.candidate);
    let mut next = evidence.clone();
    next.step.add(window);
    let reference = match mode {
        Mode::Concurrent | Mode::Preview => None,
        Mode::AgainstReference => evidence.reference.as_ref(),
    };
    let reference_at_load = evidence.reference_share.is_some_and(|s| s >= REFERENCE_LOAD_SHARE);

    if mode != Mode::Preview {
        for comparison in &compared {
            // Slowness grows with load per pod: against a reference, latency is compared only
            // at the load the reference was measured at. Cancellations are compared always,
            // though clients give up more on a slower service: a candidate that hangs at full
            // weight shows only there once its clients' deadlines count as theirs, and it
            // must not pass (an abort of a candidate that is merely slower under twice the
            // reference's load is the price).
            let load_bound = matches!(comparison, Comparison::Latency | Comparison::FirstByte);
            if reference.is_some() && load_bound && !reference_at_load {
                continue;
            }
            update(&mut next, evidence, *comparison, s, c, reference, budget);
        }
    }
    if mode != Mode::AgainstReference {
        // "Slow" for the next window: stable's p99 as known now, from the step so far.
        if next.step.stable.latency.total() >= MIN_THRESHOLD_SAMPLE {
            next.latency_threshold = stable_p99_bound(&next.step.stable.latency).or(next.latency_threshold);
        }
        if next.step.stable.first_byte.total() >= MIN_THRESHOLD_SAMPLE {
            next.first_byte_threshold = stable_p99_bound(&next.step.stable.first_byte).or(next.first_byte_threshold);
        }
    }

    let stable_shown = match reference {
        Some(r) => side_values(r),
        None => side_values(s),
    };
    let mut values = AnalysisValues {
        stable: stable_shown,
        candidate: side_values(c),
        against_reference: reference.is_some(),
        error_evidence: next.errors.evidence(),
        cancel_evidence: next.cancellations.evidence(),
        latency_evidence: next.latency.evidence(),
        first_byte_evidence: next.first_byte.evidence(),
        threshold: 1.0 / budget.test,
        power: None,
        promql: promql.iter().map(|v| v.as_ref().ok().copied()).collect(),
    };
    values.power = match mode {
        Mode::Preview => None,
        _ => step_power(analysis, &next, mode, budget, &compared, reference_at_load),
    };
    let summary = summary(&values);
    let verdict = |verdict, decisive, reason: String| Judgement {
        verdict,
        decisive,
        reason: format!("{reason}; {summary}"),
        values: values.clone(),
        evidence: next.clone(),
        checked: false,
    };
    let checked = |j: Judgement| Judgement { checked: true, ..j };

    for comparison in &compared {
        let test = comparison.test(&next);
        if test.rejects(budget.test) {
            let against = if reference.is_some() {
                "stable's rate before the switch"
            } else {
                "stable"
            };
            let reason = format!(
                "candidate is worse than {against} on {}: evidence {} reached {} ({} candidate vs {} stable events)",
                comparison.what(),
                round(test.evidence()),
                round(1.0 / budget.test),
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
    if mode == Mode::AgainstReference && reference.is_none() && !checks::has_absolute_limit(&analysis.checks) {
        return verdict(
            VerdictKind::Inconclusive,
            false,
            "stable takes no traffic at this step and no window of it was seen before; add an absolute limit \
             (max, maxMs or a promql check) to judge the candidate alone"
                .into(),
        );
    }
    let mut promql_values = promql.iter();
    for check in &analysis.checks {
        let outcome = match check {
            ValidCheck::Promql { query, max } => match promql_values.next() {
                Some(Ok(value)) if value > max => Some(Err(format!(
                    "promql {query:?} is {} over its limit {max}",
                    round(*value)
                ))),
                Some(Ok(_)) => None,
                Some(Err(why)) => Some(Ok(format!("promql {query:?} gave no value: {why}"))),
                None => Some(Ok(format!("promql {query:?} was not evaluated"))),
            },
            metric => checks::breach(metric, &values).map(Err),
        };
        match outcome {
            Some(Err(breach)) => return verdict(VerdictKind::Fail, false, breach),
            Some(Ok(no_value)) => return verdict(VerdictKind::Inconclusive, false, no_value),
            None => {}
        }
    }
    // Evidence past the square root of the threshold is not proof, but it is no pass either:
    // the weight waits while it builds (an equal candidate's evidence rarely gets there).
    let suspicion = (1.0 / budget.test).sqrt();
    for comparison in &compared {
        let test = comparison.test(&next);
        if test.evidence() >= suspicion {
            return checked(verdict(
                VerdictKind::Inconclusive,
                false,
                format!(
                    "evidence against the candidate on {} is building: {} of {}",
                    comparison.what(),
                    round(test.evidence()),
                    round(1.0 / budget.test)
                ),
            ));
        }
    }
    if let Some(p) = values.power.as_ref().filter(|p| p.requests < p.needed) {
        return checked(verdict(
            VerdictKind::Inconclusive,
            false,
            format!(
                "{} of the {} candidate requests this step needs to catch {}",
                p.requests, p.needed, p.against
            ),
        ));
    }
    let reason = if mode == Mode::Preview {
        "the preview passed its guardrails (testers' requests are not compared with stable's)"
    } else {
        "all checks passed"
    };
    checked(verdict(VerdictKind::Pass, false, reason.into()))
}

/// Adds a window to one comparison's test.
fn update(
    next: &mut Evidence,
    before: &Evidence,
    comparison: Comparison,
    stable: &SideCounters,
    candidate: &SideCounters,
    reference: Option<&SideCounters>,
    budget: Budget,
) {
    // "Slow" is above a threshold fixed before this window, stable's p99 bucket bound as
    // known before it: under the null hypothesis the window's slow requests still fall on each
    // side in proportion to its traffic and the test stays valid (a threshold taken from the
    // same window could be pulled up by a slow candidate, or would favour one side). A bucket
    // bound, so both sides' counts above it are exact. Until it is known, nothing is slow.
    let bad = |side: &SideCounters| -> Option<(u64, u64)> {
        match comparison {
            Comparison::Errors => Some((side.requests, side.errors)),
            Comparison::Cancellations => Some((side.requests, side.cancelled)),
            Comparison::Latency => before
                .latency_threshold
                .map(|t| (side.latency.total(), side.latency.above(t))),
            Comparison::FirstByte => before
                .first_byte_threshold
                .map(|t| (side.first_byte.total(), side.first_byte.above(t))),
        }
    };
    let test = match comparison {
        Comparison::Errors => &mut next.errors,
        Comparison::Cancellations => &mut next.cancellations,
        Comparison::Latency => &mut next.latency,
        Comparison::FirstByte => &mut next.first_byte,
    };
    let Some((c_n, c_bad)) = bad(candidate) else { return };
    match reference {
        None => {
            if let Some((s_n, s_bad)) = bad(stable) {
                test.update(c_n, c_bad, s_n, s_bad);
            }
        }
        Some(reference) => {
            if let Some(p0) = bad(reference).and_then(|(n, x)| bound::upper(x, n, budget.bound)) {
                test.update_against(c_n, c_bad, p0);
            }
        }
    }
}

/// How far the step's judged windows are toward a sample with power against `detect`, for the
/// comparisons that can be sized. Errors are sized at stable's error rate in the step (at least
/// `errorRateFloor`); latency at the rate of stable's requests over the threshold (at least one
/// in the sample), against a candidate `latencyRatio` times slower at every request, whose rate
/// over the threshold is read off stable's own histogram at `threshold / latencyRatio`.
fn step_power(
    analysis: &ValidAnalysis,
    evidence: &Evidence,
    mode: Mode,
    budget: Budget,
    compared: &[Comparison],
    reference_at_load: bool,
) -> Option<Power> {
    let detect = analysis.detect;
    let step = &evidence.step;
    let (stable, share) = match mode {
        Mode::Concurrent => {
            if step.stable.requests == 0 || step.candidate.requests == 0 {
                return None;
            }
            // In floating point, so that counts near u64::MAX cannot wrap the sum.
            let candidate = step.candidate.requests as f64;
            (&step.stable, candidate / (candidate + step.stable.requests as f64))
        }
        Mode::AgainstReference => (evidence.reference.as_ref()?, 1.0),
        Mode::Preview => return None,
    };
    let size = |test: &SequentialTest, n: u64, events: u64, base: f64, ratio: f64| -> Option<u64> {
        match mode {
            Mode::Concurrent | Mode::Preview => power::concurrent(test, share, base, ratio, budget.test, POWER_Z),
            Mode::AgainstReference => {
                let p0 = bound::upper(events, n, budget.bound)?.max(base);
                power::against_bound(test, p0, base, ratio, budget.test, POWER_Z)
            }
        }
    };
    let mut needs: Vec<(u64, String)> = Vec::new();
    if compared.contains(&Comparison::Errors) && stable.requests > 0 {
        let observed = stable.errors as f64 / stable.requests as f64;
        let base = observed.max(detect.error_rate_floor);
        if let Some(n) = size(
            &evidence.errors,
            stable.requests,
            stable.errors,
            base,
            detect.error_ratio,
        ) {
            let at = if observed < detect.error_rate_floor {
                format!(
                    "the floor of {}% (stable's is {}%)",
                    percent(detect.error_rate_floor),
                    percent(observed)
                )
            } else {
                format!("stable's {}%", percent(observed))
            };
            needs.push((n, format!("{}x errors at {at}", detect.error_ratio)));
        }
    }
    let latency_compared = mode == Mode::Concurrent || reference_at_load;
    if compared.contains(&Comparison::Latency)
        && latency_compared
        && let Some(threshold) = evidence.latency_threshold
    {
        let hist: &Buckets = &stable.latency;
        if let (Some(slow), Some(shifted)) = (
            hist.share_above(threshold),
            hist.share_above(threshold / detect.latency_ratio),
        ) {
            // Stable's rate over the threshold is at most about 1 % by its definition; when
            // the step saw none, take it as one in the sample rather than zero.
            let base = slow.max(1.0 / hist.total().saturating_add(1) as f64);
            let ratio = shifted / base;
            let slow_events = hist.above(threshold);
            if ratio > 1.0
                && let Some(n) = size(&evidence.latency, hist.total(), slow_events, base, ratio)
            {
                needs.push((n, format!("{}x latency", detect.latency_ratio)));
            }
        }
    }
    let (needed, against) = needs.into_iter().max_by_key(|(n, _)| *n)?;
    Some(Power {
        requests: step.candidate.requests,
        needed,
        against,
    })
}

/// A window's numbers, shown without judging it (a warm-up).
pub fn observed(window: &Counters) -> AnalysisValues {
    AnalysisValues {
        stable: side_values(&window.stable),
        candidate: side_values(&window.candidate),
        ..AnalysisValues::default()
    }
}

/// The bucket bound at or above stable's p99, if it is finite.
fn stable_p99_bound(stable: &Buckets) -> Option<f64> {
    stable.quantile_bound(0.99).filter(|t| t.is_finite())
}

fn side_values(side: &SideCounters) -> SideValues {
    SideValues {
        requests: side.requests,
        errors: side.errors,
        cancelled: side.cancelled,
        error_ratio: side.error_ratio(),
        p99_ms: side.latency.quantile(0.99).map(|v| v * 1000.0),
        first_byte_p99_ms: side.first_byte.quantile(0.99).map(|v| v * 1000.0),
    }
}

/// The numbers of a window in one line, for `status.message` and the demo.
pub fn summary(v: &AnalysisValues) -> String {
    let ratio = |s: &SideValues| s.error_ratio.map_or("-".to_owned(), |r| format!("{:.4}", r));
    let ms = |m: Option<f64>| m.map_or("-".to_owned(), |m| format!("{:.0}ms", m));
    let stable = if v.against_reference {
        "stable before the switch"
    } else {
        "stable"
    };
    let cancelled = if v.candidate.cancelled + v.stable.cancelled > 0 {
        format!(
            ", cancelled {} ({stable} {})",
            v.candidate.cancelled, v.stable.cancelled
        )
    } else {
        String::new()
    };
    format!(
        "errors {}/{} = {} ({stable} {}/{} = {}){cancelled}, p99 {} ({stable} {}), evidence errors {} latency {} of {}",
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

/// A rate as a percentage with three significant digits and no trailing zeros: `0.5`, `1.25`.
fn percent(rate: f64) -> String {
    let text = round(rate * 100.0);
    if text.contains('.') && !text.contains('e') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Three significant digits, for messages.
pub fn round(x: f64) -> String {
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
pub(crate) mod sim;
#[cfg(test)]
pub(crate) mod tests;
