use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::counters::{Buckets, Counters, InstanceCounters, SideCounters, Snapshot};
use crate::rollout::{Analysis, BlueGreen, Canary, Step, Strategy as RolloutStrategy};
use crate::status::{Evidence, VerdictKind, micro_time, system_time};
use weir_proxy::metrics::LATENCY_BUCKETS;

pub(crate) fn spec() -> RolloutSpec {
    crate::rollout::example(
        RolloutStrategy {
            canary: Some(Canary {
                steps: [5.0, 25.0, 50.0]
                    .iter()
                    .map(|w| Step {
                        weight: *w,
                        hold: "10s".into(),
                    })
                    .collect(),
            }),
            blue_green: None,
            experiment: None,
        },
        Analysis {
            interval: "5s".into(),
            min_requests: 10,
            ..Analysis::default()
        },
    )
}

pub(crate) fn blue_green() -> RolloutSpec {
    let mut s = spec();
    s.strategy = RolloutStrategy {
        canary: None,
        blue_green: Some(BlueGreen {
            preview_header: "x-testers".into(),
            preview_value: "yes".into(),
            hold_before_switch: "10s".into(),
            keep_old_for: "10s".into(),
        }),
        experiment: None,
    };
    s
}

pub(crate) fn t(secs: f64) -> SystemTime {
    let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if secs < 0.0 {
        origin - Duration::from_secs_f64(-secs)
    } else {
        origin + Duration::from_secs_f64(secs)
    }
}

pub(crate) fn workload(hash: &str, replicas: u32) -> WorkloadState {
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

/// The condition of `type_` in `status`, which must have one.
pub(crate) fn condition<'a>(status: &'a RolloutStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", status.conditions))
}

pub(crate) fn buckets(n: u64, seconds: f64) -> Buckets {
    let bounds: Vec<f64> = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect();
    let cumulative = bounds.iter().map(|b| if seconds <= *b { n } else { 0 }).collect();
    Buckets { bounds, cumulative }
}

/// A rollout world for `decide`: two Deployments, the route's traffic, and one proxy whose
/// cumulative counters grow by whatever the test feeds it. It carries out decisions as the
/// ports would and reads metrics as the proxy source does (a window since the mark in status).
pub(crate) struct World {
    pub stable: WorkloadState,
    pub candidate: WorkloadState,
    pub traffic: TrafficIntent,
    pub counters: Counters,
    pub metrics_down: Option<String>,
    pub request: Option<UserRequest>,
    pub promoted: Vec<String>,
    /// Whether a pushed template makes the promotion port refuse (as the real ones do).
    pub refuse_mismatch: bool,
    /// Whether new candidate pods take their time to be ready (the test makes them ready).
    pub slow_pods: bool,
    /// The weight the proxy reports serving, when it lags behind the route written.
    pub served_weight: Option<u16>,
    /// Fractions of an error owed to each side, so that a 1 % error ratio over 50 requests a
    /// second is one error every two seconds, not one every second.
    owed: (f64, f64),
}

impl World {
    pub(crate) fn new() -> Self {
        World {
            stable: workload("a", 10),
            candidate: workload("b", 1),
            traffic: TrafficIntent::none(None),
            counters: Counters::default(),
            metrics_down: None,
            request: None,
            promoted: Vec::new(),
            refuse_mismatch: true,
            slow_pods: false,
            served_weight: None,
            owed: (0.0, 0.0),
        }
    }

    /// Share of requests the candidate gets: weight, or the testers' 5 % while previewing.
    pub(crate) fn candidate_share(&self) -> f64 {
        if self.traffic.preview.is_some() {
            0.05
        } else {
            f64::from(self.traffic.weight) / 10_000.0
        }
    }

    /// Adds `n` requests split by the current traffic, with these error ratios.
    pub(crate) fn serve(&mut self, n: u64, stable_errors: f64, candidate_errors: f64) {
        let to_candidate = (n as f64 * self.candidate_share()).round() as u64;
        let add = |side: &mut SideCounters, owed: &mut f64, n: u64, errors: f64| {
            side.requests += n;
            *owed += n as f64 * errors;
            let whole = owed.floor();
            *owed -= whole;
            side.errors += whole as u64;
            let previous = side.latency.total();
            side.latency = buckets(previous + n, 0.05);
            side.first_byte = buckets(previous + n, 0.02);
        };
        add(
            &mut self.counters.stable,
            &mut self.owed.0,
            n - to_candidate,
            stable_errors,
        );
        add(
            &mut self.counters.candidate,
            &mut self.owed.1,
            to_candidate,
            candidate_errors,
        );
    }

    pub(crate) fn reading(&self, status: &RolloutStatus, at: SystemTime) -> Result<Reading, MetricsUnavailable> {
        if let Some(why) = &self.metrics_down {
            return Err(MetricsUnavailable::SourceDown {
                why: why.clone(),
                trips: Vec::new(),
            });
        }
        let snapshot = Snapshot {
            taken_at: 0.0,
            instances: [(
                "p".to_owned(),
                InstanceCounters {
                    started_at: Some(1.0),
                    counters: self.counters.clone(),
                    weight: Some(self.served_weight.unwrap_or(self.traffic.weight)),
                },
            )]
            .into(),
        };
        let since = status.evidence.as_ref().and_then(|e| e.window_start.as_ref());
        Ok(Reading {
            window: since
                .and_then(|m| m.instances.as_ref())
                .map(|earlier| snapshot.increase_since(earlier)),
            mark: WindowMark {
                at: micro_time(at),
                instances: Some(snapshot),
            },
            promql: Vec::new(),
            trips: Vec::new(),
        })
    }

    pub(crate) fn observe(&self, status: &RolloutStatus, at: SystemTime) -> Observation {
        Observation {
            generation: Some(3),
            stable: self.stable.clone(),
            candidate: self.candidate.clone(),
            metrics: self.reading(status, at),
            request: self.request.clone(),
            variants: Vec::new(),
        }
    }

