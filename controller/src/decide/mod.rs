//! `decide`: all rollout policy in one pure function, `(spec, status, observation, now) ->
//! Decision`. No I/O, no clock, no randomness: replaying the same inputs gives the same
//! decision, so a controller that dies mid-rollout resumes from its status.
//!
//! Every decision states the whole desired state of traffic and the candidate's scale, in the
//! order it must be applied: raising weight scales the candidate up first; lowering weight
//! (an abort) sets traffic first. Applying a decision twice changes nothing.

pub mod reasons;

use std::time::{Duration, SystemTime};

use crate::judge::{self, Counters, Evidence, Judgement};
use crate::rollout::validate::{ValidSpec, ValidStrategy, describe, validate};
use crate::rollout::{AnalysisRecord, Condition, Phase, PromotionStage, RolloutSpec, RolloutStatus, VerdictKind};

/// One Deployment as observed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WorkloadState {
    /// Whether it exists.
    pub exists: bool,
    /// Hash of its pod template.
    pub template_hash: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Ready replicas.
    pub ready_replicas: u32,
    /// Its controller has finished rolling out the current template.
    pub rolled_out: bool,
}

impl WorkloadState {
    /// Rolled out with at least one ready replica: able to take traffic.
    pub fn available(&self) -> bool {
        self.exists && self.rolled_out && self.ready_replicas >= 1
    }
}

/// What people asked for (annotations, CLI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Commands {
    /// Hold the rollout where it is.
    pub pause: bool,
    /// Promote now, whatever the analysis says.
    pub promote: bool,
    /// Abort now.
    pub abort: bool,
    /// Start again after an abort.
    pub retry: bool,
}

/// Everything `decide` looks at besides spec and status.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The stable Deployment.
    pub stable: WorkloadState,
    /// The candidate Deployment.
    pub candidate: WorkloadState,
    /// Cumulative counters of the route, or why they could not be read.
    pub metrics: Result<Counters, String>,
    /// Requests from people.
    pub commands: Commands,
}

/// One thing to do, through a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set the route's candidate weight (basis points) and the preview override (blue-green).
    SetTraffic {
        /// Candidate weight in basis points.
        weight: u16,
        /// Whether the preview header routes to the candidate.
        preview: bool,
    },
    /// Set the candidate Deployment's replicas.
    ScaleCandidate(u32),
    /// Copy the candidate's pod template into the stable Deployment.
    PromoteTemplate,
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
    /// The analysis made this time, if one was due.
    pub judgement: Option<Judgement>,
}

/// Replicas the candidate needs for `weight` of stable's traffic: its share of stable's
/// replicas, rounded up, never below one.
pub fn candidate_replicas(stable_replicas: u32, weight: u16) -> u32 {
    let share = (u64::from(stable_replicas) * u64::from(weight)).div_ceil(10_000);
    u32::try_from(share).unwrap_or(u32::MAX).max(1)
}

/// Formats a time as stored in status.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
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
        judgement: None,
    };
    match validate(spec) {
        Ok(spec) => {
            ctx.condition("SpecValid", "True", reasons::SPEC_VALID, "");
            ctx.run(&spec);
        }
        Err(errors) => {
            // Never touch traffic on an invalid spec: whatever was set stays until it is fixed.
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
        }
    }
    Decision {
        status: ctx.next,
        actions: ctx.actions,
        events: ctx.events,
        requeue_after: ctx.requeue_after.max(Duration::from_millis(50)),
        judgement: ctx.judgement,
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
    judgement: Option<Judgement>,
}

