//! The controller's rollout policy, `weir::decide::decide`, driven through whole rollouts: a
//! well-typed spec (canary or blue-green, analysis settings, maxSurge, checks), then a run of
//! ticks in which time passes, both sides serve requests with their own error rates and
//! latencies, the metrics source fails or lags, people send requests, the candidate gets a new
//! template, stable is changed by someone else, the spec is edited, and a controller crash
//! loses a status write or stops part way through the actions. Each decision is carried out on
//! a small world as the ports would, and its status is fed back, as the reconcile loop does.
//!
//! Invariants checked on every decision (the product's central promise, in `decide`'s types):
//! 1. No promotion without a pass or a person: a decision that moves the phase to `Promoting`
//!    comes from `Progressing` with a judged `Pass` as the status' last analysis and
//!    `stepPassed` set, and no analysis made this time that was not a pass; or it obeys a fresh
//!    `promote` request (the one `lastRequest` records now). `PromoteTemplate` is only asked
//!    while `Promoting`, and only for the analysed revision (`status.candidateRevision`), and
//!    the world's stable only ever takes a revision that entered `Promoting` that way.
//!    `Succeeded` follows only `Promoting`, with stable running the analysed revision.
//! 2. Abort closes the candidate first: a decision that moves the phase to `Aborted` starts
//!    with `SetTraffic` at weight 0, no preview and no candidate overrides, scales the
//!    candidate only to 0, and promotes nothing.
//! 3. An unanalysed template gets no traffic: while a rollout runs (`Progressing`, `Paused`,
//!    `Promoting`) and the candidate Deployment runs a revision other than the analysed one,
//!    every `SetTraffic` is weight 0 without preview or candidate overrides. The same holds for
//!    any decision that leaves the rollout `Idle`, `Aborted` or `Succeeded`.
//! 4. A failed analysis never raises the weight.
//! 5. Weights are basis points (at most 10000), status records the last weight set, and
//!    `decide` is deterministic; it never panics.
#![no_main]

mod spec;
mod world;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use weir::counters::Counters;
use weir::decide::{Action, Decision, Observation, decide};
use weir::status::{Phase, RolloutStatus, UserRequest, Verb, VerdictKind};

use spec::{SpecIn, spec_of};
use world::{MetricsIn, World, WorldEvent, workload};

/// Decisions per scenario at most, repetitions included.
const MAX_LOOKS: usize = 256;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum VerbIn {
    Pause,
    Resume,
    Promote,
    Abort,
    Retry,
}

#[derive(Arbitrary, Debug, Clone)]
pub(crate) struct TickIn {
    /// Seconds that pass before this look; a few values mean the clock went back a little.
    pub(crate) advance: u8,
    /// Requests a second, in tens.
    pub(crate) rate: u8,
    /// Error rates, in per mille.
    pub(crate) stable_errors: u8,
    pub(crate) candidate_errors: u8,
    /// The candidate's latency bucket (index into the proxy's bounds), stable's is fixed.
    pub(crate) candidate_latency: u8,
    pub(crate) cancelled: u8,
    pub(crate) metrics: MetricsIn,
    pub(crate) trips: u8,
    pub(crate) request: Option<(VerbIn, u8)>,
    pub(crate) event: WorldEvent,
    /// Pods take their time to become ready after this tick's scaling.
    pub(crate) slow_pods: bool,
    /// The controller crashes: `Some(n)` carries out the first `n` actions and loses the
    /// status write.
    pub(crate) crash: Option<u8>,
    /// The spec is edited before this look.
    pub(crate) edit: Option<SpecIn>,
    /// A huge burst of requests (counter extremes).
    pub(crate) burst: Option<u64>,
    /// The tick happens again this many times (mod 32), without its edit, event, request
    /// and crash.
    pub(crate) repeat: u8,
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    spec: SpecIn,
    stable_replicas: u8,
    ticks: Vec<TickIn>,
}

fn traffic(d: &Decision) -> impl Iterator<Item = &weir::decide::TrafficIntent> {
    d.actions.iter().filter_map(|a| match a {
        Action::SetTraffic(intent) => Some(intent),
        _ => None,
    })
}

