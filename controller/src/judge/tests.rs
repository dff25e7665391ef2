use super::*;
use crate::rollout::validate::ValidAnalysis;
use crate::rollout::{CheckMetric, MetricsSource};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution};
use std::time::Duration;
use weir_proxy::metrics::LATENCY_BUCKETS;

fn analysis(checks: Vec<ValidCheck>) -> ValidAnalysis {
    ValidAnalysis {
        interval: Duration::from_secs(15),
        min_requests: 100,
        failure_limit: 2,
        false_abort_rate: 0.01,
        checks,
        source: MetricsSource::default(),
    }
}

fn compare(metric: CheckMetric) -> ValidCheck {
    ValidCheck::Metric {
        metric,
        max: None,
        max_over_stable: None,
        max_ms: None,
        max_ratio_to_stable: None,
    }
}

fn default_analysis() -> ValidAnalysis {
    analysis(vec![compare(CheckMetric::ErrorRatio), compare(CheckMetric::LatencyP99)])
}

fn bounds() -> Vec<f64> {
    LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect()
}

/// A histogram with `n` observations all at `seconds`.
fn all_at(n: u64, seconds: f64) -> Buckets {
    let bounds = bounds();
    let cumulative = bounds.iter().map(|b| if seconds <= *b { n } else { 0 }).collect();
    Buckets { bounds, cumulative }
}

fn side(requests: u64, errors: u64, seconds: f64) -> SideCounters {
    SideCounters {
        requests,
        errors,
        latency: all_at(requests, seconds),
        first_byte: all_at(requests, seconds / 2.0),
    }
}

fn add(a: &Counters, b: &Counters) -> Counters {
    let mut sum = a.clone();
    sum.stable.add(&b.stable);
    sum.candidate.add(&b.candidate);
    sum
}

#[test]
fn the_first_look_is_inconclusive_and_sets_the_baseline() {
    let current = Counters {
        stable: side(100, 1, 0.05),
        candidate: side(10, 0, 0.05),
    };
    let j = judge(&default_analysis(), &Evidence::default(), &current);
    assert_eq!(j.verdict, VerdictKind::Inconclusive);
    assert_eq!(j.evidence.baseline, Some(current));
}

#[test]
fn too_few_candidate_requests_is_inconclusive_never_a_pass() {
    let base = Counters {
        stable: side(0, 0, 0.05),
        candidate: side(0, 0, 0.05),
    };
    let now = Counters {
        stable: side(5000, 10, 0.05),
        candidate: side(99, 0, 0.05),
    };
    let j = judge(&default_analysis(), &Evidence::starting_at(Some(base)), &now);
    assert_eq!(j.verdict, VerdictKind::Inconclusive);
    assert!(
        j.reason.starts_with("99 candidate requests in the window, 100 needed"),
        "{}",
        j.reason
    );
}

#[test]
fn an_equal_candidate_with_enough_data_passes() {
    let base = Counters::default();
    let now = Counters {
        stable: side(9500, 95, 0.05),
        candidate: side(500, 5, 0.05),
    };
    let j = judge(&default_analysis(), &Evidence::starting_at(Some(base)), &now);
    assert_eq!(j.verdict, VerdictKind::Pass, "{}", j.reason);
    assert_eq!(j.values.candidate.error_ratio, Some(0.01));
    assert!(
        (j.values.threshold - 200.0).abs() < 1e-9,
        "two comparisons share falseAbortRate"
    );
}

#[test]
fn a_failing_candidate_is_aborted_decisively_even_on_thin_data() {
    let base = Counters::default();
    let now = Counters {
        stable: side(950, 1, 0.05),
        candidate: side(50, 25, 0.05),
    };
    let j = judge(&default_analysis(), &Evidence::starting_at(Some(base)), &now);
    assert_eq!((j.verdict, j.decisive), (VerdictKind::Fail, true), "{}", j.reason);
    assert!(j.reason.contains("worse than stable on errors"), "{}", j.reason);
}

#[test]
fn a_slow_candidate_is_aborted_by_the_latency_test() {
    let base = Counters::default();
    let mut stable = side(9500, 0, 0.05);
    // One percent of stable is at 150 ms, so the pooled p99 sits in stable's tail.
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
    let now = Counters {
        stable: stable.clone(),
        candidate: side(500, 0, 0.4),
    };
    // The first window learns stable's p99; the second judges against it.
    let first = judge(&default_analysis(), &Evidence::starting_at(Some(base)), &now);
    assert_eq!(first.evidence.latency_threshold, Some(0.05));
    let later = add(&now, &now);
    let j = judge(&default_analysis(), &first.evidence, &later);
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
    let now = Counters {
        stable: side(9500, 95, 0.05),
        candidate: side(500, 5, 0.05),
    };
    let j = judge(
        &analysis(checks),
        &Evidence::starting_at(Some(Counters::default())),
        &now,
    );
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
    let j = judge(
        &analysis(vec![latency]),
        &Evidence::starting_at(Some(Counters::default())),
        &now,
    );
    assert_eq!(j.verdict, VerdictKind::Fail, "{}", j.reason);
    assert!(
        j.reason.starts_with("latency-p99 49.8ms is over its limit 20ms"),
        "{}",
        j.reason
    );
}

