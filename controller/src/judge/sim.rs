//! Seeded simulations of the judge: 1000 rollouts per scenario at 5 % weight, judged every
//! window, next to an oracle SPRT that knows the true ratio and runs on the same data at the
//! same error bound. Each prints its aborts and the median and p90 candidate requests to abort.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution};

use super::tests::{bounds, default_analysis};
use super::*;

/// Standard normal CDF (Abramowitz & Stegun 7.1.26; error under 1.5e-7).
pub(crate) fn phi(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Probabilities of each latency bucket for log-normal latencies with this median and
/// sigma 0.5 (stable's p99 is 3.2x its median).
pub(crate) fn bucket_probabilities(median: f64) -> Vec<f64> {
    let mut previous = 0.0;
    bounds()
        .iter()
        .map(|b| {
            let cdf = if b.is_infinite() {
                1.0
            } else {
                phi((b.ln() - median.ln()) / 0.5)
            };
            let p = (cdf - previous).max(0.0);
            previous = cdf;
            p
        })
        .collect()
}

/// Draws `n` observations into cumulative buckets (multinomial by conditional binomials).
pub(crate) fn sample_buckets(rng: &mut SmallRng, n: u64, probabilities: &[f64]) -> Buckets {
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

/// How a candidate (and stable) behave in a scenario.
#[derive(Clone, Copy)]
pub(crate) struct Scenario {
    pub stable_error_rate: f64,
    pub candidate_error_rate: f64,
    pub stable_cancel_rate: f64,
    pub candidate_cancel_rate: f64,
    pub candidate_latency: f64,
}

impl Scenario {
    pub(crate) fn equal() -> Self {
        Scenario {
            stable_error_rate: STABLE_ERROR_RATE,
            candidate_error_rate: STABLE_ERROR_RATE,
            stable_cancel_rate: 0.001,
            candidate_cancel_rate: 0.001,
            candidate_latency: 1.0,
        }
    }
}

const RUNS: u64 = 1000;
const WEIGHT: f64 = 0.05;
const WINDOW_REQUESTS: u64 = 2000;
const MAX_WINDOWS: u64 = 200;
const STABLE_ERROR_RATE: f64 = 0.01;
const STABLE_MEDIAN: f64 = 0.05;

/// Candidate requests seen when weir's judge aborted and when the oracle did (`None`: never
/// within the run).
fn simulate(seed: u64, scenario: &Scenario, oracle_ratio: f64) -> (Option<u64>, Option<u64>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let a = default_analysis();
    let stable_latency = bucket_probabilities(STABLE_MEDIAN);
    let candidate_latency = bucket_probabilities(STABLE_MEDIAN * scenario.candidate_latency);
    let mut evidence = new_evidence(&a);
    // The oracle: Wald's SPRT of the true ratio against 1, on the errors, at the error test's
    // own bound.
    let alpha = 1.0 / threshold(&a);
    let mut oracle_llr = 0.0;
    let (mut weir_at, mut oracle_at) = (None, None);
    // The proxy's split is exact, so each window's candidate count is exactly its share.
    let candidate_requests = (WINDOW_REQUESTS as f64 * WEIGHT) as u64;
    let stable_requests = WINDOW_REQUESTS - candidate_requests;
    let draw = |rng: &mut SmallRng, n, p| Binomial::new(n, p).expect("valid binomial").sample(rng);
    for window in 1..=MAX_WINDOWS {
        let this = Counters {
            stable: SideCounters {
                requests: stable_requests,
                errors: draw(&mut rng, stable_requests, scenario.stable_error_rate),
                cancelled: draw(&mut rng, stable_requests, scenario.stable_cancel_rate),
                latency: sample_buckets(&mut rng, stable_requests, &stable_latency),
                first_byte: Buckets::default(),
            },
            candidate: SideCounters {
                requests: candidate_requests,
                errors: draw(&mut rng, candidate_requests, scenario.candidate_error_rate),
                cancelled: draw(&mut rng, candidate_requests, scenario.candidate_cancel_rate),
                latency: sample_buckets(&mut rng, candidate_requests, &candidate_latency),
                first_byte: Buckets::default(),
            },
            fail_fast_trips: 0,
            arms: Default::default(),
        };
        if oracle_at.is_none() {
            let share = WEIGHT;
            let q = share * oracle_ratio / (share * oracle_ratio + 1.0 - share);
            oracle_llr += this.candidate.errors as f64 * (q / share).ln()
                + this.stable.errors as f64 * ((1.0 - q) / (1.0 - share)).ln();
            if oracle_llr >= (1.0 / alpha).ln() {
                oracle_at = Some(window * candidate_requests);
            }
        }
        if weir_at.is_none() {
            let j = judge(&a, &evidence, &this, &[], Mode::Concurrent);
            if j.verdict == VerdictKind::Fail && j.decisive {
                weir_at = Some(window * candidate_requests);
            }
            evidence = j.evidence;
        }
        if weir_at.is_some() && oracle_at.is_some() {
            break;
        }
    }
    (weir_at, oracle_at)
}

pub(crate) struct Outcome {
    pub aborted: u64,
    pub median: Option<u64>,
    pub p90: Option<u64>,
}

pub(crate) fn outcome(mut detections: Vec<u64>) -> Outcome {
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

fn run(scenario: &Scenario, seed: u64) -> (Outcome, Outcome) {
    let oracle_ratio = if scenario.candidate_error_rate > scenario.stable_error_rate {
        scenario.candidate_error_rate / scenario.stable_error_rate
    } else {
        2.0
    };
    let runs: Vec<_> = (0..RUNS).map(|i| simulate(seed + i, scenario, oracle_ratio)).collect();
    (
        outcome(runs.iter().filter_map(|r| r.0).collect()),
        outcome(runs.iter().filter_map(|r| r.1).collect()),
    )
}

pub(crate) fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: aborted {}/{RUNS}; candidate requests to abort: median {:?}, p90 {:?}",
        o.aborted, o.median, o.p90
    );
}

#[test]
fn simulated_equal_candidates_are_rarely_aborted() {
    let (o, _) = run(&Scenario::equal(), 1);
    report("equal candidate", &o);
    assert!(
        o.aborted <= 10,
        "{} false aborts in {RUNS}, falseAbortRate is 1 %",
        o.aborted
    );
}

#[test]
fn twice_the_errors_is_aborted_within_15_percent_of_an_oracle_that_knows_the_ratio() {
    let scenario = Scenario {
        candidate_error_rate: 2.0 * STABLE_ERROR_RATE,
        ..Scenario::equal()
    };
    let (weir, oracle) = run(&scenario, 10_000);
    report("2x errors at 5 % (1 % base), weir", &weir);
    report("2x errors at 5 % (1 % base), oracle SPRT", &oracle);
    assert!(weir.aborted >= 990, "only {} of {RUNS} aborted", weir.aborted);
    let (w, o) = (weir.median.expect("aborts"), oracle.median.expect("aborts"));
    assert!(
        (w as f64) <= 1.15 * o as f64,
        "weir's median {w} is more than 15 % above the oracle's {o}"
    );
}

#[test]
fn a_hung_candidate_is_aborted_on_its_clients_cancellations() {
    // One request in ten hangs until its client gives up: cancelled, and counted.
    let scenario = Scenario {
        candidate_cancel_rate: 0.1,
        ..Scenario::equal()
    };
    let (o, _) = run(&scenario, 20_000);
    report("hung candidate (10 % cancelled, stable 0.1 %)", &o);
    assert_eq!(o.aborted, RUNS);
}

#[test]
fn a_candidate_dying_mid_stream_is_aborted_on_errors() {
    // 5 % of its streams break after a 2xx head: errors, not 2xx.
    let scenario = Scenario {
        candidate_error_rate: STABLE_ERROR_RATE + 0.05,
        ..Scenario::equal()
    };
    let (o, _) = run(&scenario, 30_000);
    report("candidate dying mid-stream (5 % of streams)", &o);
    assert_eq!(o.aborted, RUNS);
}

#[test]
fn one_and_a_half_times_the_p99_is_aborted() {
    let scenario = Scenario {
        candidate_latency: 1.5,
        ..Scenario::equal()
    };
    let (o, _) = run(&scenario, 40_000);
    report("1.5x latency", &o);
    assert!(o.aborted >= 990, "only {} of {RUNS} aborted", o.aborted);
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
