use super::*;
use crate::rollout::validate::{ValidAnalysis, ValidDetect};
use crate::rollout::{CheckMetric, MetricsSource};
use std::time::Duration;
use weir_proxy::metrics::LATENCY_BUCKETS;

pub(crate) fn analysis(checks: Vec<ValidCheck>) -> ValidAnalysis {
    ValidAnalysis {
        interval: Duration::from_secs(15),
        min_requests: 100,
        failure_limit: 2,
        false_abort_rate: 0.01,
        warmup: Duration::from_secs(15),
        detect: ValidDetect {
            error_ratio: 2.0,
            latency_ratio: 1.5,
            error_rate_floor: 0.001,
        },
        progress_deadline: Duration::from_secs(600),
        checks,
        source: MetricsSource::default(),
        full_weight_step: false,
    }
}

pub(crate) fn compare(metric: CheckMetric) -> ValidCheck {
    ValidCheck::Metric {
        metric,
        max: None,
        max_over_stable: None,
        max_ms: None,
        max_ratio_to_stable: None,
    }
}

pub(crate) fn default_analysis() -> ValidAnalysis {
    analysis(vec![compare(CheckMetric::ErrorRatio), compare(CheckMetric::LatencyP99)])
}

pub(crate) fn bounds() -> Vec<f64> {
    LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect()
}

/// A histogram with `n` observations all at `seconds`.
pub(crate) fn all_at(n: u64, seconds: f64) -> Buckets {
    let bounds = bounds();
    let cumulative = bounds.iter().map(|b| if seconds <= *b { n } else { 0 }).collect();
    Buckets { bounds, cumulative }
}

fn side(requests: u64, errors: u64, seconds: f64) -> SideCounters {
    SideCounters {
        requests,
        errors,
        cancelled: 0,
        latency: all_at(requests, seconds),
        first_byte: all_at(requests, seconds / 2.0),
    }
}

fn window(stable: SideCounters, candidate: SideCounters) -> Counters {
    Counters {
        stable,
        candidate,
        fail_fast_trips: 0,
        arms: Default::default(),
    }
}

fn fresh() -> Evidence {
    new_evidence(&default_analysis())
}