    /// Carries out the actions as the ports would; a promotion of a revision the candidate no
    /// longer runs is refused, and stops the actions after it.
    pub(crate) fn apply(&mut self, actions: &[Action]) -> bool {
        for action in actions {
            match action {
                Action::SetTraffic(intent) => self.traffic = intent.clone(),
                Action::ScaleCandidate(n) => {
                    self.candidate.replicas = *n;
                    if !self.slow_pods {
                        self.candidate.ready_replicas = *n;
                        self.candidate.pods = *n;
                    }
                }
                Action::ScaleStable(n) => {
                    self.stable.replicas = *n;
                    if !self.slow_pods {
                        self.stable.ready_replicas = *n;
                        self.stable.pods = *n;
                    }
                }
                Action::PromoteTemplate { revision } => {
                    if self.refuse_mismatch && *revision != self.candidate.template_hash {
                        return false;
                    }
                    self.promoted.push(revision.clone());
                    self.stable.template_hash = revision.clone();
                }
                Action::PromoteVariant { .. } => panic!("a canary never promotes an experiment's variant"),
            }
        }
        true
    }
}

/// Decides at `at` and applies the decision; the status moves on only if every action did, as
/// the reconcile loop does.
pub(crate) fn tick(spec: &RolloutSpec, status: &RolloutStatus, world: &mut World, at: f64) -> Decision {
    let d = decide(spec, status, &world.observe(status, t(at)), t(at));
    if !world.apply(&d.actions) {
        return Decision {
            status: status.clone(),
            ..d
        };
    }
    d
}

fn weight_of(d: &Decision) -> Option<u16> {
    d.actions.iter().rev().find_map(|a| match a {
        Action::SetTraffic(intent) => Some(intent.weight),
        _ => None,
    })
}

/// Runs a rollout second by second: 1000 requests a second, stable erring 1 %, the candidate
/// `candidate_errors` (of which `after_switch` at full weight).
fn drive(
    spec: &RolloutSpec,
    candidate_errors: f64,
    after_switch: f64,
    max_secs: u64,
) -> (Vec<Decision>, RolloutStatus, World) {
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    let mut decisions = Vec::new();
    for sec in 0..max_secs {
        let errors = if world.traffic.weight == 10_000 {
            after_switch
        } else {
            candidate_errors
        };
        world.serve(1000, 0.01, errors);
        if status.phase == Phase::Promoting {
            world.stable.rolled_out = true;
        }
        let d = tick(spec, &status, &mut world, sec as f64);
        status = d.status.clone();
        decisions.push(d);
        if status.phase.is_terminal() {
            break;
        }
    }
    (decisions, status, world)
}

#[test]
fn a_new_available_candidate_starts_at_the_first_step() {
    let d = tick(&spec(), &RolloutStatus::default(), &mut World::new(), 0.0);
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.candidate_weight, 500);
    assert_eq!(
        d.actions,
        vec![
            Action::ScaleCandidate(1),
            Action::SetTraffic(TrafficIntent {
                weight: 500,
                preview: None,
                candidate_overrides: true,
                candidate_revision: Some("b".into()),
                arms: None,
                users_epoch: None,
            })
        ]
    );
    assert_eq!(d.status.candidate_revision.as_deref(), Some("b"));
    assert_eq!(d.events[0].reason, reasons::ROLLOUT_STARTED);
    assert_eq!(d.status.conditions[0].observed_generation, Some(3));
}

#[test]
fn nothing_starts_while_the_candidate_matches_stable_or_is_not_ready() {
    let mut world = World::new();
    world.candidate.template_hash = "a".into();
    let d = tick(&spec(), &RolloutStatus::default(), &mut world, 0.0);
    assert_eq!((d.status.phase, weight_of(&d)), (Phase::Idle, Some(0)));
    assert!(d.status.message.contains("nothing to roll out"));

    let mut world = World::new();
    world.candidate.ready_replicas = 0;
    let d = tick(&spec(), &RolloutStatus::default(), &mut world, 0.0);
    assert_eq!(d.status.phase, Phase::Idle);
    assert!(
        d.status.message.starts_with("waiting for candidate revision b"),
        "{}",
        d.status.message
    );
}

#[test]
fn a_healthy_candidate_walks_every_step_and_is_promoted() {
    let (decisions, status, world) = drive(&spec(), 0.01, 0.01, 2000);
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    let mut seen: Vec<u16> = decisions.iter().filter_map(weight_of).collect();
    seen.dedup();
    assert_eq!(seen, vec![500, 2500, 5000, 0], "weights went {seen:?}");
    assert_eq!(
        world.promoted,
        vec!["b".to_owned()],
        "the analysed revision is promoted"
    );
    let last = decisions.last().expect("decisions");
    assert_eq!(
        last.actions,
        vec![
            Action::SetTraffic(TrafficIntent::none(Some("b".into()))),
            Action::ScaleCandidate(0)
        ]
    );
    // Each step passed only with the sample its power needs, and said so.
    let advanced: Vec<&Event> = decisions
        .iter()
        .flat_map(|d| &d.events)
        .filter(|e| e.reason == reasons::STEP_ADVANCED)
        .collect();
    assert_eq!(advanced.len(), 2);
    assert!(
        advanced[0]
            .message
            .contains("needed for 80% power against 2x errors at stable's 1%"),
        "{}",
        advanced[0].message
    );
}

#[test]
fn a_failing_candidate_is_aborted_with_every_way_to_it_closed_first() {
    let (decisions, status, world) = drive(&spec(), 0.5, 0.5, 200);
    assert_eq!(status.phase, Phase::Aborted);
    assert!(
        status.message.contains("worse than stable on errors"),
        "{}",
        status.message
    );
    let last = decisions.last().expect("decisions");
    assert_eq!(
        last.actions[0],
        Action::SetTraffic(TrafficIntent::none(Some("b".into())))
    );
    assert!(
        !world.traffic.candidate_overrides,
        "no override reaches an aborted candidate"
    );
    assert_eq!(status.candidate_weight, 0);
    assert_eq!(status.step, 0, "aborted during the first step");
}

