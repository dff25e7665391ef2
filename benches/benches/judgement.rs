//! The controller's per-interval work: `judge` on one full window of both sides' counters, and
//! `decide` on a Rollout mid-analysis (the judge, the state machine and the status it writes).
//! The spec is `examples/rollout.yaml`'s Rollout, as a user would write it.
//!
//!     cargo bench -p weir-benches --bench judgement
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use weir::counters::{Buckets, Counters, SideCounters};
use weir::decide::{Observation, Reading, WorkloadState, decide};
use weir::judge::{Mode, judge, new_evidence};
use weir::rollout::validate::validate;
use weir::rollout::{Rollout, RolloutSpec};
use weir::status::{RolloutStatus, WindowMark, micro_time};
use weir_proxy::metrics::LATENCY_BUCKETS;

/// The example Rollout's spec, as the controller sees it.
fn example_spec() -> RolloutSpec {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rollout.yaml"))
        .expect("examples/rollout.yaml is readable");
    let rollout = text
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Rollout"))
        .expect("the example has a Rollout");
    let rollout = serde_saphyr::from_str::<Rollout>(rollout).expect("the example Rollout parses");
    let mut spec = rollout.spec;
    // As the controller does: a route unnamed in the spec is named after its Rollout.
    spec.route
        .name
        .get_or_insert_with(|| rollout.metadata.name.unwrap_or_default());
    spec
}

/// A side's counters for one 30 s window at `rate` requests a second: 1 % errors, latencies
/// spread over the proxy's buckets as a log-normal around 50 ms would be.
fn side(rate: u64, seed: u64) -> SideCounters {
    let requests = rate * 30;
    let bounds: Vec<f64> = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect();
    let cumulative: Vec<u64> = bounds
        .iter()
        .map(|b| {
            // A smooth CDF: the share of requests under b for a median of 50 ms.
            let x = (b / 0.05).ln() / 0.5;
            let share = if x.is_finite() {
                1.0 / (1.0 + (-1.7 * x).exp())
            } else {
                1.0
            };
            (requests as f64 * share) as u64
        })
        .collect();
    let latency = Buckets { bounds, cumulative };
    SideCounters {
        requests,
        errors: requests / 100 + seed % 3,
        cancelled: seed % 2,
        first_byte: latency.clone(),
        latency,
    }
}

fn window(stable_rate: u64, candidate_rate: u64, seed: u64) -> Counters {
    Counters {
        stable: side(stable_rate, seed),
        candidate: side(candidate_rate, seed + 1),
        fail_fast_trips: 0,
        arms: Default::default(),
    }
}

fn workload(hash: &str, replicas: u32) -> WorkloadState {
    WorkloadState {
        exists: true,
        template_hash: hash.into(),
        replicas,
        ready_replicas: replicas,
        pods: replicas,
        rolled_out: true,
        autoscaler: None,
    }
}

fn observation(now: SystemTime, seed: u64) -> Observation {
    Observation {
        generation: Some(1),
        stable: workload("v1", 3),
        candidate: workload("v2", 1),
        metrics: Ok(Reading {
            window: Some(window(950, 50, seed)),
            mark: WindowMark {
                at: micro_time(now),
                instances: None,
            },
            promql: Vec::new(),
            trips: Vec::new(),
        }),
        request: None,
        variants: Vec::new(),
    }
}

/// A status several windows into the first step's analysis: the state `decide` sees on most
/// of its calls during a rollout.
fn mid_analysis(spec: &RolloutSpec, start: SystemTime) -> (RolloutStatus, SystemTime) {
    let mut status = RolloutStatus::default();
    let mut now = start;
    let mut analyses = 0;
    for seed in 0..40 {
        let decision = decide(spec, &status, &observation(now, seed), now);
        analyses += usize::from(decision.analysis.is_some());
        status = decision.status;
        if analyses >= 3 {
            return (status, now);
        }
        now += Duration::from_secs(30).min(decision.requeue_after.max(Duration::from_secs(1)));
    }
    panic!("the example rollout never reached its analysis: {status:?}");
}

fn judgement(c: &mut Criterion) {
    let spec = example_spec();
    let valid = validate(&spec).expect("the example Rollout is valid");
    let analysis = valid.analysis;

    let evidence = new_evidence(&analysis);
    let full = window(950, 50, 7);
    c.bench_function("judge one window (950 + 50 requests/s for 30 s)", |b| {
        b.iter(|| judge(&analysis, black_box(&evidence), black_box(&full), &[], Mode::Concurrent));
    });

    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (status, now) = mid_analysis(&spec, start);
    let next = now + Duration::from_secs(30);
    let obs = observation(next, 11);
    assert!(
        decide(&spec, &status, &obs, next).analysis.is_some(),
        "the benchmarked call judges a window"
    );
    c.bench_function("decide mid-analysis", |b| {
        b.iter(|| decide(&spec, black_box(&status), black_box(&obs), next));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = judgement
}
criterion_main!(benches);
