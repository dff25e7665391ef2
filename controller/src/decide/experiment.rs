//! The `experiment` strategy: control (stable) and the variants split by fixed weights from
//! the moment every Deployment is available, judged at every look on everything gathered
//! since the split began, until `duration` (or the first winner, if asked). Then all traffic
//! goes back to control, or, for a winning variant that `promoteWinner` or a person's
//! `promote` names, the winner's template is promoted into stable first. Part of
//! [`decide`](super); pure.
//!
//! What keeps the verdict honest:
//! - one window for the whole experiment (its start marked in status), so the intervals, which
//!   are anytime-valid, cover every look at once;
//! - each arm's revision recorded at the start: a Deployment that changes template starts the
//!   experiment again, since its data would mix two versions;
//! - a variant significantly worse than control on errors, or one with no ready pod, ends the
//!   experiment at once with all traffic on control: nobody's users stay on a bad version.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::{Action, Ctx, MetricsUnavailable, TrafficIntent, WorkloadState, reasons};
use crate::counters::{ArmCounters, Buckets};
use crate::experiment::status::{ArmState, ExperimentStatus, HistoryPoint, push_point};
use crate::experiment::verdict::{self, ArmSummary, Histogram, Outcome};
use crate::rollout::ExperimentDecide;
use crate::rollout::validate::{ValidExperiment, ValidSpec};
use crate::stats::confidence::Moments;
use crate::status::{Evidence, Phase, RolloutStatus, Verb, micro_time};