#[test]
fn blue_green_previews_with_the_specs_header_then_switches_then_promotes() {
    let (decisions, status, _) = drive(&blue_green(), 0.01, 0.01, 2000);
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    let mut traffic: Vec<(u16, Option<Preview>)> = decisions
        .iter()
        .flat_map(|d| d.actions.clone())
        .filter_map(|a| match a {
            Action::SetTraffic(i) => Some((i.weight, i.preview)),
            _ => None,
        })
        .collect();
    traffic.dedup();
    let preview = Preview {
        header: "x-testers".into(),
        value: "yes".into(),
    };
    assert_eq!(traffic, vec![(0, Some(preview)), (10_000, None), (0, None)]);
}

#[test]
fn a_candidate_bad_only_after_the_switch_is_aborted_against_stables_rate_before() {
    let (_, status, _) = drive(&blue_green(), 0.01, 0.3, 2000);
    assert_eq!(status.phase, Phase::Aborted, "{}", status.message);
    assert_eq!(status.step, 1, "aborted after the switch");
    assert!(
        status
            .message
            .contains("worse than stable's rate before the switch on errors"),
        "{}",
        status.message
    );
}

/// A request made at second `at` of the test's clock.
fn request(verb: Verb, at: f64) -> Option<UserRequest> {
    Some(UserRequest {
        verb,
        at: humantime::format_rfc3339_millis(t(at)).to_string(),
    })
}

#[test]
fn pause_holds_until_resume_and_resume_restarts_the_hold() {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.request = request(Verb::Pause, 29.0);
    let paused = tick(&s, &started, &mut world, 30.0).status;
    assert_eq!(paused.phase, Phase::Paused);
    // The same request is obeyed once: later reconciles keep the pause, they do not redo it.
    let still = tick(&s, &paused, &mut world, 60.0);
    assert_eq!((still.status.phase, weight_of(&still)), (Phase::Paused, Some(500)));
    assert!(still.events.is_empty(), "{:?}", still.events);
    world.request = request(Verb::Resume, 89.0);
    let resumed = tick(&s, &paused, &mut world, 90.0).status;
    assert_eq!((resumed.phase, resumed.step), (Phase::Progressing, 0));
    assert_eq!(resumed.step_started_at, Some(micro_time(t(90.0))));
    assert_eq!(resumed.last_request, world.request);
}

#[test]
fn a_paused_rollout_waiting_for_pods_does_not_raise_the_weight_when_they_come() {
    let s = spec();
    let (mut world, mut status, mut sec) = waiting_for_pods(&s);
    world.request = request(Verb::Pause, sec);
    status = tick(&s, &status, &mut world, sec + 0.5).status;
    assert_eq!(status.phase, Phase::Paused);
    // The pods arrive while paused: the weight holds where the pause found it.
    world.candidate.ready_replicas = 4;
    for _ in 0..3 {
        sec += 1.0;
        world.serve(1000, 0.01, 0.01);
        status = tick(&s, &status, &mut world, sec).status;
        assert_eq!(
            (status.phase, world.traffic.weight),
            (Phase::Paused, 500),
            "{}",
            status.message
        );
    }
    // Resumed, the step's weight applies.
    world.request = request(Verb::Resume, sec + 0.5);
    status = tick(&s, &status, &mut world, sec + 1.0).status;
    assert_eq!(
        (status.phase, world.traffic.weight),
        (Phase::Progressing, 2500),
        "{}",
        status.message
    );
}

#[test]
fn manual_abort_and_promote_are_obeyed() {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.request = request(Verb::Abort, 0.1);
    let d = tick(
        &s,
        &started,
        &mut World {
            request: world.request.clone(),
            ..World::new()
        },
        1.0,
    );
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(d.actions[0], Action::SetTraffic(TrafficIntent::none(Some("b".into()))));
    let mut promote = World::new();
    promote.request = request(Verb::Promote, 0.2);
    let d = tick(&s, &started, &mut promote, 1.0);
    assert_eq!(d.status.phase, Phase::Promoting);
    let d = tick(&s, &d.status, &mut promote, 1.5);
    assert!(d.actions.contains(&Action::PromoteTemplate { revision: "b".into() }));
}

#[test]
fn retry_starts_an_aborted_rollout_again() {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.request = request(Verb::Abort, 0.1);
    let aborted = tick(&s, &started, &mut world, 1.0).status;
    assert_eq!(
        tick(&s, &aborted, &mut world, 2.0).status.phase,
        Phase::Aborted,
        "an abort sticks"
    );
    world.request = request(Verb::Retry, 0.2);
    // The aborted candidate was scaled to zero: the retry scales it up, then starts.
    let retried = tick(&s, &aborted, &mut world, 3.0).status;
    assert_eq!(retried.phase, Phase::Idle);
    assert_eq!(tick(&s, &retried, &mut world, 4.0).status.phase, Phase::Progressing);
}

#[test]
fn a_new_candidate_template_mid_rollout_starts_again_from_weight_zero() {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.candidate.template_hash = "c".into();
    let d = tick(&s, &started, &mut world, 1.0);
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(
        d.actions,
        vec![Action::SetTraffic(TrafficIntent::none(Some("c".into())))]
    );
    let d = tick(&s, &d.status, &mut world, 2.0);
    assert_eq!(
        (d.status.phase, d.status.candidate_revision.as_deref()),
        (Phase::Progressing, Some("c"))
    );
}

/// Promotes by request and returns the Promoting status with the world after it.
fn promoting() -> (RolloutSpec, RolloutStatus, World) {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.request = request(Verb::Promote, 0.1);
    world.stable.rolled_out = false;
    let status = tick(&s, &started, &mut world, 1.0).status;
    assert_eq!(status.phase, Phase::Promoting);
    assert!(
        world.promoted.is_empty(),
        "status says Promoting before stable is touched"
    );
    // The next look copies the analysed template.
    let status = tick(&s, &status, &mut world, 1.5).status;
    assert_eq!(status.phase, Phase::Promoting);
    (s, status, world)
}