#[test]
fn a_restarted_proxy_counts_from_zero_again() {
    let base = Counters {
        stable: side(100_000, 1000, 0.05),
        candidate: side(5000, 50, 0.05),
    };
    let now = Counters {
        stable: side(9500, 95, 0.05),
        candidate: side(500, 5, 0.05),
    };
    let j = judge(&default_analysis(), &Evidence::starting_at(Some(base)), &now);
    assert_eq!(j.values.candidate.requests, 500);
    assert_eq!(j.verdict, VerdictKind::Pass, "{}", j.reason);
}

#[test]
fn quantiles_interpolate_inside_buckets() {
    let b = Buckets {
        bounds: vec![0.1, 0.2, f64::INFINITY],
        cumulative: vec![50, 100, 100],
    };
    assert_eq!(b.quantile(0.5), Some(0.1));
    assert!((b.quantile(0.75).expect("data") - 0.15).abs() < 1e-9);
    assert_eq!(b.quantile_bound(0.99), Some(0.2));
    assert_eq!(b.above(0.1), 50);
    assert_eq!(Buckets::default().quantile(0.99), None);
}

// ---- Simulation: many rollouts at 5 % weight, judged every window -------------------------

/// Standard normal CDF (Abramowitz & Stegun 7.1.26; error under 1.5e-7).
fn phi(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Latencies log-normal with this median and sigma 0.5: stable's p99 is 3.2x its median.
struct Latency {
    median: f64,
}

impl Latency {
    fn bucket_probabilities(&self) -> Vec<f64> {
        let mut previous = 0.0;
        bounds()
            .iter()
            .map(|b| {
                let cdf = if b.is_infinite() {
                    1.0
                } else {
                    phi((b.ln() - self.median.ln()) / 0.5)
                };
                let p = (cdf - previous).max(0.0);
                previous = cdf;
                p
            })
            .collect()
    }
}

/// Draws `n` observations into cumulative buckets (multinomial by conditional binomials).
fn sample_buckets(rng: &mut SmallRng, n: u64, probabilities: &[f64]) -> Buckets {
    let mut left = n;
    let mut mass = 1.0;
    let mut running = 0;
    let mut cumulative = Vec::with_capacity(probabilities.len());
    for (i, p) in probabilities.iter().enumerate() {
        let k = if i + 1 == probabilities.len() || mass <= 0.0 {
            left
        } else {
            Binomial::new(left, (p / mass).clamp(0.0, 1.0))
                .expect("valid binomial")
                .sample(rng)
        };
        left -= k;
        mass -= p;
        running += k;
        cumulative.push(running);
    }
    Buckets {
        bounds: bounds(),
        cumulative,
    }
}

struct Scenario {
    candidate_error_rate: f64,
    candidate_latency: f64,
}

const RUNS: u64 = 1000;
const WEIGHT: f64 = 0.05;
const WINDOW_REQUESTS: u64 = 4000;
const MAX_WINDOWS: u64 = 50;
const STABLE_ERROR_RATE: f64 = 0.01;
const STABLE_MEDIAN: f64 = 0.05;

/// Candidate requests seen before the judge aborted, or `None` if it never did.
fn simulate(seed: u64, scenario: &Scenario) -> Option<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let a = default_analysis();
    let stable_latency = Latency { median: STABLE_MEDIAN }.bucket_probabilities();
    let candidate_latency = Latency {
        median: STABLE_MEDIAN * scenario.candidate_latency,
    }
    .bucket_probabilities();
    let mut evidence = Evidence::starting_at(Some(Counters::default()));
    let mut total = Counters::default();
    // The proxy's split is exact, so each window's candidate count is exactly its share.
    let candidate_requests = (WINDOW_REQUESTS as f64 * WEIGHT) as u64;
    let stable_requests = WINDOW_REQUESTS - candidate_requests;
    for window in 1..=MAX_WINDOWS {
        let draw = |rng: &mut SmallRng, n, p| Binomial::new(n, p).expect("valid binomial").sample(rng);
        let this = Counters {
            stable: SideCounters {
                requests: stable_requests,
                errors: draw(&mut rng, stable_requests, STABLE_ERROR_RATE),
                latency: sample_buckets(&mut rng, stable_requests, &stable_latency),
                first_byte: Buckets::default(),
            },
            candidate: SideCounters {
                requests: candidate_requests,
                errors: draw(&mut rng, candidate_requests, scenario.candidate_error_rate),
                latency: sample_buckets(&mut rng, candidate_requests, &candidate_latency),
                first_byte: Buckets::default(),
            },
        };
        total = add(&total, &this);
        let j = judge(&a, &evidence, &total);
        if j.verdict == VerdictKind::Fail && j.decisive {
            return Some(window * candidate_requests);
        }
        evidence = j.evidence;
    }
    None
}

