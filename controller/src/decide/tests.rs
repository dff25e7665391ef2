use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::judge::{Buckets, SideCounters};
use crate::rollout::{Analysis, BlueGreen, Canary, DeploymentRef, Step, Strategy as RolloutStrategy};
use weir_proxy::metrics::LATENCY_BUCKETS;

fn spec() -> RolloutSpec {
    RolloutSpec {
        route: "r".into(),
        stable: DeploymentRef {
            deployment: "v1".into(),
        },
        candidate: DeploymentRef {
            deployment: "v2".into(),
        },
        strategy: RolloutStrategy {
            canary: Some(Canary {
                steps: vec![
                    Step {
                        weight: 5.0,
                        hold: "10s".into(),
                    },
                    Step {
                        weight: 25.0,
                        hold: "10s".into(),
                    },
                    Step {
                        weight: 50.0,
                        hold: "10s".into(),
                    },
                ],
            }),
            blue_green: None,
        },
        analysis: Analysis {
            interval: "5s".into(),
            min_requests: 10,
            ..Analysis::default()
        },
    }
}

fn blue_green() -> RolloutSpec {
    let mut s = spec();
    s.strategy = RolloutStrategy {
        canary: None,
        blue_green: Some(BlueGreen {
            preview_header: "x-weir-side".into(),
            hold_before_switch: "10s".into(),
            keep_old_for: "10s".into(),
        }),
    };
    s
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn workload(hash: &str, replicas: u32) -> WorkloadState {
    WorkloadState {
        exists: true,
        template_hash: hash.into(),
        replicas,
        ready_replicas: replicas,
        rolled_out: true,
    }
}

fn buckets(n: u64, seconds: f64) -> Buckets {
    let bounds: Vec<f64> = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect();
    let cumulative = bounds.iter().map(|b| if seconds <= *b { n } else { 0 }).collect();
    Buckets { bounds, cumulative }
}

/// Cumulative counters after `n` requests per side with these error counts.
fn counters(stable: (u64, u64), candidate: (u64, u64)) -> Counters {
    let side = |(n, e): (u64, u64)| SideCounters {
        requests: n,
        errors: e,
        latency: buckets(n, 0.05),
        first_byte: buckets(n, 0.02),
    };
    Counters {
        stable: side(stable),
        candidate: side(candidate),
    }
}

fn obs(metrics: Counters) -> Observation {
    Observation {
        stable: workload("a", 10),
        candidate: workload("b", 1),
        metrics: Ok(metrics),
        commands: Commands::default(),
    }
}

fn weight_of(d: &Decision) -> Option<u16> {
    d.actions.iter().rev().find_map(|a| match a {
        Action::SetTraffic { weight, .. } => Some(*weight),
        _ => None,
    })
}

/// Runs decide from `status` at time `at`, returning the decision.
fn step(spec: &RolloutSpec, status: &RolloutStatus, o: &Observation, at: u64) -> Decision {
    decide(spec, status, o, t(at))
}

#[test]
fn a_new_available_candidate_starts_at_the_first_step() {
    let d = step(&spec(), &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0);
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.candidate_weight, 500);
    assert_eq!(
        d.actions,
        vec![
            Action::ScaleCandidate(1),
            Action::SetTraffic {
                weight: 500,
                preview: false
            }
        ]
    );
    assert_eq!(d.status.candidate_revision.as_deref(), Some("b"));
    assert_eq!(d.events[0].reason, reasons::ROLLOUT_STARTED);
}

#[test]
fn nothing_starts_while_the_candidate_matches_stable_or_is_not_ready() {
    let mut o = obs(Counters::default());
    o.candidate.template_hash = "a".into();
    let d = step(&spec(), &RolloutStatus::default(), &o, 0);
    assert_eq!((d.status.phase, weight_of(&d)), (Phase::Idle, Some(0)));
    assert!(d.status.message.contains("nothing to roll out"));

    let mut o = obs(Counters::default());
    o.candidate.ready_replicas = 0;
    let d = step(&spec(), &RolloutStatus::default(), &o, 0);
    assert_eq!(d.status.phase, Phase::Idle);
    assert!(
        d.status.message.starts_with("waiting for candidate revision b"),
        "{}",
        d.status.message
    );
}