#[test]
fn a_template_pushed_while_stable_rolls_waits_for_the_analysed_promotion_then_starts_again() {
    let (s, promoting, mut world) = promoting();
    assert_eq!(world.stable.template_hash, "b", "the analysed revision was copied");
    // While stable rolls, a developer pushes "c" to the candidate.
    world.candidate.template_hash = "c".into();
    let d = tick(&s, &promoting, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(world.traffic.weight, 0, "the unjudged template gets no traffic");
    assert!(!world.traffic.candidate_overrides);
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::PromoteTemplate { .. })),
        "{:?}",
        d.actions
    );
    assert_eq!(world.promoted, vec!["b".to_owned()], "c never reaches stable");
    // Stable finishes with b: promoted; then c gets its own rollout.
    world.stable.rolled_out = true;
    let done = tick(&s, &d.status, &mut world, 3.0).status;
    assert_eq!(
        (done.phase, done.candidate_revision.as_deref()),
        (Phase::Succeeded, Some("b"))
    );
    // c's pods were scaled to zero with the promotion; they come up, and c's rollout starts.
    let waiting = tick(&s, &done, &mut world, 4.0).status;
    let next = tick(&s, &waiting, &mut world, 5.0).status;
    assert_eq!(
        (next.phase, next.candidate_revision.as_deref()),
        (Phase::Progressing, Some("c"))
    );
    assert_eq!(next.stable_revision.as_deref(), Some("b"));
}

#[test]
fn a_template_pushed_before_the_copy_is_refused_and_never_promoted() {
    let s = spec();
    let mut world = World::new();
    let started = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.request = request(Verb::Promote, 0.1);
    let promoting = tick(&s, &started, &mut world, 0.5).status;
    // Pushed between observe and act: decide still saw "b", the port sees "c" and refuses.
    let decision = decide(&s, &promoting, &world.observe(&promoting, t(1.0)), t(1.0));
    assert!(
        decision
            .actions
            .contains(&Action::PromoteTemplate { revision: "b".into() })
    );
    world.candidate.template_hash = "c".into();
    assert!(!world.apply(&decision.actions), "the port refuses to copy c as b");
    assert_eq!(world.stable.template_hash, "a");
    // Had the Promoting status been written, the next reconcile sees the change and starts
    // again rather than promoting anything.
    let d = tick(&s, &decision.status, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
    assert!(
        d.status.message.contains("before the analysed b reached stable"),
        "{}",
        d.status.message
    );
    assert!(world.promoted.is_empty());
}

#[test]
fn an_invalid_spec_sets_a_condition_and_never_touches_traffic() {
    let mut s = spec();
    s.strategy.canary = None;
    let d = tick(&s, &RolloutStatus::default(), &mut World::new(), 0.0);
    assert!(d.actions.is_empty());
    let condition = condition(&d.status, "SpecValid");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", reasons::INVALID_SPEC)
    );
    assert!(condition.message.contains("spec.strategy"), "{}", condition.message);
}

#[test]
fn an_invalid_spec_mid_rollout_still_closes_the_candidate_on_a_new_template_an_abort_or_a_trip() {
    // A rollout at step 2 (25 %) whose spec is then broken (a hold without a unit).
    let start = |world: &mut World| {
        let s = spec();
        let mut status = tick(&s, &RolloutStatus::default(), world, 0.0).status;
        status.step = 1;
        // The first look scales the candidate for 25 %; the second raises the weight.
        status = tick(&s, &status, world, 1.0).status;
        status = tick(&s, &status, world, 1.5).status;
        assert_eq!(world.traffic.weight, 2500, "{}", status.message);
        let mut broken = s;
        broken.strategy.canary.as_mut().expect("canary").steps[0].hold = "60".into();
        (broken, status)
    };
    let still_invalid = |status: &RolloutStatus| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "SpecValid" && c.status == "False")
    };

    // Nothing new: traffic stays as it was until the spec is fixed.
    let mut world = World::new();
    let (broken, status) = start(&mut world);
    let d = tick(&broken, &status, &mut world, 2.0);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(still_invalid(&d.status));

    // The same edit pushes a new candidate image: that revision was never judged.
    let mut world = World::new();
    let (broken, status) = start(&mut world);
    world.candidate.template_hash = "c".into();
    let d = tick(&broken, &status, &mut world, 2.0);
    assert_eq!(weight_of(&d), Some(0), "{}", d.status.message);
    assert_eq!((world.traffic.weight, world.traffic.candidate_overrides), (0, false));
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
    assert!(still_invalid(&d.status));

    // An abort is obeyed.
    let mut world = World::new();
    let (broken, status) = start(&mut world);
    world.request = request(Verb::Abort, 2.0);
    let d = tick(&broken, &status, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(world.traffic.weight, 0);
    assert!(d.actions.contains(&Action::ScaleCandidate(0)), "{:?}", d.actions);

    // So is a fail-fast trip.
    let mut world = World::new();
    let (broken, status) = start(&mut world);
    world.counters.fail_fast_trips += 1;
    let d = tick(&broken, &status, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(world.traffic.weight, 0);
}

#[test]
fn steps_cut_below_the_current_one_continue_at_the_new_last_step_not_at_weight_zero() {
    let s = spec();
    let mut world = World::new();
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    status.step = 2;
    status = tick(&s, &status, &mut world, 1.0).status;
    status = tick(&s, &status, &mut world, 1.5).status;
    assert_eq!(world.traffic.weight, 5000, "{}", status.message);
    // At the third of [5, 25, 50] the user edits the steps to [5, 100].
    let mut edited = s.clone();
    edited.strategy.canary.as_mut().expect("canary").steps = [5.0, 100.0]
        .iter()
        .map(|w| Step {
            weight: *w,
            hold: "10s".into(),
        })
        .collect();
    let mut sec = 2.0;
    while sec < 12.0 {
        world.serve(1000, 0.01, 0.01);
        status = tick(&edited, &status, &mut world, sec).status;
        assert_eq!(status.step, 1, "{}", status.message);
        assert_ne!(
            world.traffic.weight, 0,
            "the candidate is judged at a weight the spec names"
        );
        assert_ne!(
            status.phase,
            Phase::Promoting,
            "not before a pass at 100 %: {}",
            status.message
        );
        sec += 1.0;
    }
    assert_eq!(world.traffic.weight, 10_000, "{}", status.message);
}

#[test]
fn unavailable_metrics_hold_never_advance_and_pause_at_the_deadline() {
    let mut s = spec();
    s.analysis.progress_deadline = "60s".into();
    let mut world = World::new();
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.metrics_down = Some("connection refused".into());
    for sec in 1..59 {
        let d = tick(&s, &status, &mut world, f64::from(sec));
        assert_eq!(weight_of(&d), Some(500));
        status = d.status;
    }
    assert_eq!(status.phase, Phase::Progressing);
    assert!(
        status.message.contains("metrics source down: connection refused"),
        "{}",
        status.message
    );
    let d = tick(&s, &status, &mut world, 61.0);
    assert_eq!(d.status.phase, Phase::Paused);
    let condition = condition(&d.status, "Progressing");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", reasons::PROGRESS_DEADLINE_EXCEEDED)
    );
    assert!(
        condition.message.starts_with("no conclusive analysis for 1m"),
        "{}",
        condition.message
    );
    // Paused by the deadline is paused: it stays until a person resumes.
    world.metrics_down = None;
    let later = tick(&s, &d.status, &mut world, 200.0);
    assert_eq!(later.status.phase, Phase::Paused);
}