#[test]
fn too_few_candidate_requests_is_inconclusive_never_a_pass() {
    let w = window(side(5000, 10, 0.05), side(99, 0, 0.05));
    let j = judge(&default_analysis(), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(j.verdict, VerdictKind::Inconclusive);
    assert!(
        j.reason.starts_with("99 candidate requests in the window, 100 needed"),
        "{}",
        j.reason
    );
}

#[test]
fn an_equal_candidate_with_enough_data_for_power_passes() {
    // 1 % errors on both sides at 5 %: power against 2x needs a few thousand candidate
    // requests, so one window of 500 is not yet a pass...
    let w = window(side(9500, 95, 0.05), side(500, 5, 0.05));
    let a = default_analysis();
    let j = judge(&a, &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(j.verdict, VerdictKind::Inconclusive, "{}", j.reason);
    let power = j.values.power.clone().expect("sized");
    assert_eq!(power.requests, 500);
    assert!(power.needed > 1000 && power.needed < 5000, "{power:?}");
    assert!(j.reason.starts_with("500 of the"), "{}", j.reason);
    assert!(j.reason.contains("2x errors at stable's 1%"), "{}", j.reason);
    // ...and enough windows of it are.
    let mut evidence = j.evidence;
    let mut verdict = j.verdict;
    for _ in 0..10 {
        let j = judge(&a, &evidence, &w, &[], Mode::Concurrent);
        evidence = j.evidence;
        verdict = j.verdict;
        if verdict == VerdictKind::Pass {
            break;
        }
    }
    assert_eq!(verdict, VerdictKind::Pass);
    assert!(
        (threshold(&a) - 300.0).abs() < 1e-9,
        "errors, latency and cancellations share falseAbortRate"
    );
}

#[test]
fn a_perfect_candidate_against_a_perfect_stable_passes_in_bounded_time() {
    // No errors anywhere: sized at the floor, so a finite sample still passes.
    let w = window(side(9500, 0, 0.05), side(500, 0, 0.05));
    let a = default_analysis();
    let mut evidence = fresh();
    let mut windows = 0;
    loop {
        let j = judge(&a, &evidence, &w, &[], Mode::Concurrent);
        windows += 1;
        if j.verdict == VerdictKind::Pass {
            let power = j.values.power.expect("sized");
            assert!(power.against.contains("floor of 0.1%"), "{power:?}");
            break;
        }
        assert!(windows < 200, "still no pass after {windows} windows: {}", j.reason);
        evidence = j.evidence;
    }
}

#[test]
fn a_failing_candidate_is_aborted_decisively_even_on_thin_data() {
    let w = window(side(950, 1, 0.05), side(50, 25, 0.05));
    let j = judge(&default_analysis(), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("worse than stable on errors"), "{}", j.reason);
}

#[test]
fn a_candidate_whose_clients_give_up_is_aborted_on_cancellations() {
    let mut candidate = side(400, 0, 0.05);
    candidate.cancelled = 60;
    let mut stable = side(9600, 0, 0.05);
    stable.cancelled = 10;
    let j = judge(
        &default_analysis(),
        &fresh(),
        &window(stable, candidate),
        &[],
        Mode::Concurrent,
    );
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("worse than stable on cancellations"), "{}", j.reason);
}

#[test]
fn a_slow_candidate_is_aborted_by_the_latency_test() {
    let mut stable = side(9500, 0, 0.05);
    // One percent of stable is at 150 ms, so the p99 sits in stable's tail.
    stable.latency = Buckets {
        bounds: bounds(),
        cumulative: bounds()
            .iter()
            .map(|b| {
                if *b >= 0.15 {
                    9500
                } else if *b >= 0.05 {
                    9405
                } else {
                    0
                }
            })
            .collect(),
    };
    let w = window(stable, side(500, 0, 0.4));
    // The first window learns stable's p99; the second judges against it.
    let first = judge(&default_analysis(), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(first.evidence.latency_threshold, Some(0.05));
    let j = judge(&default_analysis(), &first.evidence, &w, &[], Mode::Concurrent);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("worse than stable on latency"), "{}", j.reason);
}

#[test]
fn guardrails_fail_without_being_decisive() {
    let mut checks = default_analysis().checks;
    checks[0] = ValidCheck::Metric {
        metric: CheckMetric::ErrorRatio,
        max: Some(0.001),
        max_over_stable: None,
        max_ms: None,
        max_ratio_to_stable: None,
    };
    let w = window(side(9500, 95, 0.05), side(500, 5, 0.05));
    let j = judge(&analysis(checks), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, false), "{}", j.reason);
    assert!(
        j.reason.starts_with("error-ratio 0.0100 is over its limit 0.001"),
        "{}",
        j.reason
    );

    let latency = ValidCheck::Metric {
        metric: CheckMetric::LatencyP99,
        max: None,
        max_over_stable: None,
        max_ms: Some(20.0),
        max_ratio_to_stable: None,
    };
    let j = judge(&analysis(vec![latency]), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(j.verdict, VerdictKind::Fail, "{}", j.reason);
    assert!(
        j.reason.starts_with("latency-p99 49.8ms is over its limit 20ms"),
        "{}",
        j.reason
    );
}

#[test]
fn promql_checks_are_evaluated_and_a_missing_value_is_inconclusive() {
    let mut a = default_analysis();
    a.checks.push(ValidCheck::Promql {
        query: "model_quality".into(),
        max: 0.2,
    });
    let w = window(side(9500, 95, 0.05), side(500, 5, 0.05));
    let j = judge(&a, &fresh(), &w, &[Ok(0.5)], Mode::Concurrent);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, false), "{}", j.reason);
    assert!(
        j.reason
            .starts_with("promql \"model_quality\" is 0.500 over its limit 0.2"),
        "{}",
        j.reason
    );
    let j = judge(
        &a,
        &fresh(),
        &w,
        &[Err("it returned no data (query \"model_quality\")".into())],
        Mode::Concurrent,
    );
    assert_eq!(j.verdict, VerdictKind::Inconclusive, "{}", j.reason);
    assert!(j.reason.contains("gave no value: it returned no data"), "{}", j.reason);
    assert_eq!(j.values.promql, vec![None]);
}

#[test]
fn at_full_weight_the_candidate_is_held_to_stables_rate_before_the_switch() {
    let mut a = default_analysis();
    a.full_weight_step = true;
    let mut evidence = new_evidence(&a);
    evidence.reference = Some(side(20_000, 200, 0.05));
    // Stable takes nothing; the candidate errs 30 %.
    let w = window(SideCounters::default(), side(500, 150, 0.05));
    let j = judge(&a, &evidence, &w, &[], Mode::AgainstReference);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(
        j.reason
            .contains("worse than stable's rate before the switch on errors"),
        "{}",
        j.reason
    );
    assert!(j.values.against_reference);

    // An equal candidate builds no evidence and, with enough requests, passes.
    let w = window(SideCounters::default(), side(5000, 50, 0.05));
    let mut passed = false;
    for _ in 0..20 {
        let j = judge(&a, &evidence, &w, &[], Mode::AgainstReference);
        assert_ne!(j.verdict, VerdictKind::Fail, "{}", j.reason);
        evidence = j.evidence;
        if j.verdict == VerdictKind::Pass {
            passed = true;
            break;
        }
    }
    assert!(passed);
}

#[test]
fn at_full_weight_with_no_reference_and_no_limit_nothing_passes() {
    let w = window(SideCounters::default(), side(5000, 1500, 0.05));
    let j = judge(&default_analysis(), &fresh(), &w, &[], Mode::AgainstReference);
    assert_eq!(j.verdict, VerdictKind::Inconclusive, "{}", j.reason);
    assert!(
        j.reason.starts_with("stable takes no traffic at this step"),
        "{}",
        j.reason
    );

    // An absolute limit judges the candidate alone.
    let mut checks = default_analysis().checks;
    checks[0] = ValidCheck::Metric {
        metric: CheckMetric::ErrorRatio,
        max: Some(0.05),
        max_over_stable: None,
        max_ms: None,
        max_ratio_to_stable: None,
    };
    let j = judge(&analysis(checks), &fresh(), &w, &[], Mode::AgainstReference);
    assert_eq!(j.verdict, VerdictKind::Fail, "{}", j.reason);
}