/// Drives a whole rollout where the candidate behaves like `candidate_errors_per_window`.
fn drive(spec: &RolloutSpec, candidate_error_ratio: f64, max_secs: u64) -> (Vec<Decision>, RolloutStatus) {
    let mut status = RolloutStatus::default();
    let mut o = obs(Counters::default());
    let mut decisions = Vec::new();
    let (mut s, mut c) = ((0u64, 0u64), (0u64, 0u64));
    for sec in 0..max_secs {
        // 1000 requests a second, split by the current weight; stable errs 1 %.
        // During a blue-green preview, testers (5 % of requests) reach the candidate.
        let w = if status.preview {
            500
        } else {
            u64::from(status.candidate_weight)
        };
        let to_candidate = 1000 * w / 10_000;
        s = (s.0 + 1000 - to_candidate, s.1 + (1000 - to_candidate) / 100);
        c = (
            c.0 + to_candidate,
            c.1 + (to_candidate as f64 * candidate_error_ratio) as u64,
        );
        o.metrics = Ok(counters(s, c));
        if status.phase == Phase::Promoting {
            o.stable = workload(status.candidate_revision.as_deref().unwrap_or(""), 10);
        }
        let d = step(spec, &status, &o, sec);
        status = d.status.clone();
        decisions.push(d);
        if status.phase.is_terminal() {
            break;
        }
    }
    (decisions, status)
}

#[test]
fn a_healthy_candidate_walks_every_step_and_is_promoted() {
    let (decisions, status) = drive(&spec(), 0.01, 200);
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    let weights: Vec<u16> = decisions.iter().filter_map(weight_of).collect();
    let mut seen: Vec<u16> = weights.clone();
    seen.dedup();
    assert_eq!(seen, vec![500, 2500, 5000, 0], "weights went {seen:?}");
    assert!(decisions.iter().any(|d| d.actions.contains(&Action::PromoteTemplate)));
    assert_eq!(
        decisions.last().map(|d| d.actions.clone()),
        Some(vec![
            Action::SetTraffic {
                weight: 0,
                preview: false
            },
            Action::ScaleCandidate(0)
        ])
    );
}

#[test]
fn a_failing_candidate_is_aborted_with_weight_zero_first() {
    let (decisions, status) = drive(&spec(), 0.5, 200);
    assert_eq!(status.phase, Phase::Aborted);
    assert!(
        status.message.contains("worse than stable on errors"),
        "{}",
        status.message
    );
    let last = decisions.last().expect("decisions");
    assert_eq!(
        last.actions[0],
        Action::SetTraffic {
            weight: 0,
            preview: false
        }
    );
    assert_eq!(status.candidate_weight, 0);
    assert_eq!(status.step, 0, "aborted during the first step");
}

#[test]
fn blue_green_previews_then_switches_then_promotes() {
    let (decisions, status) = drive(&blue_green(), 0.01, 200);
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    let traffic: Vec<Action> = decisions
        .iter()
        .flat_map(|d| d.actions.clone())
        .filter(|a| matches!(a, Action::SetTraffic { .. }))
        .collect();
    let mut traffic = traffic;
    traffic.dedup();
    assert_eq!(
        traffic,
        vec![
            Action::SetTraffic {
                weight: 0,
                preview: true
            },
            Action::SetTraffic {
                weight: 10_000,
                preview: false
            },
            Action::SetTraffic {
                weight: 0,
                preview: false
            },
        ]
    );
}