#[test]
fn a_thin_step_is_paused_at_its_deadline_saying_how_many_requests_it_lacked() {
    let mut s = spec();
    s.analysis.min_requests = 100;
    s.analysis.progress_deadline = "60s".into();
    let mut world = World::new();
    let mut status = RolloutStatus::default();
    for sec in 0..120 {
        // 100 requests a second: 5 a second for the candidate, too few for any window.
        world.serve(100, 0.01, 0.01);
        status = tick(&s, &status, &mut world, f64::from(sec)).status;
        assert_ne!(status.phase, Phase::Promoting);
    }
    assert_eq!(status.phase, Phase::Paused);
    let condition = condition(&status, "Progressing");
    assert!(
        condition
            .message
            .contains("candidate requests in the window, 100 needed"),
        "{}",
        condition.message
    );
}

#[test]
fn a_fail_fast_trip_aborts_at_once_with_the_proxys_numbers() {
    let s = spec();
    let mut world = World::new();
    let status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.serve(1000, 0.01, 0.01);
    world.counters.fail_fast_trips = 1;
    let mut o = world.observe(&status, t(0.5));
    if let Ok(r) = o.metrics.as_mut() {
        r.trips = vec!["proxy 10.0.0.9:9901: 20 of 20 candidate requests failed within 10s (limit 0.5)".into()];
    }
    // Not an analysis moment, and far from enough requests: the trip aborts all the same.
    let d = decide(&s, &status, &o, t(0.5));
    assert_eq!(d.status.phase, Phase::Aborted);
    assert!(
        d.status
            .message
            .contains("fail-fast tripped: proxy 10.0.0.9:9901: 20 of 20"),
        "{}",
        d.status.message
    );
    assert_eq!(d.actions[0], Action::SetTraffic(TrafficIntent::none(Some("b".into()))));
}