#[test]
fn evidence_survives_a_json_round_trip() {
    let mut evidence = fresh();
    evidence.reference = Some(side(10, 1, 0.05));
    evidence.errors.update(100, 100, 100, 0);
    let json = serde_json::to_string(&evidence).expect("serialises");
    assert!(json.contains("\"+Inf\""), "{json}");
    let back: Evidence = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, evidence);
    assert!(back.errors.evidence().is_finite());
}

#[test]
fn preview_testers_are_not_compared_with_production_only_guardrailed() {
    // Testers hit the candidate's edge cases: 20x stable's error rate, on a candidate that is
    // as good as stable. Compared as a random share, that would abort it.
    let w = window(side(20_000, 40, 0.05), side(200, 8, 0.05));
    let concurrent = judge(&default_analysis(), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(
        (concurrent.verdict, concurrent.decisive),
        (VerdictKind::Fail, true),
        "{}",
        concurrent.reason
    );
    let preview = judge(&default_analysis(), &fresh(), &w, &[], Mode::Preview);
    assert_eq!(preview.verdict, VerdictKind::Pass, "{}", preview.reason);
    assert!(
        preview.reason.starts_with("the preview passed its guardrails"),
        "{}",
        preview.reason
    );
    assert_eq!(preview.evidence.errors.evidence(), 1.0, "no evidence from testers");
    assert_eq!(
        preview.evidence.step.stable.requests, 20_000,
        "stable's windows still count, for the reference"
    );
    // The guardrails the user wrote still judge the preview.
    let mut checks = default_analysis().checks;
    checks[0] = ValidCheck::Metric {
        metric: CheckMetric::ErrorRatio,
        max: Some(0.01),
        max_over_stable: None,
        max_ms: None,
        max_ratio_to_stable: None,
    };
    let j = judge(&analysis(checks), &fresh(), &w, &[], Mode::Preview);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, false), "{}", j.reason);
}

#[test]
fn a_window_whose_guardrails_held_is_checked_even_while_power_is_short() {
    let w = window(side(9500, 95, 0.05), side(500, 5, 0.05));
    let j = judge(&default_analysis(), &fresh(), &w, &[], Mode::Concurrent);
    assert_eq!(j.verdict, VerdictKind::Inconclusive, "{}", j.reason);
    assert!(j.checked, "{}", j.reason);
    let thin = window(side(9500, 95, 0.05), side(50, 0, 0.05));
    assert!(!judge(&default_analysis(), &fresh(), &thin, &[], Mode::Concurrent).checked);
}

#[test]
fn latency_at_full_weight_is_held_only_to_a_reference_at_the_same_load() {
    let mut a = default_analysis();
    a.full_weight_step = true;
    let mut evidence = new_evidence(&a);
    evidence.latency_threshold = Some(0.05);
    evidence.reference = Some(side(20_000, 200, 0.05));
    // All of the candidate's requests are slower than the threshold: at twice the load per
    // pod that the reference step's stable carried, that is no evidence of a worse version.
    let slow = window(SideCounters::default(), side(5000, 50, 0.1));
    evidence.reference_share = Some(0.5);
    let j = judge(&a, &evidence, &slow, &[], Mode::AgainstReference);
    assert_ne!(j.verdict, VerdictKind::Fail, "{}", j.reason);
    assert_eq!(j.evidence.latency.evidence(), 1.0);
    // With stable at 95 % in the reference step, the same window is a slower candidate.
    evidence.reference_share = Some(0.95);
    let j = judge(&a, &evidence, &slow, &[], Mode::AgainstReference);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("on latency"), "{}", j.reason);
}

#[test]
fn a_candidate_hanging_at_full_weight_is_aborted_on_cancellations_whatever_the_reference_load() {
    // After a 50 % step the reference was measured at half the load, so latency is not
    // compared at 100 %; a candidate that hangs there, its clients giving up (their gRPC
    // deadlines are theirs to count), must still be caught.
    let mut a = default_analysis();
    a.full_weight_step = true;
    let mut evidence = new_evidence(&a);
    let mut reference = side(20_000, 200, 0.05);
    reference.cancelled = 20;
    evidence.reference = Some(reference);
    evidence.reference_share = Some(0.5);
    let mut candidate = side(5000, 50, 0.05);
    candidate.cancelled = 500;
    let hung = window(SideCounters::default(), candidate);
    let j = judge(&a, &evidence, &hung, &[], Mode::AgainstReference);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("on cancellations"), "{}", j.reason);
    assert_eq!(
        j.evidence.latency.evidence(),
        1.0,
        "latency is not compared at another load"
    );
}
