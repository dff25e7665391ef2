//! `decide`: all rollout policy in one pure function, `(spec, status, observation, now) ->
//! Decision`. No I/O, no clock, no randomness: replaying the same inputs gives the same
//! decision, so a controller that dies mid-rollout resumes from its status.
//!
//! Every decision states the whole desired state of traffic and the candidate's scale, in the
//! order it must be applied: raising weight scales the candidate up first; lowering weight
//! (an abort) sets traffic first. Applying a decision twice changes nothing.
//!
//! What keeps the sequential tests' assumptions true lives here too: one weight per window (a
//! weight change starts a new window from a fresh baseline), a warm-up after each change that
//! is shown but not judged, and candidate replicas that give both sides the same load per pod.

mod experiment;
#[cfg(test)]
mod experiment_tests;
mod promotion;
pub mod reasons;
mod running;
mod scaling;
pub mod surge;
mod traffic;

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::counters::Counters;
use crate::judge::{self, PromqlValue};
use crate::rollout::RolloutSpec;
use crate::rollout::validate::{ValidSpec, describe, validate};
use crate::status::{
    AnalysisRecord, Phase, PromotionStage, RolloutStatus, UserRequest, Verb, WindowMark, micro_time, set_condition,
    system_time,
};
pub use experiment::users_epoch;
pub use traffic::{Preview, TrafficIntent, candidate_replicas};

/// One Deployment as observed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WorkloadState {
    /// Whether it exists.
    pub exists: bool,
    /// Its revision: the hash of its pod template.
    pub template_hash: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Ready replicas.
    pub ready_replicas: u32,
    /// Pods it runs, of any template, terminating ones included where the cluster counts them
    /// (its status' `replicas` plus `terminatingReplicas`).
    pub pods: u32,
    /// Its controller has finished rolling out the current template.
    pub rolled_out: bool,
    /// The HorizontalPodAutoscaler that scales it, if any.
    pub autoscaler: Option<String>,
}

impl WorkloadState {
    /// Rolled out with at least one ready replica: able to take traffic.
    pub fn available(&self) -> bool {
        self.exists && self.rolled_out && self.ready_replicas >= 1
    }
}

/// What the metrics source read for the route.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Both sides' increase since the window start the source was given; `None` when it was
    /// given none (the first look).
    pub window: Option<Counters>,
    /// Where a window starting now begins.
    pub mark: WindowMark,
    /// The custom PromQL checks' values, in check order.
    pub promql: Vec<PromqlValue>,
    /// What the proxies said of fail-fast trips in the window, for an abort's reason.
    pub trips: Vec<String>,
}

/// Why there are no metrics this time. Either way the analysis is inconclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsUnavailable {
    /// The source could not be reached or answered with an error (for the proxy source: some
    /// proxy could not be scraped). `trips` are fail-fast trips the reachable part showed.
    SourceDown {
        /// Why, with the chain of causes.
        why: String,
        /// Trips seen all the same, in words.
        trips: Vec<String>,
    },
    /// The source answered, but not with the route's series.
    NoData(String),
}

impl std::fmt::Display for MetricsUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsUnavailable::SourceDown { why, .. } => write!(f, "metrics source down: {why}"),
            MetricsUnavailable::NoData(why) => write!(f, "no metrics for the route: {why}"),
        }
    }
}

/// Everything `decide` looks at besides spec and status.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The Rollout's `metadata.generation`, for conditions' `observedGeneration`.
    pub generation: Option<i64>,
    /// The stable Deployment.
    pub stable: WorkloadState,
    /// The candidate Deployment.
    pub candidate: WorkloadState,
    /// The route's metrics since the window start in status, or why there are none.
    pub metrics: Result<Reading, MetricsUnavailable>,
    /// The latest request of a person; obeyed once, when it differs from the last obeyed.
    pub request: Option<UserRequest>,
    /// An experiment's variant Deployments, in spec order (empty for other strategies).
    pub variants: Vec<WorkloadState>,
}

/// One thing to do, through a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set the route's traffic.
    SetTraffic(TrafficIntent),
    /// Set the candidate Deployment's replicas.
    ScaleCandidate(u32),
    /// Set the stable Deployment's replicas (only under `maxSurge`, and to restore them after).
    ScaleStable(u32),
    /// Copy the candidate's pod template into the stable Deployment, if it is still this
    /// revision (the analysed one); the port refuses otherwise.
    PromoteTemplate {
        /// The analysed revision.
        revision: String,
    },
    /// Copy an experiment's winning variant's pod template into the stable Deployment, if it
    /// is still this revision (the judged one); the port refuses otherwise.
    PromoteVariant {
        /// The winner's Deployment.
        deployment: String,
        /// The judged revision.
        revision: String,
    },
}