impl Ctx<'_> {
    fn run(&mut self, spec: &ValidSpec) {
        let candidate_revision = &self.obs.candidate.template_hash;
        let changed = self.old.candidate_revision.as_ref() != Some(candidate_revision);
        match self.old.phase {
            Phase::Idle => self.idle(spec),
            Phase::Progressing | Phase::Paused if changed && self.obs.candidate.exists => {
                self.set_traffic(0, false);
                self.next.phase = Phase::Idle;
                self.next.evidence = None;
                self.next.message = format!("candidate changed to revision {candidate_revision}: starting again");
                self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), false);
                self.requeue_after = Duration::from_secs(1);
            }
            Phase::Progressing => self.progressing(spec),
            Phase::Paused => self.paused(spec),
            Phase::Promoting => self.promoting(spec),
            Phase::Succeeded | Phase::Aborted => {
                let retry = self.old.phase == Phase::Aborted && self.obs.commands.retry;
                if (changed && self.obs.candidate.exists) || retry {
                    self.next.candidate_revision = None;
                    self.idle(spec);
                } else {
                    self.set_traffic(0, false);
                    self.actions.push(Action::ScaleCandidate(0));
                    self.requeue_after = Duration::from_secs(30);
                }
            }
        }
    }

    fn idle(&mut self, spec: &ValidSpec) {
        let (stable, candidate) = (&self.obs.stable, &self.obs.candidate);
        self.next.phase = Phase::Idle;
        self.requeue_after = Duration::from_secs(2);
        self.set_traffic(0, false);
        if !candidate.exists || !stable.exists {
            let missing = if candidate.exists {
                &spec.stable
            } else {
                &spec.candidate
            };
            self.next.message = format!("waiting for Deployment {missing}");
            self.requeue_after = Duration::from_secs(10);
            return;
        }
        if candidate.template_hash == stable.template_hash {
            self.next.message = "candidate matches stable: nothing to roll out".into();
            self.requeue_after = Duration::from_secs(30);
            return;
        }
        if !candidate.available() {
            self.actions.push(Action::ScaleCandidate(candidate.replicas.max(1)));
            self.next.message = format!(
                "waiting for candidate revision {} to become available ({}/{} ready)",
                candidate.template_hash,
                candidate.ready_replicas,
                candidate.replicas.max(1)
            );
            return;
        }
        self.actions.clear();
        self.next.phase = Phase::Progressing;
        self.next.step = 0;
        self.next.candidate_revision = Some(candidate.template_hash.clone());
        self.next.stable_revision = Some(stable.template_hash.clone());
        self.next.step_started_at = Some(timestamp(self.now));
        self.next.step_passed = false;
        self.next.failed_checks = 0;
        self.next.last_analysis = None;
        self.next.promotion = None;
        self.next.evidence = Some(Evidence::starting_at(self.obs.metrics.as_ref().ok().cloned()));
        self.condition("Ready", "Unknown", reasons::ROLLOUT_STARTED, "rollout in progress");
        self.step_traffic(spec);
        self.next.message = format!("{}: started", self.step_label(spec));
        self.event(
            reasons::ROLLOUT_STARTED,
            format!(
                "rolling out revision {} over {}",
                candidate.template_hash, stable.template_hash
            ),
            false,
        );
        self.requeue_after = spec.analysis.interval.min(self.hold(spec));
    }

    fn progressing(&mut self, spec: &ValidSpec) {
        if self.obeyed_abort_or_promote(spec) {
            return;
        }
        let commands = self.obs.commands;
        if commands.pause {
            self.next.phase = Phase::Paused;
            self.step_traffic(spec);
            self.next.message = format!("{}: paused", self.step_label(spec));
            self.event(reasons::ROLLOUT_PAUSED, self.next.message.clone(), false);
            self.requeue_after = Duration::from_secs(5);
            return;
        }

        let started = parse_time(self.old.step_started_at.as_deref()).unwrap_or(self.now);
        let last = parse_time(self.old.last_analysis.as_ref().map(|a| a.at.as_str())).filter(|t| *t >= started);
        let due = last.unwrap_or(started) + spec.analysis.interval;
        if self.now >= due {
            let judgement = match &self.obs.metrics {
                Ok(current) => judge::judge(
                    &spec.analysis,
                    self.old.evidence.as_ref().unwrap_or(&Evidence::default()),
                    current,
                ),
                Err(why) => Judgement {
                    verdict: VerdictKind::Inconclusive,
                    decisive: false,
                    reason: format!("metrics unavailable: {why}"),
                    values: Default::default(),
                    evidence: self.old.evidence.clone().unwrap_or_default(),
                },
            };
            self.next.evidence = Some(judgement.evidence.clone());
            self.next.last_analysis = Some(AnalysisRecord {
                at: timestamp(self.now),
                verdict: judgement.verdict,
                reason: judgement.reason.clone(),
                values: judgement.values.clone(),
            });
            let reason = judgement.reason.clone();
            let (verdict, decisive) = (judgement.verdict, judgement.decisive);
            self.judgement = Some(judgement);
            match verdict {
                VerdictKind::Fail if decisive => return self.abort(spec, reason),
                VerdictKind::Fail => {
                    self.next.failed_checks = self.old.failed_checks + 1;
                    self.next.step_passed = false;
                    if self.next.failed_checks >= spec.analysis.failure_limit {
                        return self.abort(
                            spec,
                            format!("{} consecutive failed checks: {reason}", self.next.failed_checks),
                        );
                    }
                    self.event(reasons::ANALYSIS_FAILED, reason.clone(), true);
                }
                VerdictKind::Inconclusive => self.next.step_passed = false,
                VerdictKind::Pass => {
                    self.next.failed_checks = 0;
                    self.next.step_passed = true;
                }
            }
            self.next.message = format!("{}: {}", self.step_label(spec), reason);
        }

        let hold_ends = started + self.hold(spec);
        if self.now >= hold_ends && self.next.step_passed {
            let last_step = self.next.step as usize + 1 >= spec.strategy.step_count();
            if last_step {
                return self.start_promotion(spec, "all steps passed");
            }
            self.next.step += 1;
            self.next.step_started_at = Some(timestamp(self.now));
            self.next.step_passed = false;
            self.step_traffic(spec);
            self.next.message = format!("{}: started", self.step_label(spec));
            self.event(reasons::STEP_ADVANCED, self.next.message.clone(), false);
            self.requeue_after = spec.analysis.interval.min(self.hold(spec));
            return;
        }
        self.step_traffic(spec);
        let next_analysis = parse_time(self.next.last_analysis.as_ref().map(|a| a.at.as_str()))
            .filter(|t| *t >= started)
            .unwrap_or(started)
            + spec.analysis.interval;
        let mut wake = next_analysis;
        if self.now < hold_ends {
            wake = wake.min(hold_ends);
        }
        self.requeue_after = wake.duration_since(self.now).unwrap_or(Duration::ZERO);
    }

    /// A person's abort or promote wins over everything a running or paused rollout would do.
    fn obeyed_abort_or_promote(&mut self, spec: &ValidSpec) -> bool {
        if self.obs.commands.abort {
            self.abort(spec, "aborted on request".into());
            true
        } else if self.obs.commands.promote {
            self.start_promotion(spec, "promoted on request");
            true
        } else {
            false
        }
    }

    fn paused(&mut self, spec: &ValidSpec) {
        if self.obeyed_abort_or_promote(spec) {
            return;
        }
        let commands = self.obs.commands;
        self.step_traffic(spec);
        if commands.pause {
            self.requeue_after = Duration::from_secs(5);
            return;
        }
        // The hold and the analysis start over: what was seen before the pause is old news.
        self.next.phase = Phase::Progressing;
        self.next.step_started_at = Some(timestamp(self.now));
        self.next.step_passed = false;
        self.next.message = format!("{}: resumed", self.step_label(spec));
        self.event(reasons::ROLLOUT_RESUMED, self.next.message.clone(), false);
        self.requeue_after = spec.analysis.interval;
    }

    fn promoting(&mut self, spec: &ValidSpec) {
        let target = self.old.candidate_revision.clone().unwrap_or_default();
        let stable = &self.obs.stable;
        if stable.template_hash == target && stable.rolled_out {
            self.set_traffic(0, false);
            self.actions.push(Action::ScaleCandidate(0));
            self.next.phase = Phase::Succeeded;
            self.next.promotion = None;
            self.next.preview = false;
            self.next.message = format!("promoted revision {target}: stable runs it and takes all traffic");
            self.condition("Ready", "True", reasons::ROLLOUT_SUCCEEDED, &self.next.message.clone());
            self.event(reasons::ROLLOUT_SUCCEEDED, self.next.message.clone(), false);
            self.requeue_after = Duration::from_secs(30);
            return;
        }
        if self.obs.commands.abort {
            self.next.message = format!(
                "cannot abort: stable is already rolling to revision {target}; roll stable back by hand if needed"
            );
        } else {
            self.next.message = format!(
                "promoting: stable rolling to revision {target} ({}/{} ready)",
                stable.ready_replicas, stable.replicas
            );
        }
        // Keep the candidate serving its share until stable has the new template.
        self.keep_traffic(spec);
        self.actions.push(Action::PromoteTemplate);
        self.requeue_after = Duration::from_secs(1);
    }

    fn start_promotion(&mut self, spec: &ValidSpec, why: &str) {
        self.next.phase = Phase::Promoting;
        self.next.promotion = Some(PromotionStage::RollingStable);
        self.keep_traffic(spec);
        self.actions.push(Action::PromoteTemplate);
        let target = self.next.candidate_revision.clone().unwrap_or_default();
        self.next.message = format!("{why}: promoting revision {target}");
        self.event(reasons::ROLLOUT_PROMOTING, self.next.message.clone(), false);
        self.requeue_after = Duration::from_secs(1);
    }

    fn abort(&mut self, spec: &ValidSpec, why: String) {
        let at = self.step_label(spec);
        self.actions.clear();
        // Weight first: traffic leaves the candidate before anything else happens to it.
        self.set_traffic(0, false);
        self.actions.push(Action::ScaleCandidate(0));
        self.next.phase = Phase::Aborted;
        self.next.promotion = None;
        self.next.message = format!("aborted at {at}: {why}");
        self.condition("Ready", "False", reasons::ROLLOUT_ABORTED, &self.next.message.clone());
        self.event(reasons::ROLLOUT_ABORTED, self.next.message.clone(), true);
        self.requeue_after = Duration::from_secs(30);
    }

    /// Traffic and scale of the current step, candidate scaled before weight rises.
    fn step_traffic(&mut self, spec: &ValidSpec) {
        let (weight, preview) = match &spec.strategy {
            ValidStrategy::Canary(steps) => (steps.get(self.next.step as usize).map_or(0, |s| s.weight), false),
            ValidStrategy::BlueGreen { .. } if self.next.step == 0 => (0, true),
            ValidStrategy::BlueGreen { .. } => (10_000, false),
        };
        let replicas = self.replicas_for(spec, weight);
        self.actions
            .retain(|a| !matches!(a, Action::SetTraffic { .. } | Action::ScaleCandidate(_)));
        self.actions.push(Action::ScaleCandidate(replicas));
        self.set_traffic(weight, preview);
    }

    /// The traffic the rollout already has, as status records it.
    fn keep_traffic(&mut self, spec: &ValidSpec) {
        let weight = self.next.candidate_weight;
        let replicas = self.replicas_for(spec, weight);
        self.actions.push(Action::ScaleCandidate(replicas));
        self.set_traffic(weight, self.next.preview);
    }

    /// The candidate's replicas at `weight`: its share of stable's for a canary; stable's
    /// whole count for blue-green, whose candidate takes all traffic at the switch.
    fn replicas_for(&self, spec: &ValidSpec, weight: u16) -> u32 {
        match spec.strategy {
            ValidStrategy::Canary(_) => candidate_replicas(self.obs.stable.replicas, weight),
            ValidStrategy::BlueGreen { .. } => self.obs.stable.replicas.max(1),
        }
    }

    fn set_traffic(&mut self, weight: u16, preview: bool) {
        self.next.candidate_weight = weight;
        self.next.preview = preview;
        self.actions.push(Action::SetTraffic { weight, preview });
    }

    fn hold(&self, spec: &ValidSpec) -> Duration {
        match &spec.strategy {
            ValidStrategy::Canary(steps) => steps.get(self.next.step as usize).map_or(Duration::ZERO, |s| s.hold),
            ValidStrategy::BlueGreen { hold_before_switch, .. } if self.next.step == 0 => *hold_before_switch,
            ValidStrategy::BlueGreen { keep_old_for, .. } => *keep_old_for,
        }
    }

    fn step_label(&self, spec: &ValidSpec) -> String {
        let n = spec.strategy.step_count();
        let i = self.next.step as usize + 1;
        match &spec.strategy {
            ValidStrategy::Canary(_) => {
                format!("step {i}/{n} at {}", percent(self.next.candidate_weight))
            }
            ValidStrategy::BlueGreen { .. } if self.next.step == 0 => {
                format!("step {i}/{n} (preview)")
            }
            ValidStrategy::BlueGreen { .. } => format!("step {i}/{n} (switched, stable kept)"),
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
        let now = timestamp(self.now);
        match self.next.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
            }
            None => self.next.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