fn check(old: &RolloutStatus, obs: &Observation, d: &Decision, world: &mut World) {
    let new = &d.status;
    let context = || {
        format!(
            "{:?} -> {:?}: {}\nactions {:?}",
            old.phase, new.phase, new.message, d.actions
        )
    };

    // 5. Basis points, recorded.
    for intent in traffic(d) {
        assert!(
            intent.weight <= 10_000,
            "weight {} over 10000; {}",
            intent.weight,
            context()
        );
    }
    if let Some(last) = traffic(d).last() {
        assert_eq!(
            new.candidate_weight,
            last.weight,
            "status records another weight; {}",
            context()
        );
    }

    // 1. No promotion without a pass or a person.
    let promote_request =
        new.last_request != old.last_request && new.last_request.as_ref().is_some_and(|r| r.verb == Verb::Promote);
    if new.phase == Phase::Promoting && old.phase != Phase::Promoting {
        if !promote_request {
            assert_eq!(
                old.phase,
                Phase::Progressing,
                "promoted from {:?}; {}",
                old.phase,
                context()
            );
            let last = new.last_analysis.as_ref().expect("promoted without an analysis");
            assert!(
                last.verdict == VerdictKind::Pass && last.judged && new.step_passed,
                "promoted on {:?} (judged {}); {}",
                last.verdict,
                last.judged,
                context()
            );
            if let Some(now) = &d.analysis {
                assert_eq!(
                    now.verdict,
                    VerdictKind::Pass,
                    "promoted after a {:?} analysis; {}",
                    now.verdict,
                    context()
                );
            }
        }
        let revision = new.candidate_revision.clone().expect("promoting names a revision");
        world.promotable.insert(revision);
    }
    for action in &d.actions {
        if let Action::PromoteTemplate { revision } = action {
            assert_eq!(
                old.phase,
                Phase::Promoting,
                "stable's template copied while {:?}; {}",
                old.phase,
                context()
            );
            assert_eq!(
                Some(revision),
                old.candidate_revision.as_ref(),
                "promotes another revision than the analysed one; {}",
                context()
            );
        }
    }
    if new.phase == Phase::Succeeded && old.phase != Phase::Succeeded {
        assert_eq!(
            old.phase,
            Phase::Promoting,
            "succeeded from {:?}; {}",
            old.phase,
            context()
        );
        assert_eq!(
            Some(&obs.stable.template_hash),
            old.candidate_revision.as_ref(),
            "succeeded without stable running the analysed revision; {}",
            context()
        );
    }

    // 2. Abort closes the candidate first.
    if new.phase == Phase::Aborted && old.phase != Phase::Aborted {
        match d.actions.first() {
            Some(Action::SetTraffic(intent)) => assert!(
                intent.weight == 0 && intent.preview.is_none() && !intent.candidate_overrides,
                "an abort's first act leaves a way to the candidate: {intent:?}; {}",
                context()
            ),
            other => panic!("an abort starts with {other:?}, not closing traffic; {}", context()),
        }
        for action in &d.actions {
            assert!(
                !matches!(action, Action::ScaleCandidate(n) if *n > 0)
                    && !matches!(action, Action::PromoteTemplate { .. }),
                "an abort does {action:?}; {}",
                context()
            );
        }
    }

    // 3. An unanalysed template gets no traffic; nor does any candidate outside a rollout.
    let running = matches!(old.phase, Phase::Progressing | Phase::Paused | Phase::Promoting);
    let unanalysed = obs.candidate.exists && old.candidate_revision.as_ref() != Some(&obs.candidate.template_hash);
    let outside = matches!(new.phase, Phase::Idle | Phase::Aborted | Phase::Succeeded);
    if (running && unanalysed) || outside {
        for intent in traffic(d) {
            assert!(
                intent.weight == 0 && intent.preview.is_none() && !intent.candidate_overrides,
                "traffic {intent:?} reaches a candidate that is not under analysis (revision {} of {:?}); {}",
                obs.candidate.template_hash,
                old.candidate_revision,
                context()
            );
        }
    }

    // 4. A failed analysis never raises the weight.
    if d.analysis.as_ref().is_some_and(|a| a.verdict == VerdictKind::Fail) {
        assert!(
            new.candidate_weight <= old.candidate_weight,
            "weight rose from {} to {} after a failed analysis; {}",
            old.candidate_weight,
            new.candidate_weight,
            context()
        );
    }
}