/// Something worth telling people (a Kubernetes Event, a demo line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// CamelCase reason from [`reasons`].
    pub reason: &'static str,
    /// What happened, with numbers.
    pub message: String,
    /// Whether it is a warning.
    pub warning: bool,
}

/// What to do now and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: RolloutStatus,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Events to emit.
    pub events: Vec<Event>,
    /// When to reconcile again.
    pub requeue_after: Duration,
    /// The analysis made this time, if one was due (warm-ups included).
    pub analysis: Option<AnalysisRecord>,
}

/// Percent for messages: 500 basis points is `5%`, 50 is `0.5%`.
pub fn percent(basis_points: u16) -> String {
    let p = f64::from(basis_points) / 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

/// The rollout policy. See the module docs.
pub fn decide(spec: &RolloutSpec, status: &RolloutStatus, obs: &Observation, now: SystemTime) -> Decision {
    let mut ctx = Ctx {
        obs,
        now,
        old: status,
        next: status.clone(),
        actions: Vec::new(),
        events: Vec::new(),
        requeue_after: Duration::from_secs(30),
        analysis: None,
    };
    ctx.next.observed_generation = obs.generation;
    match validate(spec) {
        Ok(spec) => {
            ctx.condition("SpecValid", "True", reasons::SPEC_VALID, "");
            match &spec.strategy {
                crate::rollout::validate::ValidStrategy::Experiment(e) => ctx.experiment(&spec, e),
                _ => ctx.run(&spec),
            }
        }
        Err(errors) => {
            // An invalid spec changes no step: whatever traffic was set stays until it is
            // fixed, except that the candidate is still closed on what needs no spec.
            let message = describe(&errors);
            if status
                .conditions
                .iter()
                .all(|c| c.type_ != "SpecValid" || c.message != message)
            {
                ctx.event(reasons::INVALID_SPEC, format!("invalid spec: {message}"), true);
            }
            ctx.condition("SpecValid", "False", reasons::INVALID_SPEC, &message);
            ctx.next.message = format!("invalid spec: {message}");
            ctx.requeue_after = Duration::from_secs(60);
            if status.experiment.is_some() {
                ctx.experiment_while_invalid();
            } else {
                ctx.while_invalid(&message);
            }
        }
    }
    Decision {
        status: ctx.next,
        actions: ctx.actions,
        events: ctx.events,
        requeue_after: ctx.requeue_after.max(Duration::from_millis(50)),
        analysis: ctx.analysis,
    }
}

struct Ctx<'a> {
    obs: &'a Observation,
    now: SystemTime,
    old: &'a RolloutStatus,
    next: RolloutStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    requeue_after: Duration,
    analysis: Option<AnalysisRecord>,
}

