//! Promotion: stable takes the analysed revision, and only that one. Part of
//! [`decide`](super); pure.

use std::time::Duration;

use super::{Action, Ctx, TrafficIntent, reasons, surge};
use crate::rollout::validate::ValidSpec;
use crate::status::{Phase, PromotionStage, Verb};

impl Ctx<'_> {
    pub(super) fn promoting(&mut self, spec: &ValidSpec, verb: Option<Verb>, changed: bool) {
        let target = self.old.candidate_revision.clone().unwrap_or_default();
        let stable = &self.obs.stable;
        let copied = stable.template_hash == target;
        let growing = self.old.promotion == Some(PromotionStage::GrowingStable);
        // Under maxSurge stable may have too few pods for all traffic: it grows back first,
        // and the candidate keeps its last pod until the proxies are seen sending it nothing.
        let short = self.old.max_surge.is_some()
            && (stable.ready_replicas < self.full_stable() || self.old.candidate_weight > 0 || !self.served(spec, 0));
        let tripped = self.tripped().is_some();
        if copied && (stable.rolled_out || growing) && !short {
            self.set_traffic(TrafficIntent::none(self.candidate_revision()));
            self.restore_stable();
            self.actions.push(Action::ScaleCandidate(0));
            self.next.phase = Phase::Succeeded;
            self.next.promotion = None;
            self.next.message = format!("promoted revision {target}: stable runs it and takes all traffic");
            let message = self.next.message.clone();
            self.condition("Ready", "True", reasons::ROLLOUT_SUCCEEDED, &message);
            self.condition("Progressing", "False", reasons::ROLLOUT_SUCCEEDED, &message);
            self.event(reasons::ROLLOUT_SUCCEEDED, message, false);
            self.requeue_after = if changed {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            };
            return;
        }
        self.requeue_after = Duration::from_secs(1);
        if changed {
            // A new template is rolling onto the candidate's pods: nobody analysed it, so it
            // gets no traffic, now.
            let new = self.obs.candidate.template_hash.clone();
            self.set_traffic(TrafficIntent::none(Some(new.clone())));
            self.restore_stable();
            if copied {
                self.next.message = format!(
                    "promoting: stable rolling to the analysed revision {target} ({}/{} ready); the candidate changed \
                     to {new} and takes no traffic; its rollout starts once stable is done",
                    stable.ready_replicas, stable.replicas
                );
            } else {
                // The analysed template never reached stable and is gone from the candidate:
                // there is nothing judged left to promote.
                self.next.phase = Phase::Idle;
                self.next.promotion = None;
                self.next.evidence = None;
                self.next.message = format!(
                    "candidate changed to revision {new} before the analysed {target} reached stable: starting again"
                );
                self.event(reasons::CANDIDATE_CHANGED, self.next.message.clone(), true);
            }
            return;
        }
        self.next.message = if verb == Some(Verb::Abort) {
            format!("cannot abort: stable is already rolling to revision {target}; roll stable back by hand if needed")
        } else {
            format!(
                "promoting: stable rolling to revision {target} ({}/{} ready)",
                stable.ready_replicas, stable.replicas
            )
        };
        let started = self.step_started();
        let stalled = self.now >= started + spec.analysis.progress_deadline;
        if self.old.promotion == Some(PromotionStage::StableOnly) || tripped || stalled {
            // The candidate takes no more traffic while stable finishes: it tripped the proxy's
            // fail-fast, or stable has not rolled out within the deadline and the candidate
            // would otherwise keep its share for as long as that takes. Under maxSurge stable
            // gets its pods back at once, and the candidate, out of traffic, gives up its own.
            self.set_traffic(TrafficIntent::none(self.candidate_revision()));
            if self.next.max_surge.is_some() {
                self.restore_stable();
                self.actions.push(Action::ScaleCandidate(0));
            }
            if self.old.promotion != Some(PromotionStage::StableOnly) {
                self.next.promotion = Some(PromotionStage::StableOnly);
                let why = if tripped {
                    "the proxy's fail-fast tripped during the promotion".to_owned()
                } else {
                    format!(
                        "stable has not rolled out revision {target} within {}",
                        humantime::format_duration(spec.analysis.progress_deadline)
                    )
                };
                let message = format!("{why}: all traffic on stable while it finishes; check stable's rollout");
                self.condition("Progressing", "False", reasons::PROMOTION_STALLED, &message);
                self.event(reasons::PROMOTION_STALLED, message, true);
            }
        } else if copied && (stable.rolled_out || growing) {
            self.grow_stable(spec);
        } else if !copied && self.old.max_surge.is_some() {
            // Stable's pods are replaced only once they carry nothing: under a budget there
            // is no spare pod to keep them serving while they roll.
            if self.fill_candidate(spec) {
                self.next.promotion = Some(PromotionStage::RollingStable);
                self.actions.push(Action::PromoteTemplate { revision: target });
            }
            return;
        } else {
            // Keep the candidate serving its share until stable has the new template.
            self.keep_traffic(spec);
        }
        if !copied {
            self.actions.push(Action::PromoteTemplate { revision: target });
        }
    }

    /// Under maxSurge, before stable gets the analysed template: all traffic moves to the
    /// candidate, which runs the same revision, by the forward walk (see [`surge::forward`]),
    /// so that stable's pods carry nothing while they are replaced. True once the proxies are
    /// seen serving it all.
    fn fill_candidate(&mut self, spec: &ValidSpec) -> bool {
        let (applied, served, budget, stable, candidate) = self.promotion_walk(spec);
        let all = weir_proxy::split::BASIS_POINTS;
        let plan = surge::forward(budget, all, applied, served, stable, candidate, false);
        self.next.promotion = Some(PromotionStage::FillingCandidate);
        if plan.stable < stable.desired {
            self.actions.push(Action::ScaleStable(plan.stable));
            self.next.stable_scaled_to = Some(plan.stable);
        }
        self.actions.push(Action::ScaleCandidate(plan.candidate));
        self.promotion_traffic(spec, plan.weight);
        let filled = applied == all && served;
        self.next.message = if filled {
            format!(
                "promoting: the candidate carries all traffic; stable's {} pod(s) take revision {} next",
                stable.desired,
                self.old.candidate_revision.as_deref().unwrap_or_default()
            )
        } else {
            format!(
                "promoting: the candidate takes all traffic within maxSurge {} before stable's pods are replaced \
                 (at {}, {}/{} candidate replicas ready, stable at {})",
                budget.surge,
                super::percent(plan.weight),
                candidate.ready,
                plan.candidate,
                plan.stable
            )
        };
        filled
    }

    /// Stable runs the analysed template with the pods maxSurge left it: traffic moves back to
    /// it as it grows into the room the candidate gives up (see [`surge::back`]).
    fn grow_stable(&mut self, spec: &ValidSpec) {
        let (applied, served, budget, stable, candidate) = self.promotion_walk(spec);
        let plan = surge::back(budget, applied, 0, served, stable, candidate);
        self.next.promotion = Some(PromotionStage::GrowingStable);
        self.actions.push(Action::ScaleCandidate(plan.candidate));
        if plan.stable > stable.desired {
            self.actions.push(Action::ScaleStable(plan.stable));
            self.next.stable_scaled_to = Some(plan.stable);
        }
        self.promotion_traffic(spec, plan.weight);
        self.next.message = format!(
            "promoting: stable runs revision {} and grows back within maxSurge {} ({}/{} ready of {}); \
             the candidate keeps {} until stable carries it",
            self.old.candidate_revision.as_deref().unwrap_or_default(),
            budget.surge,
            stable.ready,
            plan.stable,
            budget.full,
            super::percent(plan.weight)
        );
    }

    /// What a promotion's walk starts from: the weight applied, whether the proxies serve
    /// it, the budget status recorded (the spec's maxSurge may have changed since), and both
    /// sides' pods.
    fn promotion_walk(&self, spec: &ValidSpec) -> (u16, bool, surge::Budget, surge::Pods, surge::Pods) {
        let applied = self.old.candidate_weight;
        let budget = surge::Budget {
            full: self.full_stable(),
            surge: self.old.max_surge.unwrap_or(1),
        };
        (
            applied,
            self.served(spec, applied),
            budget,
            super::scaling::pods(&self.obs.stable),
            super::scaling::pods(&self.obs.candidate),
        )
    }

    /// A promotion walk's weight on the route, with no preview. A change is progress: the
    /// deadline for the promotion counts from it, and so does the time a source without
    /// per-proxy weights needs before the weight counts as served.
    fn promotion_traffic(&mut self, spec: &ValidSpec, weight: u16) {
        let mut intent = TrafficIntent::step(spec, self.next.step as usize, self.candidate_revision());
        intent.weight = weight;
        intent.preview = None;
        if weight != self.old.candidate_weight {
            self.next.step_started_at = Some(crate::status::micro_time(self.now));
        }
        self.set_traffic(intent);
    }

    pub(super) fn start_promotion(&mut self, spec: &ValidSpec, why: &str) {
        let target = self.next.candidate_revision.clone().unwrap_or_default();
        self.next.phase = Phase::Promoting;
        self.next.promotion = Some(PromotionStage::RollingStable);
        self.next.step_started_at = Some(crate::status::micro_time(self.now));
        // The copy comes at the next look, once this status is written: stable runs the
        // candidate's revision only after status says Promoting, so a stable found running it
        // in any other phase was changed by someone else, not by a promotion whose status was
        // lost.
        self.keep_traffic(spec);
        self.next.message = format!("{why}: promoting revision {target}");
        self.condition(
            "Progressing",
            "True",
            reasons::ROLLOUT_PROMOTING,
            &self.next.message.clone(),
        );
        self.event(reasons::ROLLOUT_PROMOTING, self.next.message.clone(), false);
        self.requeue_after = Duration::from_secs(1);
    }
}
