//! Seeded simulations of whole rollouts through `decide`, second by second, 1000 rollouts each:
//! an equal candidate stepped 5 -> 25 -> 50 % through shared error bursts and load-dependent
//! latency (false aborts must stay within `falseAbortRate`), and a candidate that is bad only
//! once a blue-green switch gives it all traffic (aborted every time). Each prints its aborts
//! and the median and p90 candidate requests to abort.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution};

use super::tests::{World, blue_green, spec, tick};
use super::*;
use crate::counters::SideCounters;
use crate::judge::sim::{Outcome, bucket_probabilities, outcome, sample_buckets};

const RUNS: u64 = 1000;
/// Requests a second.
const RATE: u64 = 1000;
const STABLE_REPLICAS: u32 = 10;
const BASE_ERRORS: f64 = 0.01;
const MEDIAN_SECONDS: f64 = 0.05;

/// What the simulated service does, second by second.
struct Service {
    rng: SmallRng,
    /// Seconds left of a shared error burst (a dependency of both versions failing).
    burst: u32,
}

impl Service {
    /// Per-pod load makes a pod slower (a little queueing): the latency multiplier at this
    /// many requests a second per pod, against pods sized for stable's whole load at 80 %.
    fn slowdown(load_per_pod: f64) -> f64 {
        let capacity = RATE as f64 / f64::from(STABLE_REPLICAS) / 0.8;
        let utilisation = load_per_pod / capacity;
        1.0 + 0.5 * utilisation * utilisation
    }

    /// One second of traffic into `world`; the candidate errs `candidate_errors` on top of the
    /// shared rate.
    fn second(&mut self, world: &mut World, candidate_errors: f64) {
        if self.burst == 0 && self.rng.random::<f64>() < 0.02 {
            self.burst = 3;
        }
        let shared = if self.burst > 0 {
            self.burst -= 1;
            0.2
        } else {
            0.0
        };
        let share = world.candidate_share();
        let to_candidate = (RATE as f64 * share).round() as u64;
        let to_stable = RATE - to_candidate;
        let stable_load = to_stable as f64 / f64::from(world.stable.replicas.max(1));
        let candidate_load = to_candidate as f64 / f64::from(world.candidate.replicas.max(1));
        let add = |side: &mut SideCounters, rng: &mut SmallRng, n: u64, errors: f64, load: f64| {
            if n == 0 {
                return;
            }
            side.requests += n;
            side.errors += Binomial::new(n, errors.min(1.0)).expect("valid").sample(rng);
            let latency = sample_buckets(rng, n, &bucket_probabilities(MEDIAN_SECONDS * Self::slowdown(load)));
            side.latency.add(&latency);
        };
        add(
            &mut world.counters.stable,
            &mut self.rng,
            to_stable,
            BASE_ERRORS + shared,
            stable_load,
        );
        add(
            &mut world.counters.candidate,
            &mut self.rng,
            to_candidate,
            BASE_ERRORS + shared + candidate_errors,
            candidate_load,
        );
    }
}

/// Runs one rollout; returns the final phase and the candidate requests counted from
/// `count_from_full_weight` (all of them, or only those after a switch to full weight).
fn rollout(spec: &RolloutSpec, seed: u64, bad_at_full_weight: f64) -> (Phase, u64, u64) {
    let mut service = Service {
        rng: SmallRng::seed_from_u64(seed),
        burst: 0,
    };
    let mut world = World::new();
    world.stable.replicas = STABLE_REPLICAS;
    let mut status = RolloutStatus::default();
    let mut at_switch = None;
    for sec in 0..1500 {
        let full = world.traffic.weight == 10_000;
        if full && at_switch.is_none() {
            at_switch = Some(world.counters.candidate.requests);
        }
        service.second(&mut world, if full { bad_at_full_weight } else { 0.0 });
        if status.phase == Phase::Promoting {
            world.stable.rolled_out = true;
        }
        status = tick(spec, &status, &mut world, f64::from(sec)).status;
        if status.phase.is_terminal() {
            break;
        }
    }
    let total = world.counters.candidate.requests;
    (status.phase, total, total - at_switch.unwrap_or(total))
}

fn canary() -> RolloutSpec {
    let mut s = spec();
    for step in s.strategy.canary.as_mut().expect("canary").steps.iter_mut() {
        step.hold = "20s".into();
    }
    s.analysis.min_requests = 100;
    s
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: aborted {}/{RUNS}; candidate requests to abort: median {:?}, p90 {:?}",
        o.aborted, o.median, o.p90
    );
}

#[test]
fn equal_candidates_stepped_through_shared_bursts_are_rarely_aborted() {
    let s = canary();
    let runs: Vec<(Phase, u64, u64)> = (0..RUNS).map(|i| rollout(&s, 100 + i, 0.0)).collect();
    let aborts = outcome(runs.iter().filter(|r| r.0 == Phase::Aborted).map(|r| r.1).collect());
    let promoted = runs.iter().filter(|r| r.0 == Phase::Succeeded).count();
    report("equal candidate, 5 -> 25 -> 50 % with shared error bursts", &aborts);
    println!("  promoted {promoted}/{RUNS}");
    assert!(
        aborts.aborted <= RUNS / 100,
        "{} false aborts, falseAbortRate is 1 %",
        aborts.aborted
    );
    assert!(
        promoted as u64 + aborts.aborted == RUNS,
        "every rollout ends within the simulated time"
    );
}

#[test]
fn a_candidate_bad_at_full_weight_after_a_blue_green_switch_is_aborted_every_time() {
    let mut s = blue_green();
    if let Some(bg) = s.strategy.blue_green.as_mut() {
        bg.hold_before_switch = "20s".into();
        bg.keep_old_for = "60s".into();
    }
    s.analysis.min_requests = 100;
    let runs: Vec<(Phase, u64, u64)> = (0..RUNS).map(|i| rollout(&s, 5000 + i, 0.3)).collect();
    let after_switch = outcome(runs.iter().filter(|r| r.0 == Phase::Aborted).map(|r| r.2).collect());
    report(
        "candidate at 30 % errors after a blue-green switch (requests after the switch)",
        &after_switch,
    );
    assert_eq!(
        after_switch.aborted, RUNS,
        "a bad candidate at full weight is never promoted"
    );
}