impl Ctx<'_> {
    fn run(&mut self, spec: &ValidSpec) {
        let request = self.fresh_request().cloned();
        let verb = request.as_ref().map(|r| r.verb);
        if request.is_some() {
            self.next.last_request = request;
        }
        // Steps edited down below the current one: go on at the new last step (its weight
        // applies, so the step starts again), never past the end, where no weight is named.
        let last_step = spec.strategy.step_count().saturating_sub(1);
        if matches!(self.old.phase, Phase::Progressing | Phase::Paused) && self.next.step as usize > last_step {
            self.next.step = u32::try_from(last_step).unwrap_or(u32::MAX);
        }
        let changed = self.old.candidate_revision.as_ref() != Some(&self.obs.candidate.template_hash)
            && self.obs.candidate.exists;
        // Stable already runs the candidate's revision, yet status never said Promoting (the
        // copy is made only after it does): someone else changed stable. That is no verdict
        // on the candidate, so the rollout does not succeed; it closes the candidate.
        let stable_took_it = self.old.candidate_revision.as_ref() == Some(&self.obs.stable.template_hash);
        match self.old.phase {
            Phase::Idle => self.idle(spec),
            Phase::Progressing | Phase::Paused if stable_took_it && !changed => {
                let revision = self.obs.stable.template_hash.clone();
                self.abort(
                    spec,
                    format!(
                        "stable was changed to the candidate's revision {revision} outside the rollout, \
                         before any promotion: nothing here judged it there"
                    ),
                );
            }
            Phase::Progressing | Phase::Paused if changed => {
                let revision = self.obs.candidate.template_hash.clone();
                self.set_traffic(TrafficIntent::none(Some(revision.clone())));
                self.restore_stable();
                self.next.phase = Phase::Idle;
                self.next.evidence = None;
                self.next.message = format!("candidate changed to revision {revision}: starting again");
                self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), false);
                self.requeue_after = Duration::from_secs(1);
            }
            Phase::Progressing => self.running(spec, false, verb),
            Phase::Paused => self.running(spec, true, verb),
            Phase::Promoting => self.promoting(spec, verb, changed),
            Phase::Succeeded | Phase::Aborted => {
                let retry = self.old.phase == Phase::Aborted && verb == Some(Verb::Retry);
                if changed || retry {
                    self.next.candidate_revision = None;
                    self.idle(spec);
                } else {
                    self.park();
                }
            }
        }
    }

    /// A running rollout whose spec has become invalid: no step moves, but what closes the
    /// candidate needs no spec and is not put off until someone fixes it. A new candidate
    /// template (often pushed by the same edit) was never judged, so traffic leaves it and
    /// the rollout starts again once the spec is valid; an abort request and a fail-fast trip
    /// abort as they would on a valid spec.
    fn while_invalid(&mut self, problem: &str) {
        if self.old.phase == Phase::Promoting {
            return self.promoting_while_invalid(problem);
        }
        if !matches!(self.old.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let request = self.fresh_request().cloned();
        let abort = request.as_ref().is_some_and(|r| r.verb == Verb::Abort);
        if request.is_some() && abort {
            self.next.last_request = request;
        }
        let changed = self.old.candidate_revision.as_ref() != Some(&self.obs.candidate.template_hash)
            && self.obs.candidate.exists;
        let at = format!("step {} at {}", self.old.step + 1, percent(self.old.candidate_weight));
        if let Some(trip) = self.tripped() {
            self.abort_at(at, format!("the proxy's fail-fast tripped: {trip}"));
        } else if let Some(why) = self.closed_without_record() {
            self.abort_at(at, why);
        } else if abort {
            self.abort_at(at, "aborted on request".into());
        } else if changed {
            let revision = self.obs.candidate.template_hash.clone();
            self.set_traffic(TrafficIntent::none(Some(revision.clone())));
            self.restore_stable();
            self.next.phase = Phase::Idle;
            self.next.evidence = None;
            self.next.message = format!(
                "candidate changed to revision {revision} while the spec is invalid: all traffic to stable; \
                 it is judged from the start once the spec is fixed (invalid spec: {problem})"
            );
            self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), true);
        }
    }

    /// A promotion whose spec has become invalid: it goes no further, but a new candidate
    /// template (unanalysed) or a fail-fast trip still takes all traffic off the candidate,
    /// and stable gets back any pods maxSurge took.
    fn promoting_while_invalid(&mut self, problem: &str) {
        let changed = self.old.candidate_revision.as_ref() != Some(&self.obs.candidate.template_hash)
            && self.obs.candidate.exists;
        let trip = self.tripped();
        if !changed && trip.is_none() {
            return;
        }
        let target = self.old.candidate_revision.clone().unwrap_or_default();
        let copied = self.obs.stable.template_hash == target;
        self.set_traffic(TrafficIntent::none(self.candidate_revision()));
        self.restore_stable();
        self.requeue_after = Duration::from_secs(1);
        if changed && !copied {
            // The analysed template is gone from the candidate before it reached stable.
            self.next.phase = Phase::Idle;
            self.next.promotion = None;
            self.next.evidence = None;
            self.next.message = format!(
                "candidate changed to revision {} before the analysed {target} reached stable, while the spec is \
                 invalid: all traffic to stable (invalid spec: {problem})",
                self.obs.candidate.template_hash
            );
            self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), true);
            return;
        }
        let why = match trip {
            Some(trip) => format!("the proxy's fail-fast tripped during the promotion: {trip}"),
            None => format!(
                "the candidate changed to revision {} during the promotion",
                self.obs.candidate.template_hash
            ),
        };
        let message = format!("{why}: all traffic on stable (invalid spec: {problem})");
        if self.old.promotion != Some(PromotionStage::StableOnly) {
            self.condition("Progressing", "False", reasons::PROMOTION_STALLED, &message);
            self.event(reasons::PROMOTION_STALLED, message.clone(), true);
        }
        self.next.promotion = Some(PromotionStage::StableOnly);
        self.next.message = message;
    }

    /// The request to obey now, if any: one made after the last one obeyed and after the
    /// rollout began. A re-applied old annotation (GitOps restoring `promote@...` from an
    /// earlier rollout) is not a new request; neither is one whose time cannot be read.
    fn fresh_request(&self) -> Option<&UserRequest> {
        let request = self.obs.request.as_ref()?;
        if self.old.phase == Phase::Idle || self.old.last_request.as_ref() == Some(request) {
            return None;
        }
        let at = |r: &UserRequest| humantime::parse_rfc3339_weak(&r.at).ok();
        let made = at(request)?;
        let after_last = self
            .old
            .last_request
            .as_ref()
            .and_then(at)
            .is_none_or(|last| made > last);
        let after_start = self
            .old
            .started_at
            .as_ref()
            .is_none_or(|start| made >= system_time(start));
        (after_last && after_start).then_some(request)
    }

    /// No rollout: all traffic on stable, nothing reaches the candidate, which is scaled down.
    fn park(&mut self) {
        self.set_traffic(TrafficIntent::none(self.candidate_revision()));
        self.restore_stable();
        self.actions.push(Action::ScaleCandidate(0));
        self.requeue_after = Duration::from_secs(30);
    }

    fn idle(&mut self, spec: &ValidSpec) {
        let (stable, candidate) = (&self.obs.stable, &self.obs.candidate);
        self.next.phase = Phase::Idle;
        self.requeue_after = Duration::from_secs(2);
        self.set_traffic(TrafficIntent::none(self.candidate_revision()));
        if !candidate.exists || !stable.exists {
            let (missing, field) = if candidate.exists {
                (&spec.stable, "spec.stable.deployment")
            } else {
                (&spec.candidate, "spec.candidate.deployment")
            };
            let why = format!("Deployment {missing} ({field}) does not exist");
            self.condition("Workloads", "False", reasons::DEPLOYMENT_MISSING, &why);
            self.next.message = format!("waiting: {why}");
            self.requeue_after = Duration::from_secs(10);
            return;
        }
        if self.old.conditions.iter().any(|c| c.type_ == "Workloads") {
            self.condition("Workloads", "True", reasons::DEPLOYMENTS_FOUND, "");
        }
        if candidate.template_hash == stable.template_hash {
            self.next.message = "candidate matches stable: nothing to roll out".into();
            self.requeue_after = Duration::from_secs(30);
            return;
        }
        if let (Some(_), Some(hpa)) = (spec.max_surge, &stable.autoscaler) {
            let why = scaling::surge_with_autoscaler(hpa, &spec.stable);
            self.condition("Workloads", "False", reasons::SURGE_WITH_AUTOSCALER, &why);
            self.next.message = format!("waiting: {why}");
            self.requeue_after = Duration::from_secs(30);
            return;
        }
        if !candidate.available() {
            // Within a GPU budget the candidate starts with one pod, whatever its manifest says.
            let first = if spec.max_surge.is_some() {
                1
            } else {
                candidate.replicas.max(1)
            };
            self.actions.push(Action::ScaleCandidate(first));
            self.next.message = format!(
                "waiting for candidate revision {} to become available ({}/{} ready)",
                candidate.template_hash, candidate.ready_replicas, first
            );
            return;
        }
        self.actions.clear();
        self.next.phase = Phase::Progressing;
        self.next.step = 0;
        self.next.candidate_revision = Some(candidate.template_hash.clone());
        self.next.stable_revision = Some(stable.template_hash.clone());
        self.next.started_at = Some(micro_time(self.now));
        self.next.step_started_at = Some(micro_time(self.now));
        self.next.last_conclusive_at = Some(micro_time(self.now));
        self.next.step_passed = false;
        self.next.failed_checks = 0;
        self.next.last_analysis = None;
        self.next.promotion = None;
        self.next.stable_replicas = Some(stable.replicas);
        let mut evidence = judge::new_evidence(&spec.analysis);
        evidence.window_start = self.mark();
        evidence.warming_up = !spec.analysis.warmup.is_zero();
        self.next.evidence = Some(evidence);
        self.condition("Ready", "Unknown", reasons::ROLLOUT_STARTED, "rollout in progress");
        self.condition("Progressing", "True", reasons::ROLLOUT_STARTED, "");
        self.next.message = match self.step_traffic(spec, false) {
            Some(wait) => format!("{}: {wait}", self.step_label(spec)),
            None => format!("{}: started", self.step_label(spec)),
        };
        self.event(
            reasons::ROLLOUT_STARTED,
            format!(
                "rolling out revision {} over {}",
                candidate.template_hash, stable.template_hash
            ),
            false,
        );
        self.requeue_after = self.first_look(spec);
    }

    fn abort(&mut self, spec: &ValidSpec, why: String) {
        let at = self.step_label(spec);
        self.abort_at(at, why);
    }

    /// Aborts at the step described by `at`: the candidate closed first, then scaled to zero.
    fn abort_at(&mut self, at: String, why: String) {
        self.actions.clear();
        // Weight first, and every way to the candidate closed: traffic leaves it before
        // anything else happens to it. Then stable gets back any pods maxSurge took, before
        // the candidate gives up its own.
        self.set_traffic(TrafficIntent::none(self.candidate_revision()));
        self.restore_stable();
        self.actions.push(Action::ScaleCandidate(0));
        self.next.phase = Phase::Aborted;
        self.next.promotion = None;
        self.next.message = format!("aborted at {at}: {why}");
        let message = self.next.message.clone();
        self.condition("Ready", "False", reasons::ROLLOUT_ABORTED, &message);
        self.condition("Progressing", "False", reasons::ROLLOUT_ABORTED, &message);
        self.event(reasons::ROLLOUT_ABORTED, message, true);
        self.requeue_after = Duration::from_secs(30);
    }

    /// Traffic and scale of the current step, candidate scaled before weight rises.
    ///
    /// Capacity before weight: the weight rises only once the candidate has the ready
    /// replicas that carry it at stable's load per pod; until then it stays where it was.
    /// Returns what the step still waits for, if anything. With `hold` (a paused rollout) the
    /// weight does not rise at all: a pause holds until resumed, even if the pods arrive
    /// meanwhile. Under `maxSurge` the walk in [`surge`] replaces this.
    fn step_traffic(&mut self, spec: &ValidSpec, hold: bool) -> Option<String> {
        let mut intent = TrafficIntent::step(spec, self.next.step as usize, self.candidate_revision());
        self.actions.retain(|a| {
            !matches!(
                a,
                Action::SetTraffic(_) | Action::ScaleCandidate(_) | Action::ScaleStable(_)
            )
        });
        if let Some(budget) = self.budget(spec) {
            return self.surge_traffic(spec, budget, intent, hold);
        }
        // maxSurge removed mid-rollout: stable gets its pods back before anything else.
        self.restore_stable();
        let replicas = self.replicas_for(spec, intent.weight);
        let needed = if intent.weight == 0 { 1 } else { replicas };
        let ready = self.obs.candidate.ready_replicas;
        let rising = intent.weight > self.old.candidate_weight;
        let waiting = (rising && ready < needed)
            .then(|| format!("waiting for {needed} ready candidate replicas ({ready} ready) before the weight rises"));
        if waiting.is_some() || (rising && hold) {
            intent.weight = self.old.candidate_weight;
        }
        self.actions.push(Action::ScaleCandidate(replicas));
        self.set_traffic(intent);
        waiting
    }

    /// The traffic the rollout already has, as status records it.
    fn keep_traffic(&mut self, spec: &ValidSpec) {
        let mut intent = TrafficIntent::step(spec, self.next.step as usize, self.candidate_revision());
        intent.weight = self.next.candidate_weight;
        if !self.next.preview {
            intent.preview = None;
        }
        // Under maxSurge the candidate keeps its pods: the walks size them.
        if self.budget(spec).is_none() && self.next.max_surge.is_none() {
            let replicas = self.replicas_for(spec, intent.weight);
            self.actions.push(Action::ScaleCandidate(replicas));
        }
        self.set_traffic(intent);
    }

    /// The candidate's replicas at `weight`: equal load per pod for a canary; stable's whole
    /// count for blue-green, whose candidate takes all traffic at the switch. Stable's count is
    /// the larger of what it had when the rollout began and what it has now: an HPA shrinking
    /// stable because the candidate took its traffic must not shrink the candidate with it.
    fn replicas_for(&self, spec: &ValidSpec, weight: u16) -> u32 {
        let stable = self.obs.stable.replicas.max(self.next.stable_replicas.unwrap_or(0));
        match spec.strategy {
            crate::rollout::validate::ValidStrategy::Canary(_) => candidate_replicas(stable, weight),
            crate::rollout::validate::ValidStrategy::BlueGreen { .. } => stable.max(1),
            // An experiment scales no Deployment (and never reaches here).
            crate::rollout::validate::ValidStrategy::Experiment(_) => 0,
        }
    }

    fn set_traffic(&mut self, intent: TrafficIntent) {
        self.next.candidate_weight = intent.weight;
        self.next.preview = intent.preview.is_some();
        self.actions.push(Action::SetTraffic(intent));
    }

    /// The candidate Deployment's current revision, which scopes the proxy's fail-fast trip.
    fn candidate_revision(&self) -> Option<String> {
        self.obs
            .candidate
            .exists
            .then(|| self.obs.candidate.template_hash.clone())
    }

    /// The fail-fast trips the metrics show since the window began, in words, if any: in a
    /// window read whole, or at the proxies that could be read when some could not.
    fn tripped(&self) -> Option<String> {
        match &self.obs.metrics {
            Ok(reading) => reading.window.as_ref().filter(|w| w.fail_fast_trips > 0).map(|w| {
                if reading.trips.is_empty() {
                    format!("{} trip(s) counted", w.fail_fast_trips)
                } else {
                    reading.trips.join("; ")
                }
            }),
            Err(MetricsUnavailable::SourceDown { trips, .. }) if !trips.is_empty() => Some(trips.join("; ")),
            Err(_) => None,
        }
    }

    /// Whether every proxy now sends the candidate nothing though status gives it a weight
    /// and the proxies were sending it some at the window's start: the candidate was closed
    /// by an act this rollout has no record of, an abort whose status a crash lost (or a
    /// person editing the route). Reopening it would put traffic back on a candidate found
    /// bad, so the rollout aborts again. Needs per-proxy weights (the proxy source).
    fn closed_without_record(&self) -> Option<String> {
        if self.old.candidate_weight == 0 {
            return None;
        }
        let reading = self.obs.metrics.as_ref().ok()?;
        let now = reading.mark.instances.as_ref()?.weights();
        let before = self
            .old
            .evidence
            .as_ref()?
            .window_start
            .as_ref()?
            .instances
            .as_ref()?
            .weights();
        let closed = !now.is_empty() && now.iter().all(|w| *w == 0);
        let was_open = !before.is_empty() && before.iter().all(|w| *w > 0);
        (closed && was_open).then(|| {
            format!(
                "the proxies send the candidate nothing though this rollout gave it {}: an abort whose record a \
                 controller restart lost, or the route closed by hand; not reopening it",
                percent(self.old.candidate_weight)
            )
        })
    }

    /// Where a window starting now begins, if the metrics could be read.
    fn mark(&self) -> Option<WindowMark> {
        self.obs.metrics.as_ref().ok().map(|r| r.mark.clone())
    }

    fn step_started(&self) -> SystemTime {
        self.next.step_started_at.as_ref().map(system_time).unwrap_or(self.now)
    }

    fn hold(&self, spec: &ValidSpec) -> Duration {
        use crate::rollout::validate::ValidStrategy;
        match &spec.strategy {
            ValidStrategy::Canary(steps) => steps.get(self.next.step as usize).map_or(Duration::ZERO, |s| s.hold),
            ValidStrategy::BlueGreen { hold_before_switch, .. } if self.next.step == 0 => *hold_before_switch,
            ValidStrategy::BlueGreen { keep_old_for, .. } => *keep_old_for,
            ValidStrategy::Experiment(e) => e.duration,
        }
    }

    fn step_label(&self, spec: &ValidSpec) -> String {
        use crate::rollout::validate::ValidStrategy;
        let n = spec.strategy.step_count();
        let i = self.next.step as usize + 1;
        match &spec.strategy {
            ValidStrategy::Canary(_) => format!("step {i}/{n} at {}", percent(spec.strategy.weight(i - 1))),
            ValidStrategy::BlueGreen { .. } if self.next.step == 0 => format!("step {i}/{n} (preview)"),
            ValidStrategy::BlueGreen { .. } => format!("step {i}/{n} (switched, stable kept)"),
            ValidStrategy::Experiment(_) => "the experiment".to_owned(),
        }
    }

    fn event(&mut self, reason: &'static str, message: String, warning: bool) {
        self.events.push(Event {
            reason,
            message,
            warning,
        });
    }

    fn condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        set_condition(
            &mut self.next.conditions,
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(micro_time(self.now).0),
                observed_generation: self.obs.generation,
            },
        );
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod surge_tests;
#[cfg(test)]
mod tests;