struct Outcome {
    aborted: u64,
    median: Option<u64>,
    p90: Option<u64>,
}

fn run(scenario: &Scenario, seed: u64) -> Outcome {
    let mut detections: Vec<u64> = (0..RUNS).filter_map(|i| simulate(seed + i, scenario)).collect();
    detections.sort_unstable();
    let at = |q: f64| {
        detections
            .get(((detections.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
    };
    Outcome {
        aborted: detections.len() as u64,
        median: at(0.5),
        p90: at(0.9),
    }
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: aborted {}/{RUNS}; candidate requests before abort: median {:?}, p90 {:?}",
        o.aborted, o.median, o.p90
    );
}

#[test]
fn simulated_equal_candidates_are_rarely_aborted() {
    let o = run(
        &Scenario {
            candidate_error_rate: STABLE_ERROR_RATE,
            candidate_latency: 1.0,
        },
        1,
    );
    report("equal candidate", &o);
    // falseAbortRate 0.01 plus three standard deviations of sampling slack over 1000 runs.
    let slack = 3.0 * (RUNS as f64 * 0.01 * 0.99).sqrt();
    assert!(
        (o.aborted as f64) <= RUNS as f64 * 0.01 + slack,
        "{} false aborts",
        o.aborted
    );
}

#[test]
fn simulated_candidates_with_twice_the_errors_are_aborted() {
    let o = run(
        &Scenario {
            candidate_error_rate: 2.0 * STABLE_ERROR_RATE,
            candidate_latency: 1.0,
        },
        10_000,
    );
    report("2x error rate", &o);
    assert!(o.aborted >= 950, "only {} of {RUNS} aborted", o.aborted);
}

#[test]
fn simulated_candidates_with_one_and_a_half_times_the_p99_are_aborted() {
    let o = run(
        &Scenario {
            candidate_error_rate: STABLE_ERROR_RATE,
            candidate_latency: 1.5,
        },
        20_000,
    );
    report("1.5x p99", &o);
    assert!(o.aborted >= 950, "only {} of {RUNS} aborted", o.aborted);
}

#[test]
fn simulated_candidates_with_one_and_a_half_times_the_errors_are_reported() {
    let o = run(
        &Scenario {
            candidate_error_rate: 1.5 * STABLE_ERROR_RATE,
            candidate_latency: 1.0,
        },
        30_000,
    );
    report("1.5x error rate", &o);
    // Weaker than 2x, so slower; within 200000 requests most runs still catch it.
    assert!(o.aborted >= 500, "only {} of {RUNS} aborted", o.aborted);
}

/// A fixed-threshold check in the style of Flagger's default: every interval, the candidate's
/// error ratio over that interval is compared with a limit, and the first failure aborts.
/// Returns the share of runs aborted and the median interval of the abort.
fn fixed_threshold(
    seed: u64,
    candidate_error_rate: f64,
    limit: f64,
    candidate_per_interval: u64,
    intervals: u64,
) -> (f64, Option<u64>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut at: Vec<u64> = Vec::new();
    for _ in 0..RUNS {
        for interval in 1..=intervals {
            let errors = Binomial::new(candidate_per_interval, candidate_error_rate)
                .expect("valid")
                .sample(&mut rng);
            if errors as f64 / candidate_per_interval as f64 > limit {
                at.push(interval);
                break;
            }
        }
    }
    at.sort_unstable();
    (at.len() as f64 / RUNS as f64, at.get(at.len() / 2).copied())
}

#[test]
fn fixed_thresholds_trade_false_aborts_for_slow_detection() {
    // 100 requests/s at 5 %: 300 candidate requests per one-minute interval, 10 intervals.
    let (equal, _) = fixed_threshold(40_000, STABLE_ERROR_RATE, 0.02, 300, 10);
    let (double, median) = fixed_threshold(50_000, 2.0 * STABLE_ERROR_RATE, 0.02, 300, 10);
    println!(
        "fixed threshold 2% at 1-minute intervals: equal candidate aborted {equal:.3}, 2x aborted {double:.3}, median minute of abort {median:?}"
    );
    let (equal_tight, _) = fixed_threshold(60_000, STABLE_ERROR_RATE, 0.01, 300, 10);
    println!("fixed threshold 1% at 1-minute intervals: equal candidate aborted {equal_tight:.3}");
    // The point of the comparison: a threshold loose enough to spare equal candidates
    // still aborts them far more often than the sequential test's bound allows.
    assert!(equal > 0.05 && equal_tight > 0.5, "{equal} {equal_tight}");
}

#[test]
fn evidence_survives_a_json_round_trip_with_infinite_bounds() {
    let mut evidence = Evidence::starting_at(Some(Counters {
        stable: side(10, 1, 0.05),
        candidate: side(5, 0, 0.05),
    }));
    evidence.errors.update(100, 100, 100, 0);
    let json = serde_json::to_string(&evidence).expect("serialises");
    assert!(json.contains("\"+Inf\""), "{json}");
    let back: Evidence = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, evidence);
    assert!(back.errors.evidence().is_finite());
}