fn run(scenario: &Scenario) {
    let mut spec = spec_of(&scenario.spec);
    let stable_replicas = u32::from(scenario.stable_replicas % 12) + 1;
    let mut world = World {
        stable: workload("s0", stable_replicas),
        candidate: workload("c0", 1),
        weight: 0,
        preview: false,
        served: 0,
        counters: Counters::default(),
        started_at: 1.0,
        history: Vec::new(),
        total: Counters::default(),
        revisions: 0,
        promotable: BTreeSet::new(),
    };
    let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut now = origin;
    let mut status = RolloutStatus::default();
    let mut reached = BTreeSet::new();
    world.history.push((now, Counters::default()));
    let mut looks = 0;
    for tick in &scenario.ticks {
        // A tick repeated is a stretch of steady traffic: what a rollout needs to pass a step,
        // and what random bytes rarely spell out tick by tick.
        for repetition in 0..=u32::from(tick.repeat % 32) {
            looks += 1;
            if looks > MAX_LOOKS {
                break;
            }
            let first = repetition == 0;
            if let Some(edit) = tick.edit.as_ref().filter(|_| first) {
                spec = spec_of(edit);
            }
            // Mostly forward; 250..=255 step the clock back a few seconds.
            let seconds = match tick.advance {
                250..=255 => {
                    now -= Duration::from_secs(u64::from(tick.advance - 249));
                    0
                }
                a => u64::from(a % 64),
            };
            now += Duration::from_secs(seconds);
            if first {
                world.event(tick.event);
            }
            world.serve(tick, seconds);
            world.history.push((now, world.total.clone()));
            let request = tick.request.filter(|_| first).map(|(verb, ago)| UserRequest {
                verb: match verb {
                    VerbIn::Pause => Verb::Pause,
                    VerbIn::Resume => Verb::Resume,
                    VerbIn::Promote => Verb::Promote,
                    VerbIn::Abort => Verb::Abort,
                    VerbIn::Retry => Verb::Retry,
                },
                at: humantime::format_rfc3339_micros(now - Duration::from_secs(u64::from(ago % 8))).to_string(),
            });
            let obs = Observation {
                generation: Some(1),
                stable: world.stable.clone(),
                candidate: world.candidate.clone(),
                metrics: world.reading(&spec, &status, now, tick),
                request,
                variants: Vec::new(),
            };
            let d = decide(&spec, &status, &obs, now);
            let again = decide(&spec, &status, &obs, now);
            // Debug, not PartialEq: a NaN in the numbers is still the same decision.
            assert_eq!(format!("{d:?}"), format!("{again:?}"), "decide is not deterministic");
            check(&status, &obs, &d, &mut world);

            let (actions, write) = match tick.crash.filter(|_| first) {
                Some(n) => (&d.actions[..usize::from(n).min(d.actions.len())], false),
                None => (&d.actions[..], true),
            };
            let applied = world.apply(actions, tick.slow_pods);
            if !matches!(tick.event, WorldEvent::ProxyLags) {
                world.served = world.weight;
            }
            if applied && write {
                reached.insert(format!("{:?}", d.status.phase));
                let by_request = d.status.last_request != status.last_request;
                if d.status.phase == Phase::Promoting && status.phase != Phase::Promoting && !by_request {
                    reached.insert("promoted on a pass".to_owned());
                }
                if let Some(stage) = d.status.promotion {
                    reached.insert(format!("{stage:?}"));
                }
                if d.analysis.as_ref().is_some_and(|a| a.judged) {
                    reached.insert(format!("judged {:?}", d.analysis.as_ref().map(|a| a.verdict)));
                }
                status = d.status;
            }
        }
    }
    if trace() {
        eprintln!("reached: {reached:?}");
    }
}

/// `WEIR_FUZZ_TRACE=1` prints what each input reached (phases, promotion stages, verdicts), to
/// see how deep a corpus goes: `decide -runs=0 CORPUS 2>&1 | grep reached | sort | uniq -c`.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WEIR_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(scenario) = Scenario::arbitrary(&mut u) {
        run(&scenario);
    }
});