impl Ctx<'_> {
    pub(super) fn experiment(&mut self, spec: &ValidSpec, e: &ValidExperiment) {
        let request = self.fresh_request().cloned();
        let verb = request.as_ref().map(|r| r.verb);
        if request.is_some() {
            self.next.last_request = request;
        }
        let interval = spec.analysis.interval;
        self.requeue_after = interval;
        match self.old.phase {
            Phase::Idle => self.start_experiment(spec, e),
            Phase::Progressing | Phase::Paused => self.run_experiment(spec, e, verb),
            Phase::Promoting => self.promote_winner(spec, e),
            Phase::Succeeded | Phase::Aborted => self.after_experiment(spec, e, verb),
        }
    }

    /// An experiment whose spec became invalid holds as it is (nothing to judge it by), except
    /// that a person's `abort` still puts all traffic on control.
    pub(super) fn experiment_while_invalid(&mut self) {
        let Some(experiment) = self.old.experiment.clone() else {
            return;
        };
        if !matches!(self.old.phase, Phase::Progressing | Phase::Paused | Phase::Promoting) {
            return;
        }
        let request = self.fresh_request().cloned();
        if request.as_ref().is_some_and(|r| r.verb == Verb::Abort) {
            self.next.last_request = request;
            self.set_traffic(TrafficIntent::control_only(experiment.arms.len()));
            let mut experiment = experiment;
            experiment.ended_at = Some(rfc3339(self.now));
            self.next.experiment = Some(experiment);
            self.next.phase = Phase::Aborted;
            self.next.message = "experiment aborted on request (its spec is invalid); all traffic is on control".into();
            let message = self.next.message.clone();
            self.condition("Ready", "False", reasons::ROLLOUT_ABORTED, &message);
            self.event(reasons::ROLLOUT_ABORTED, message, true);
        }
    }

    /// Every arm's Deployment as observed, control first.
    fn arm_states(&self) -> Vec<&WorkloadState> {
        std::iter::once(&self.obs.stable).chain(&self.obs.variants).collect()
    }

    /// Every arm's Deployment by name, as observed, control first.
    fn arm_deployments<'s>(
        &'s self,
        spec: &'s ValidSpec,
        e: &'s ValidExperiment,
    ) -> impl Iterator<Item = (&'s str, &'s WorkloadState)> {
        std::iter::once(spec.stable.as_str())
            .chain(e.variants.iter().map(|v| v.deployment.as_str()))
            .zip(self.arm_states())
    }

    /// The first arm whose Deployment cannot take traffic, in words: to start, every arm must
    /// be rolled out with a ready pod; once running, a ready pod is enough (an autoscaler
    /// adding pods, or one pod restarting, is no reason to stop).
    fn unavailable_arm(&self, spec: &ValidSpec, e: &ValidExperiment, running: bool) -> Option<(String, String)> {
        e.arm_names()
            .into_iter()
            .zip(self.arm_deployments(spec, e))
            .find(|(_, (_, state))| {
                if running {
                    !(state.exists && state.ready_replicas >= 1)
                } else {
                    !state.available()
                }
            })
            .map(|(arm, (deployment, state))| {
                let why = if state.exists {
                    format!(
                        "arm {arm} (Deployment {deployment}) has {}/{} pods ready",
                        state.ready_replicas, state.replicas
                    )
                } else {
                    format!("arm {arm}: Deployment {deployment} does not exist")
                };
                (arm, why)
            })
    }

    /// The running experiment's split at `weights`, its users counted from its start.
    fn experiment_traffic(&self, weights: Vec<u16>) -> TrafficIntent {
        TrafficIntent::experiment(weights).counting_users_since(self.next.started_at.as_ref().map(epoch))
    }

    fn revisions(&self) -> Vec<String> {
        self.arm_states().iter().map(|s| s.template_hash.clone()).collect()
    }

    fn start_experiment(&mut self, spec: &ValidSpec, e: &ValidExperiment) {
        // Until it starts, the route exists with everything on control.
        self.set_traffic(TrafficIntent::control_only(e.weights.len()));
        if let Some((_, why)) = self.unavailable_arm(spec, e, false) {
            self.next.message = format!("waiting to start the experiment: {why}");
            self.requeue_after = Duration::from_secs(2);
            return;
        }
        let Some(mark) = self.mark() else {
            self.next.message = "waiting to start the experiment: the metrics cannot be read".to_owned();
            self.requeue_after = Duration::from_secs(2);
            return;
        };
        self.actions.clear();
        let now = micro_time(self.now);
        self.next.started_at = Some(now.clone());
        self.set_traffic(self.experiment_traffic(e.weights.clone()));
        self.next.phase = Phase::Progressing;
        self.next.step = 0;
        self.next.step_started_at = Some(now);
        self.next.evidence = Some(Evidence {
            window_start: Some(mark),
            ..Evidence::default()
        });
        let names = e.arm_names();
        self.next.experiment = Some(ExperimentStatus {
            started_at: rfc3339(self.now),
            plan: e.plan.clone(),
            arms: names
                .iter()
                .zip(&e.weights)
                .zip(std::iter::once(spec.stable.as_str()).chain(e.variants.iter().map(|v| v.deployment.as_str())))
                .map(|((name, weight), deployment)| ArmState {
                    weight: f64::from(*weight) / 100.0,
                    deployment: deployment.to_owned(),
                    summary: ArmSummary {
                        name: name.clone(),
                        ..ArmSummary::default()
                    },
                })
                .collect(),
            revisions: self.revisions(),
            verdict: None,
            ended_at: None,
            winner: None,
            stopped_by: None,
            history: Vec::new(),
        });
        let split: Vec<String> = names
            .iter()
            .zip(&e.weights)
            .map(|(n, w)| format!("{n} {}", super::percent(*w)))
            .collect();
        self.next.message = format!(
            "experiment running: {} for {}",
            split.join(", "),
            humantime::format_duration(e.duration)
        );
        self.condition(
            "Progressing",
            "True",
            reasons::EXPERIMENT_STARTED,
            &self.next.message.clone(),
        );
        self.event(reasons::EXPERIMENT_STARTED, self.next.message.clone(), false);
    }

    fn run_experiment(&mut self, spec: &ValidSpec, e: &ValidExperiment, verb: Option<Verb>) {
        let Some(mut experiment) = self.old.experiment.clone() else {
            // A status from before experiments, or one edited by hand: start afresh.
            return self.start_experiment(spec, e);
        };
        if experiment.revisions != self.revisions() {
            return self.restart_experiment(e, "an arm's Deployment changed its template");
        }
        if !same_design(&experiment, spec, e) {
            // Another metric, level, weight, or arm would judge the data gathered so far by
            // rules it was not gathered under.
            return self.restart_experiment(e, "was changed in the spec");
        }
        if verb == Some(Verb::Retry) {
            return self.restart_experiment(e, "started again on request");
        }
        if verb == Some(Verb::Abort) {
            return self.stop_experiment(e, experiment, "aborted on request".into());
        }
        if let Some((arm, why)) = self.unavailable_arm(spec, e, true) {
            // Control losing its pods (a node drained) is no verdict on any version.
            experiment.stopped_by = (arm != crate::rollout::CONTROL).then_some(arm);
            return self.stop_experiment(e, experiment, why);
        }
        let names = e.arm_names();
        let started = self
            .next
            .started_at
            .as_ref()
            .map(crate::status::system_time)
            .unwrap_or(self.now);
        let elapsed = self.now.duration_since(started).unwrap_or_default();
        match &self.obs.metrics {
            Err(_) if elapsed >= e.duration => {
                // Over, with this look unreadable: the verdict stands as last seen, and the
                // split ends rather than waiting on the metrics.
                return self.end_experiment(spec, e, experiment, verb);
            }
            Ok(reading) => {
                let window = reading.window.clone().unwrap_or_default();
                let arms: Vec<ArmSummary> = names
                    .iter()
                    .map(|name| summary(name, window.arms.get(name.as_str())))
                    .collect();
                let judged = verdict::verdict(&e.plan, &arms);
                push_point(
                    &mut experiment.history,
                    HistoryPoint::of(rfc3339(self.now), &e.plan, &arms, &judged),
                );
                for (state, arm) in experiment.arms.iter_mut().zip(&arms) {
                    state.summary = arm.clone();
                }
                if let Some((arm, i)) = verdict::failing_more_than_control(&e.plan, &arms) {
                    let why = format!(
                        "variant {arm} fails more often than control (error ratio difference {:+.4} [{:+.4}, {:+.4}])",
                        i.estimate, i.low, i.high
                    );
                    experiment.verdict = Some(judged);
                    experiment.stopped_by = Some(arm.to_owned());
                    return self.stop_experiment(e, experiment, why);
                }
                experiment.verdict = Some(judged);
            }
            Err(unavailable) => {
                self.set_traffic(self.experiment_traffic(e.weights.clone()));
                self.next.message = format!("experiment holding, no verdict this look: {unavailable}");
                if matches!(unavailable, MetricsUnavailable::NoData(_)) {
                    self.requeue_after = Duration::from_secs(2);
                }
                self.next.experiment = Some(experiment);
                return;
            }
        }
        let winner = experiment.verdict.as_ref().and_then(|v| v.outcome.winner());
        let ends = elapsed >= e.duration
            || (e.stop_when_conclusive && winner.is_some())
            || (verb == Some(Verb::Promote) && winner.is_some());
        if !ends {
            // Keep the split written, whatever happened to the route since.
            self.set_traffic(self.experiment_traffic(e.weights.clone()));
            self.next.message = match experiment.verdict.as_ref().map(|v| &v.outcome) {
                Some(Outcome::Inconclusive { reason, samples_needed }) => format!(
                    "experiment running ({} of {}): {reason}{}",
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    humantime::format_duration(e.duration),
                    samples_needed.map_or_else(String::new, |n| format!("; about {n:.0} per arm needed")),
                ),
                Some(Outcome::Winner { arm }) => format!(
                    "experiment running ({} of {}): {arm} leads with a significant margin",
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    humantime::format_duration(e.duration),
                ),
                None => "experiment running".to_owned(),
            };
            if verb == Some(Verb::Promote) {
                self.next.message.push_str("; promote refused: no winner yet");
            }
            self.next.experiment = Some(experiment);
            return;
        }
        self.end_experiment(spec, e, experiment, verb);
    }

    /// The end, with the verdict of the last look: the winner recorded, and promoted when it
    /// is a variant and `promoteWinner` or a person's `promote` says so; else all traffic on
    /// control.
    fn end_experiment(
        &mut self,
        spec: &ValidSpec,
        e: &ValidExperiment,
        mut experiment: ExperimentStatus,
        verb: Option<Verb>,
    ) {
        let winner = experiment
            .verdict
            .as_ref()
            .and_then(|v| v.outcome.winner())
            .map(str::to_owned);
        experiment.ended_at = Some(rfc3339(self.now));
        experiment.winner.clone_from(&winner);
        let promote = verb == Some(Verb::Promote) || e.decide == ExperimentDecide::PromoteWinner;
        match winner {
            Some(arm) if arm != crate::rollout::CONTROL && promote => {
                self.next.experiment = Some(experiment);
                self.begin_promotion(spec, e, &arm);
            }
            _ => self.conclude(e, experiment),
        }
    }

    /// The experiment is over without a promotion: all traffic on control.
    fn conclude(&mut self, e: &ValidExperiment, experiment: ExperimentStatus) {
        self.set_traffic(TrafficIntent::control_only(e.weights.len()));
        self.next.phase = Phase::Succeeded;
        self.next.message = match (&experiment.winner, experiment.verdict.as_ref().map(|v| &v.outcome)) {
            (Some(arm), _) if arm == crate::rollout::CONTROL => {
                "experiment ended: control is better than every variant; stable is unchanged".to_owned()
            }
            (Some(arm), _) => format!(
                "experiment ended: {arm} is better than every other arm; all traffic is back on control until a person \
                 promotes it (weir promote)"
            ),
            (None, Some(Outcome::Inconclusive { reason, .. })) => {
                format!("experiment ended inconclusive: {reason}; stable is unchanged")
            }
            _ => "experiment ended inconclusive; stable is unchanged".to_owned(),
        };
        let message = self.next.message.clone();
        self.condition("Progressing", "False", reasons::EXPERIMENT_CONCLUDED, &message);
        self.condition("Ready", "True", reasons::EXPERIMENT_CONCLUDED, &message);
        self.event(reasons::EXPERIMENT_CONCLUDED, message, false);
        self.next.experiment = Some(experiment);
        self.requeue_after = Duration::from_secs(30);
    }

    /// Ends the experiment at once, all traffic on control.
    fn stop_experiment(&mut self, e: &ValidExperiment, mut experiment: ExperimentStatus, why: String) {
        self.actions.clear();
        self.set_traffic(TrafficIntent::control_only(e.weights.len()));
        experiment.ended_at = Some(rfc3339(self.now));
        self.next.experiment = Some(experiment);
        self.next.phase = Phase::Aborted;
        self.next.message = format!("experiment aborted: {why}; all traffic is on control");
        let message = self.next.message.clone();
        self.condition("Ready", "False", reasons::ROLLOUT_ABORTED, &message);
        self.condition("Progressing", "False", reasons::ROLLOUT_ABORTED, &message);
        self.event(reasons::ROLLOUT_ABORTED, message, true);
        self.requeue_after = Duration::from_secs(30);
    }

    fn restart_experiment(&mut self, e: &ValidExperiment, why: &str) {
        self.set_traffic(TrafficIntent::control_only(e.weights.len()));
        self.next.phase = Phase::Idle;
        self.next.evidence = None;
        self.next.experiment = None;
        self.next.message = format!("experiment {why}: starting again");
        self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), false);
        self.requeue_after = Duration::from_secs(1);
    }

    fn begin_promotion(&mut self, spec: &ValidSpec, e: &ValidExperiment, arm: &str) {
        self.actions.clear();
        self.next.phase = Phase::Promoting;
        self.next.message = format!("experiment ended: {arm} won; promoting its template into stable");
        let message = self.next.message.clone();
        self.condition("Progressing", "True", reasons::ROLLOUT_PROMOTING, &message);
        self.event(reasons::ROLLOUT_PROMOTING, message, false);
        self.promote_winner(spec, e);
    }

    /// Stable takes the winner's judged revision; the split stays (every arm carrying the
    /// share it carried) until stable has rolled out, then control (now the winner) takes all.
    fn promote_winner(&mut self, spec: &ValidSpec, e: &ValidExperiment) {
        self.requeue_after = Duration::from_secs(1);
        let Some(experiment) = self.next.experiment.clone() else {
            return self.start_experiment(spec, e);
        };
        let abort = self.old.phase == Phase::Promoting
            && self.next.last_request != self.old.last_request
            && self.next.last_request.as_ref().is_some_and(|r| r.verb == Verb::Abort);
        let Some((index, variant)) = experiment
            .winner
            .as_ref()
            .and_then(|w| e.variants.iter().enumerate().find(|(_, v)| &v.name == w))
        else {
            return self.conclude(e, experiment);
        };
        let judged = experiment.revisions.get(index + 1).cloned().unwrap_or_default();
        let stable = &self.obs.stable;
        if abort {
            if stable.template_hash != judged {
                return self.stop_experiment(e, experiment, "aborted on request while promoting".into());
            }
            // As for a canary: once stable runs the judged template there is nothing to take
            // back but by hand.
            self.next.message = format!(
                "cannot abort: stable is already rolling to variant {}'s revision {judged}; roll stable back by \
                 hand if needed",
                variant.name
            );
        }
        if stable.template_hash == judged && stable.rolled_out {
            self.set_traffic(TrafficIntent::control_only(e.weights.len()));
            // Control now runs the winner's revision: that is the arm as it stands, not a new
            // template to start another experiment for.
            let mut experiment = experiment;
            if let Some(control) = experiment.revisions.first_mut() {
                control.clone_from(&judged);
            }
            self.next.experiment = Some(experiment);
            self.next.phase = Phase::Succeeded;
            self.next.message = format!(
                "promoted variant {} (revision {judged}): stable runs it and takes all traffic",
                variant.name
            );
            let message = self.next.message.clone();
            self.condition("Ready", "True", reasons::ROLLOUT_SUCCEEDED, &message);
            self.condition("Progressing", "False", reasons::ROLLOUT_SUCCEEDED, &message);
            self.event(reasons::ROLLOUT_SUCCEEDED, message, false);
            self.requeue_after = Duration::from_secs(30);
            return;
        }
        let now = self
            .obs
            .variants
            .get(index)
            .map(|s| s.template_hash.clone())
            .unwrap_or_default();
        if now != judged && stable.template_hash != judged {
            // The judged template is gone from the winner and never reached stable.
            return self.stop_experiment(
                e,
                experiment,
                format!(
                    "variant {} changed to revision {now} before its judged revision {judged} reached stable",
                    variant.name
                ),
            );
        }
        // Only control and the winner keep traffic while stable rolls: the losers' share goes
        // to control, which served all traffic before the experiment and is sized for it.
        let mut weights = vec![0; e.weights.len()];
        weights[index + 1] = e.weights[index + 1];
        weights[0] = weir_proxy::split::BASIS_POINTS - weights[index + 1];
        let winner_ready = self
            .obs
            .variants
            .get(index)
            .is_some_and(|w| w.exists && w.ready_replicas >= 1);
        if winner_ready {
            self.set_traffic(self.experiment_traffic(weights));
        } else {
            // The winner lost its pods: its users go to control while stable rolls (stable's
            // own readiness is the rolling update's business, as in a canary's promotion).
            self.set_traffic(TrafficIntent::control_only(e.weights.len()));
        }
        if stable.template_hash != judged {
            self.actions.push(Action::PromoteVariant {
                deployment: variant.deployment.clone(),
                revision: judged.clone(),
            });
        }
        if !abort {
            self.next.message = format!(
                "promoting variant {}: stable rolling to revision {judged} ({}/{} ready)",
                variant.name, stable.ready_replicas, stable.replicas
            );
        }
    }

    /// After the end: a person's `promote` promotes a winning variant; `retry`, or any arm's
    /// new template, starts a new experiment.
    fn after_experiment(&mut self, spec: &ValidSpec, e: &ValidExperiment, verb: Option<Verb>) {
        self.requeue_after = Duration::from_secs(30);
        if verb == Some(Verb::Retry) {
            return self.restart_experiment(e, "started again on request");
        }
        if let Some(recorded) = &self.old.experiment {
            let new_revisions = match culprit(recorded) {
                // The arm that failed its users takes part again only once its Deployment
                // runs another template. It is found by Deployment, since the spec's arms
                // may have moved; one deleted, or recreated from the same manifest, has not
                // changed; one no longer in the spec is left out of the next experiment.
                Some((deployment, failed)) => self
                    .arm_deployments(spec, e)
                    .find(|(name, _)| *name == deployment)
                    .is_none_or(|(_, state)| state.exists && state.template_hash != failed),
                None => recorded.revisions != self.revisions(),
            };
            if new_revisions {
                return self.restart_experiment(e, "has new revisions to compare");
            }
        }
        let winner = self.old.experiment.as_ref().and_then(|x| x.winner.clone());
        match (verb, winner) {
            (Some(Verb::Promote), Some(arm))
                if arm != crate::rollout::CONTROL && self.old.phase == Phase::Succeeded =>
            {
                self.begin_promotion(spec, e, &arm)
            }
            (Some(Verb::Promote), _) => {
                self.next.message = format!("{}; promote refused: no variant won", self.old.message);
            }
            _ => {}
        }
    }
}