#[test]
fn a_weight_change_starts_a_new_window_with_a_warm_up_shown_not_judged() {
    let s = spec();
    let mut world = World::new();
    let mut status = RolloutStatus::default();
    let mut warmups = 0;
    for sec in 0..400 {
        world.serve(1000, 0.01, 0.01);
        let before = status.candidate_weight;
        let d = tick(&s, &status, &mut world, f64::from(sec));
        if d.status.candidate_weight != before && d.status.phase == Phase::Progressing && before != 0 {
            // The new window starts at the change: its mark is the counters now.
            let mark = d
                .status
                .evidence
                .as_ref()
                .and_then(|e| e.window_start.as_ref())
                .expect("mark");
            assert_eq!(mark.at, micro_time(t(f64::from(sec))));
            assert!(
                d.status
                    .evidence
                    .as_ref()
                    .is_some_and(|e| e.warming_up && e.step == Counters::default())
            );
        }
        if let Some(a) = &d.analysis
            && !a.judged
        {
            warmups += 1;
            assert!(a.reason.starts_with("warm-up after the weight change"), "{}", a.reason);
            assert_eq!(a.verdict, VerdictKind::Inconclusive);
        }
        status = d.status;
        if status.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!(warmups, 3, "one warm-up per step");
}

#[test]
fn candidate_replicas_follow_the_equal_load_rule() {
    let s = spec();
    let mut world = World::new();
    let d = tick(&s, &RolloutStatus::default(), &mut world, 0.0);
    assert!(d.actions.contains(&Action::ScaleCandidate(1)));
    let mut status = d.status;
    status.step = 1;
    let d = tick(&s, &status, &mut world, 1.0);
    assert!(d.actions.contains(&Action::ScaleCandidate(4)), "{:?}", d.actions);
    status.step = 2;
    let d = tick(&s, &status, &mut world, 2.0);
    assert!(d.actions.contains(&Action::ScaleCandidate(10)), "{:?}", d.actions);
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
    fn any_status()(phase in any_phase(), step in 0u32..3, weight in 0u16..=10_000, passed in any::<bool>(), failed in 0u32..3, age in 0u64..100, started in any::<bool>(), warming in any::<bool>()) -> RolloutStatus {
        RolloutStatus {
            phase,
            step,
            candidate_weight: weight,
            candidate_revision: Some("b".into()),
            stable_revision: Some("a".into()),
            step_started_at: started.then(|| micro_time(t(1000.0 - age as f64))),
            step_passed: passed,
            failed_checks: failed,
            evidence: Some(Evidence { warming_up: warming, ..Evidence::default() }),
            ..RolloutStatus::default()
        }
    }
}

fn any_request() -> impl Strategy<Value = Option<UserRequest>> {
    prop_oneof![
        Just(None),
        Just(request(Verb::Pause, 999.0)),
        Just(request(Verb::Resume, 999.0)),
        Just(request(Verb::Retry, 999.0)),
    ]
}

proptest! {
    #[test]
    fn never_promotes_on_inconclusive_data(status in any_status(), req in any_request(), why in "[a-z ]{1,20}") {
        let mut world = World::new();
        world.metrics_down = Some(why);
        world.request = req;
        let d = decide(&spec(), &status, &world.observe(&status, t(1000.0)), t(1000.0));
        if status.phase != Phase::Promoting {
            prop_assert_ne!(d.status.phase, Phase::Promoting);
            let promotes = d.actions.iter().any(|a| matches!(a, Action::PromoteTemplate { .. }));
            prop_assert!(!promotes);
        }
    }

    #[test]
    fn too_few_requests_never_promote(status in any_status(), req in any_request(), n in 0u64..10) {
        let mut world = World::new();
        world.serve(n * 100, 0.0, 0.0);
        world.request = req;
        let d = decide(&spec(), &status, &world.observe(&status, t(1000.0)), t(1000.0));
        if matches!(status.phase, Phase::Progressing | Phase::Paused) {
            prop_assert_ne!(d.status.phase, Phase::Promoting);
        }
    }

    #[test]
    fn weight_never_rises_after_a_failed_check(status in any_status(), req in any_request(), errors in 0.6f64..1.0) {
        let mut world = World::new();
        world.request = req;
        // The window since the mark: a candidate failing most requests.
        let mut status = status;
        let mark = world.reading(&status, t(990.0)).expect("metrics").mark;
        if let Some(e) = status.evidence.as_mut() { e.window_start = Some(mark); }
        world.traffic.weight = 5000;
        world.serve(2000, 0.01, errors);
        let d = decide(&spec(), &status, &world.observe(&status, t(1000.0)), t(1000.0));
        if d.analysis.as_ref().is_some_and(|a| a.verdict == VerdictKind::Fail) {
            prop_assert!(d.status.candidate_weight <= status.candidate_weight, "{} -> {}", status.candidate_weight, d.status.candidate_weight);
            prop_assert!(weight_of(&d).is_none_or(|w| w <= status.candidate_weight));
        }
    }

    #[test]
    fn abort_always_closes_the_candidate_first(status in any_status(), abort in any::<bool>(), trip in any::<bool>()) {
        let mut world = World::new();
        let mut status = status;
        let mark = world.reading(&status, t(990.0)).expect("metrics").mark;
        if let Some(e) = status.evidence.as_mut() { e.window_start = Some(mark); }
        world.serve(2000, 0.01, 0.01);
        world.counters.fail_fast_trips = u64::from(trip);
        if abort { world.request = request(Verb::Abort, 999.0); }
        let d = decide(&spec(), &status, &world.observe(&status, t(1000.0)), t(1000.0));
        if d.status.phase == Phase::Aborted && status.phase != Phase::Aborted {
            prop_assert_eq!(d.actions.first(), Some(&Action::SetTraffic(TrafficIntent::none(Some("b".into())))));
            prop_assert_eq!(d.status.candidate_weight, 0);
        }
    }

    #[test]
    fn replaying_the_same_inputs_gives_the_same_decision(status in any_status(), req in any_request(), errors in 0.0f64..1.0, at in 900u64..1100) {
        let mut world = World::new();
        world.request = req;
        world.serve(1000, 0.01, errors);
        let o = world.observe(&status, t(at as f64));
        prop_assert_eq!(decide(&spec(), &status, &o, t(at as f64)), decide(&spec(), &status, &o, t(at as f64)));
    }
}

/// A healthy candidate walked through step 1 of `s`, its pods slow to come: the advance to
/// step 2 waits for 4 ready replicas (1 ready). Returns the world, the status and the clock.
fn waiting_for_pods(s: &RolloutSpec) -> (World, RolloutStatus, f64) {
    let mut world = World::new();
    world.slow_pods = true;
    let mut status = tick(s, &RolloutStatus::default(), &mut world, 0.0).status;
    let mut sec = 1.0;
    while status.step == 0 {
        world.serve(1000, 0.01, 0.01);
        status = tick(s, &status, &mut world, sec).status;
        sec += 1.0;
        assert!(sec < 400.0, "{}", status.message);
    }
    (world, status, sec)
}

#[test]
fn the_weight_rises_only_once_the_candidate_has_the_pods_to_carry_it() {
    let s = spec();
    let (mut world, mut status, mut sec) = waiting_for_pods(&s);
    assert_eq!(world.candidate.replicas, 4);
    assert_eq!(
        status.candidate_weight, 500,
        "the weight waits for the pods: {}",
        status.message
    );
    assert!(
        status
            .message
            .contains("waiting for 4 ready candidate replicas (1 ready)"),
        "{}",
        status.message
    );
    for _ in 0..5 {
        world.serve(1000, 0.01, 0.01);
        status = tick(&s, &status, &mut world, sec).status;
        sec += 1.0;
        assert_eq!(status.candidate_weight, 500);
    }
    world.candidate.ready_replicas = 4;
    let d = tick(&s, &status, &mut world, sec);
    assert_eq!(d.status.candidate_weight, 2500);
    // The step, its window and its warm-up start when the weight does.
    assert_eq!(d.status.step_started_at, Some(micro_time(t(sec))));
    assert!(d.status.evidence.as_ref().is_some_and(|e| e.warming_up));
}

#[test]
fn a_candidate_failing_while_the_next_step_waits_for_pods_is_aborted() {
    let s = spec();
    let (mut world, mut status, mut sec) = waiting_for_pods(&s);
    assert!(status.message.contains("waiting for"), "{}", status.message);
    // The pods never come (no GPU free), and the candidate at 5 % starts failing every request.
    while status.phase != Phase::Aborted {
        world.serve(1000, 0.01, 1.0);
        status = tick(&s, &status, &mut world, sec).status;
        sec += 1.0;
        assert!(
            sec < 120.0,
            "a failing candidate kept its 5 % while waiting: {}",
            status.message
        );
    }
    assert_eq!(world.traffic.weight, 0);
}

#[test]
fn a_step_whose_pods_never_come_is_paused_at_the_deadline_saying_so() {
    let mut s = spec();
    s.analysis.progress_deadline = "120s".into();
    let mut world = World::new();
    world.slow_pods = true;
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    let mut sec = 1.0;
    // A healthy candidate passes step 1, then waits for pods that no node can take; its
    // windows at 5 % keep passing, which is no progress.
    while status.phase != Phase::Paused {
        world.serve(1000, 0.01, 0.01);
        status = tick(&s, &status, &mut world, sec).status;
        sec += 1.0;
        assert!(sec < 400.0, "never paused: {}", status.message);
    }
    assert_eq!(status.step, 1);
    assert_eq!(
        world.traffic.weight, 500,
        "the weight stays where the pods can carry it"
    );
    let condition = condition(&status, "Progressing");
    assert!(
        condition.message.contains("waiting for 4 ready candidate replicas"),
        "{}",
        condition.message
    );
}

#[test]
fn a_trip_just_after_a_weight_change_that_found_the_metrics_down_still_aborts() {
    let s = spec();
    let (mut world, mut status, sec) = waiting_for_pods(&s);
    // The pods arrive in a look at which the metrics cannot be read: the weight rises anyway.
    world.candidate.ready_replicas = 4;
    world.metrics_down = Some("connection refused".into());
    status = tick(&s, &status, &mut world, sec).status;
    assert_eq!(world.traffic.weight, 2500, "{}", status.message);
    assert_eq!(status.message, "step 2/3 at 25%: started");
    // The candidate trips at the proxy before the next look, which reads the metrics again.
    world.metrics_down = None;
    world.serve(1000, 0.01, 0.5);
    world.counters.fail_fast_trips += 1;
    let d = tick(&s, &status, &mut world, sec + 1.0);
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(world.traffic.weight, 0);
}

#[test]
fn a_stable_shrunk_by_its_autoscaler_does_not_shrink_the_candidate() {
    let s = spec();
    let mut world = World::new();
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    assert_eq!(status.stable_replicas, Some(10));
    status.step = 2;
    // At 50 % the HPA halves stable: the candidate is still sized for stable's 10.
    world.stable.replicas = 5;
    let d = tick(&s, &status, &mut world, 1.0);
    assert!(d.actions.contains(&Action::ScaleCandidate(10)), "{:?}", d.actions);
}

#[test]
fn a_step_advances_only_on_a_pass_that_reaches_the_end_of_its_hold() {
    let mut s = spec();
    // A hold that ends between analyses: 10 s hold, 3 s interval.
    s.analysis.interval = "3s".into();
    s.analysis.warmup = Some("0s".into());
    let mut world = World::new();
    let mut status = RolloutStatus::default();
    for sec in 0..600 {
        world.serve(1000, 0.01, 0.01);
        let before = status.clone();
        let d = tick(&s, &status, &mut world, f64::from(sec));
        if d.status.step != before.step || d.status.phase == Phase::Promoting && before.phase == Phase::Progressing {
            let started = before.step_started_at.as_ref().map(system_time).expect("started");
            let last = d
                .status
                .last_analysis
                .as_ref()
                .map(|a| system_time(&a.at))
                .expect("analysed");
            assert!(
                last >= started + Duration::from_secs(10),
                "advanced on a pass before the hold ended"
            );
        }
        status = d.status;
        if status.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
}

#[test]
fn stable_given_the_candidates_template_outside_the_rollout_is_no_success() {
    let s = spec();
    let mut world = World::new();
    let status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    // Someone runs the candidate's template on stable (kubectl set image) mid-rollout, with
    // the candidate failing 60 % of its requests. weir copies only once status says
    // Promoting, so this was no promotion of its own whose status was lost.
    world.stable.template_hash = "b".into();
    world.stable.rolled_out = false;
    world.serve(2000, 0.01, 0.6);
    let d = tick(&s, &status, &mut world, 30.0);
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert!(d.status.message.contains("outside the rollout"), "{}", d.status.message);
    assert_eq!((world.traffic.weight, world.traffic.candidate_overrides), (0, false));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::PromoteTemplate { .. })));
    let later = tick(&s, &d.status, &mut world, 31.0);
    assert_ne!(later.status.phase, Phase::Succeeded);
}