#[test]
fn pause_holds_and_resume_restarts_the_hold() {
    let s = spec();
    let started = step(&s, &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0).status;
    let mut o = obs(counters((1000, 10), (100, 1)));
    o.commands.pause = true;
    let paused = step(&s, &started, &o, 30).status;
    assert_eq!(paused.phase, Phase::Paused);
    assert_eq!(
        step(&s, &paused, &o, 60).status.candidate_weight,
        500,
        "paused weight holds"
    );
    o.commands.pause = false;
    let resumed = step(&s, &paused, &o, 90).status;
    assert_eq!((resumed.phase, resumed.step), (Phase::Progressing, 0));
    assert_eq!(resumed.step_started_at, Some(timestamp(t(90))));
}

#[test]
fn manual_abort_and_promote_are_obeyed() {
    let s = spec();
    let started = step(&s, &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0).status;
    let mut o = obs(Counters::default());
    o.commands.abort = true;
    let d = step(&s, &started, &o, 1);
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(
        d.actions[0],
        Action::SetTraffic {
            weight: 0,
            preview: false
        }
    );
    o.commands = Commands {
        promote: true,
        ..Commands::default()
    };
    let d = step(&s, &started, &o, 1);
    assert_eq!(d.status.phase, Phase::Promoting);
    assert!(d.actions.contains(&Action::PromoteTemplate));
}

#[test]
fn retry_starts_an_aborted_rollout_again() {
    let s = spec();
    let started = step(&s, &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0).status;
    let mut o = obs(Counters::default());
    o.commands.abort = true;
    let aborted = step(&s, &started, &o, 1).status;
    o.commands = Commands::default();
    assert_eq!(
        step(&s, &aborted, &o, 2).status.phase,
        Phase::Aborted,
        "an abort sticks"
    );
    o.commands.retry = true;
    assert_eq!(step(&s, &aborted, &o, 3).status.phase, Phase::Progressing);
}

#[test]
fn a_new_candidate_template_mid_rollout_starts_again_from_weight_zero() {
    let s = spec();
    let started = step(&s, &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0).status;
    let mut o = obs(Counters::default());
    o.candidate.template_hash = "c".into();
    let d = step(&s, &started, &o, 1);
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(
        d.actions,
        vec![Action::SetTraffic {
            weight: 0,
            preview: false
        }]
    );
    let d = step(&s, &d.status, &o, 2);
    assert_eq!(
        (d.status.phase, d.status.candidate_revision.as_deref()),
        (Phase::Progressing, Some("c"))
    );
}

#[test]
fn an_invalid_spec_sets_a_condition_and_never_touches_traffic() {
    let mut s = spec();
    s.strategy.canary = None;
    let d = step(&s, &RolloutStatus::default(), &obs(Counters::default()), 0);
    assert!(d.actions.is_empty());
    let condition = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .expect("condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", reasons::INVALID_SPEC)
    );
    assert!(condition.message.contains("spec.strategy"), "{}", condition.message);
}

#[test]
fn unavailable_metrics_hold_and_never_advance() {
    let s = spec();
    let started = step(&s, &RolloutStatus::default(), &obs(counters((0, 0), (0, 0))), 0).status;
    let mut o = obs(Counters::default());
    o.metrics = Err("connection refused".into());
    let mut status = started;
    for sec in 1..100 {
        let d = step(&s, &status, &o, sec);
        assert_eq!(weight_of(&d), Some(500));
        status = d.status;
    }
    assert_eq!(status.phase, Phase::Progressing);
    assert!(
        status.message.contains("metrics unavailable: connection refused"),
        "{}",
        status.message
    );
}

#[test]
fn candidate_replicas_follow_the_share_of_stable() {
    assert_eq!(candidate_replicas(10, 500), 1);
    assert_eq!(candidate_replicas(10, 2500), 3);
    assert_eq!(candidate_replicas(10, 10_000), 10);
    assert_eq!(candidate_replicas(0, 5000), 1);
}

fn any_phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Idle),
        Just(Phase::Progressing),
        Just(Phase::Paused),
        Just(Phase::Promoting),
        Just(Phase::Succeeded),
        Just(Phase::Aborted)
    ]
}