/// The users epoch of an experiment that started at `started_at`: written into its route, and
/// required of the distinct-user counts read for it.
fn epoch(started_at: &MicroTime) -> String {
    started_at.0.to_string()
}

/// The users epoch of the experiment `status` records, if one is recorded.
pub fn users_epoch(status: &RolloutStatus) -> Option<String> {
    status.experiment.as_ref()?;
    status.started_at.as_ref().map(epoch)
}

/// The Deployment and revision of the arm that stopped `experiment`, as recorded at its start.
fn culprit(experiment: &ExperimentStatus) -> Option<(&str, &str)> {
    let arm = experiment.stopped_by.as_ref()?;
    let i = experiment.arms.iter().position(|a| &a.summary.name == arm)?;
    Some((
        experiment.arms[i].deployment.as_str(),
        experiment.revisions.get(i)?.as_str(),
    ))
}

/// Whether the experiment recorded in status was run under the spec's design: the same plan,
/// and the same arms (name, Deployment, weight) in the same order.
fn same_design(experiment: &ExperimentStatus, spec: &ValidSpec, e: &ValidExperiment) -> bool {
    let deployments = std::iter::once(spec.stable.as_str()).chain(e.variants.iter().map(|v| v.deployment.as_str()));
    let now: Vec<(String, &str, f64)> = e
        .arm_names()
        .into_iter()
        .zip(deployments)
        .zip(&e.weights)
        .map(|((name, deployment), w)| (name, deployment, f64::from(*w) / 100.0))
        .collect();
    let recorded: Vec<(String, &str, f64)> = experiment
        .arms
        .iter()
        .map(|a| (a.summary.name.clone(), a.deployment.as_str(), a.weight))
        .collect();
    experiment.plan == e.plan && now == recorded
}

/// One arm's summary from its counters since the start (none read yet: all zero).
fn summary(name: &str, arm: Option<&ArmCounters>) -> ArmSummary {
    let Some(arm) = arm else {
        return ArmSummary {
            name: name.to_owned(),
            ..ArmSummary::default()
        };
    };
    let histogram = |b: &Buckets, sum: f64| Histogram {
        bounds: b.bounds.clone(),
        cumulative: b.cumulative.clone(),
        sum,
    };
    ArmSummary {
        name: name.to_owned(),
        users: arm.users,
        requests: arm.side.requests as f64,
        errors: arm.side.errors as f64,
        latency: histogram(&arm.side.latency, 0.0),
        first_byte: histogram(&arm.side.first_byte, 0.0),
        stream_gap: histogram(&arm.stream_gap, arm.stream_gap_sum),
        score: Moments {
            count: arm.score_count as f64,
            sum: arm.score_sum,
            squares: arm.score_squares,
        },
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