#[test]
fn a_trip_or_a_stall_during_promotion_moves_all_traffic_to_stable() {
    let (s, status, mut world) = promoting();
    world.stable.rolled_out = false;
    world.counters.fail_fast_trips = 1;
    let d = tick(&s, &status, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(world.traffic.weight, 0);
    assert_eq!(d.status.promotion, Some(crate::status::PromotionStage::StableOnly));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == reasons::PROMOTION_STALLED && e.warning)
    );
    // It stays there, and the promotion still completes.
    let later = tick(&s, &d.status, &mut world, 3.0);
    assert_eq!(world.traffic.weight, 0);
    assert!(later.events.is_empty());

    let (s, status, mut world) = promoting();
    world.stable.rolled_out = false;
    let d = tick(&s, &status, &mut world, 700.0);
    assert_eq!(
        (world.traffic.weight, d.status.promotion),
        (0, Some(crate::status::PromotionStage::StableOnly))
    );
    assert!(
        d.status
            .conditions
            .iter()
            .any(|c| c.reason == reasons::PROMOTION_STALLED),
        "{:?}",
        d.status.conditions
    );
}

#[test]
fn an_old_request_reapplied_is_not_obeyed_again() {
    let s = spec();
    let mut world = World::new();
    // A promote from before this rollout began, restored by a GitOps tool.
    world.request = request(Verb::Promote, -100.0);
    let status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    let d = tick(&s, &status, &mut world, 1.0);
    assert_eq!(d.status.phase, Phase::Progressing, "{}", d.status.message);
    // Requests are obeyed in time order: an earlier one after a later one is stale.
    world.request = request(Verb::Pause, 5.0);
    let paused = tick(&s, &d.status, &mut world, 6.0).status;
    assert_eq!(paused.phase, Phase::Paused);
    world.request = request(Verb::Resume, 2.0);
    assert_eq!(tick(&s, &paused, &mut world, 7.0).status.phase, Phase::Paused);
    world.request = Some(UserRequest {
        verb: Verb::Resume,
        at: "soon".into(),
    });
    assert_eq!(
        tick(&s, &paused, &mut world, 8.0).status.phase,
        Phase::Paused,
        "an unreadable time is no request"
    );
}