prop_compose! {
    fn any_status()(phase in any_phase(), step in 0u32..3, weight in 0u16..=10_000, passed in any::<bool>(), failed in 0u32..3, age in 0u64..100, started in any::<bool>()) -> RolloutStatus {
        RolloutStatus {
            phase,
            step,
            candidate_weight: weight,
            candidate_revision: Some("b".into()),
            stable_revision: Some("a".into()),
            step_started_at: started.then(|| timestamp(t(1000 - age))),
            step_passed: passed,
            failed_checks: failed,
            evidence: Some(Evidence::starting_at(Some(Counters::default()))),
            ..RolloutStatus::default()
        }
    }
}

prop_compose! {
    fn any_commands()(pause in any::<bool>(), retry in any::<bool>()) -> Commands {
        Commands { pause, retry, promote: false, abort: false }
    }
}

proptest! {
    #[test]
    fn never_promotes_on_inconclusive_data(status in any_status(), commands in any_commands(), why in "[a-z ]{1,20}") {
        let o = Observation { metrics: Err(why), commands, ..obs(Counters::default()) };
        let d = decide(&spec(), &status, &o, t(1000));
        if status.phase != Phase::Promoting {
            prop_assert_ne!(d.status.phase, Phase::Promoting);
            prop_assert!(!d.actions.contains(&Action::PromoteTemplate));
        }
        if status.phase == Phase::Progressing {
            prop_assert!(d.status.candidate_weight <= status.candidate_weight.max(status_step_weight(&status)));
        }
    }

    #[test]
    fn too_few_requests_never_promote(status in any_status(), commands in any_commands(), n in 0u64..10) {
        // Fewer candidate requests than minRequests: inconclusive whatever else holds.
        let o = Observation { commands, ..obs(counters((n * 100, 0), (n, 0))) };
        let d = decide(&spec(), &status, &o, t(1000));
        if status.phase == Phase::Progressing && d.judgement.is_some() {
            prop_assert_ne!(d.status.phase, Phase::Promoting);
            prop_assert_eq!(d.status.step, status.step);
        }
    }

    #[test]
    fn weight_never_rises_after_a_failed_check(status in any_status(), commands in any_commands(), errors in 60u64..100) {
        let o = Observation { commands, ..obs(counters((10_000, 10), (100, errors))) };
        let d = decide(&spec(), &status, &o, t(1000));
        if d.judgement.as_ref().is_some_and(|j| j.verdict == VerdictKind::Fail) {
            prop_assert!(d.status.candidate_weight <= status.candidate_weight, "{} -> {}", status.candidate_weight, d.status.candidate_weight);
            prop_assert!(weight_of(&d).is_none_or(|w| w <= status.candidate_weight));
        }
    }

    #[test]
    fn abort_always_sets_weight_zero_first(status in any_status(), abort in any::<bool>(), errors in 0u64..100) {
        let mut o = obs(counters((10_000, 10), (100, errors)));
        o.commands.abort = abort;
        let d = decide(&spec(), &status, &o, t(1000));
        if d.status.phase == Phase::Aborted && status.phase != Phase::Aborted {
            prop_assert_eq!(d.actions.first(), Some(&Action::SetTraffic { weight: 0, preview: false }));
            prop_assert_eq!(d.status.candidate_weight, 0);
        }
    }

    #[test]
    fn replaying_the_same_inputs_gives_the_same_decision(status in any_status(), commands in any_commands(), errors in 0u64..100, at in 900u64..1100) {
        let o = Observation { commands, ..obs(counters((10_000, 10), (100, errors))) };
        prop_assert_eq!(decide(&spec(), &status, &o, t(at)), decide(&spec(), &status, &o, t(at)));
    }
}

/// The weight of the step a status is at, for bounding what a decision may set.
fn status_step_weight(status: &RolloutStatus) -> u16 {
    [500u16, 2500, 5000].get(status.step as usize).copied().unwrap_or(0)
}