#[test]
fn a_window_in_which_a_proxy_served_another_weight_is_shown_not_judged() {
    let mut s = spec();
    s.analysis.warmup = Some("0s".into());
    let mut world = World::new();
    let status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    world.serve(1000, 0.01, 0.5);
    let first = tick(&s, &status, &mut world, 5.0);
    // The first window's start was read before the weight reached the proxy.
    let a = first.analysis.as_ref().expect("an analysis");
    assert!(
        !a.judged && a.reason.starts_with("the proxies served 0%, 5% in this window"),
        "{}",
        a.reason
    );
    assert_eq!(
        first.status.phase,
        Phase::Progressing,
        "the failing window was not judged"
    );
    world.serve(1000, 0.01, 0.5);
    let second = tick(&s, &first.status, &mut world, 10.0);
    assert_eq!(
        second.status.phase,
        Phase::Aborted,
        "the next window is: {}",
        second.status.message
    );
}

#[test]
fn a_trip_seen_while_the_metrics_are_partly_down_still_aborts() {
    let s = spec();
    let mut world = World::new();
    let status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    let mut o = world.observe(&status, t(1.0));
    o.metrics = Err(MetricsUnavailable::SourceDown {
        why: "proxy http://10.0.0.8:9901 is down".into(),
        trips: vec!["proxy http://10.0.0.9:9901: 5 of 5 candidate requests failed within 30s (limit 0.5)".into()],
    });
    let d = decide(&s, &status, &o, t(1.0));
    assert_eq!(d.status.phase, Phase::Aborted);
    assert!(
        d.status
            .message
            .contains("fail-fast tripped: proxy http://10.0.0.9:9901"),
        "{}",
        d.status.message
    );
}

#[test]
fn a_missing_deployment_is_a_condition_naming_the_field_until_it_exists() {
    let spec = spec();
    let mut world = World::new();
    world.candidate = WorkloadState::default();
    let d = tick(&spec, &RolloutStatus::default(), &mut world, 0.0);
    let workloads = condition(&d.status, "Workloads");
    assert_eq!(workloads.status, "False");
    assert!(
        workloads.message.contains("v2") && workloads.message.contains("spec.candidate.deployment"),
        "{}",
        workloads.message
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::ScaleCandidate(n) if *n > 0)),
        "nothing scaled: {:?}",
        d.actions
    );
    world.candidate = workload("v2-hash", 0);
    let found = tick(&spec, &d.status, &mut world, 1.0);
    let workloads = condition(&found.status, "Workloads");
    assert_eq!(workloads.status, "True");
}

/// A controller killed right after an abort closed the candidate, before the abort was
/// recorded: the next one must not reopen the candidate it finds closed.
#[test]
fn an_abort_whose_record_a_crash_lost_is_not_undone() {
    let s = spec();
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    let mut sec = 0u32;
    let abort = loop {
        world.serve(1000, 0.01, 0.3);
        let d = decide(
            &s,
            &status,
            &world.observe(&status, t(f64::from(sec))),
            t(f64::from(sec)),
        );
        sec += 1;
        if d.status.phase == Phase::Aborted {
            break d;
        }
        assert!(world.apply(&d.actions));
        status = d.status;
        assert!(sec < 600, "never aborted: {}", status.message);
    };
    assert!(status.candidate_weight > 0);
    // Only the first act (weight 0, every way to the candidate closed) landed.
    assert!(world.apply(&abort.actions[..1]));
    for _ in 0..5 {
        world.serve(1000, 0.01, 0.3);
        let d = decide(
            &s,
            &status,
            &world.observe(&status, t(f64::from(sec))),
            t(f64::from(sec)),
        );
        sec += 1;
        assert!(world.apply(&d.actions));
        assert_eq!(
            world.traffic.weight, 0,
            "reopened: {:?}: {}",
            d.actions, d.status.message
        );
        status = d.status;
        if status.phase == Phase::Aborted {
            break;
        }
    }
    assert_eq!(status.phase, Phase::Aborted, "{}", status.message);
}

/// Found by the decide fuzz target: a step whose counts sum past u64::MAX (a proxy page that
/// says 1e20 requests reads as u64::MAX) wrapped the sum when the step passed, and stable's
/// share came out infinite (a panic with overflow checks).
#[test]
fn a_step_counted_near_u64_max_advances_with_a_share_in_range() {
    let s = spec();
    let mut world = World::new();
    world.metrics_down = Some("down".into());
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    let evidence = status.evidence.as_mut().expect("a started rollout has evidence");
    evidence.warming_up = false;
    evidence.step.stable.requests = u64::MAX;
    evidence.step.candidate.requests = 1;
    status.step_passed = true;
    status.last_analysis = Some(crate::status::AnalysisRecord {
        at: micro_time(t(20.0)),
        verdict: VerdictKind::Pass,
        judged: true,
        reason: "passed".into(),
        values: Default::default(),
    });
    let d = decide(&s, &status, &world.observe(&status, t(20.0)), t(20.0));
    assert_eq!(d.status.step, 1);
    let share = d
        .status
        .evidence
        .and_then(|e| e.reference_share)
        .expect("stable's share kept");
    assert!((0.0..=1.0).contains(&share), "{share}");
}
