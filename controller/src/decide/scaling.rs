//! The GPU budget (`maxSurge`) as [`decide`](super) applies it: the walk of a step, stable
//! restored on every way out, the proxies' weight seen served, and another manager of
//! stable's replicas noticed. The arithmetic is in [`surge`](super::surge). Pure.

use std::time::Duration;

use super::{Action, Ctx, TrafficIntent, WorkloadState, percent, surge};
use crate::rollout::validate::ValidSpec;

/// One side's pods as the surge walks count them.
pub(super) fn pods(w: &WorkloadState) -> surge::Pods {
    surge::Pods {
        desired: w.replicas,
        running: w.pods,
        ready: w.ready_replicas,
    }
}

/// Why a GPU budget cannot be kept while an autoscaler also sets stable's replicas.
pub(super) fn surge_with_autoscaler(hpa: &str, stable: &str) -> String {
    format!(
        "spec.scaling.maxSurge cannot be used while HorizontalPodAutoscaler {hpa} scales Deployment {stable}: \
         both would set stable's replicas; remove maxSurge or the autoscaler"
    )
}

impl Ctx<'_> {
    /// The step's traffic under a GPU budget: stable gives up what the weight the proxies
    /// serve no longer needs, the candidate grows into the room, and the weight rises to what
    /// its ready pods carry (or, for a step edited down, falls as far as stable carries).
    /// Stable is scaled down only once status records the surge, so that every way out of the
    /// rollout knows to restore it.
    pub(super) fn surge_traffic(
        &mut self,
        spec: &ValidSpec,
        budget: surge::Budget,
        mut intent: TrafficIntent,
        hold: bool,
    ) -> Option<String> {
        let target = intent.weight;
        let (stable, candidate) = (pods(&self.obs.stable), pods(&self.obs.candidate));
        self.next.max_surge = Some(budget.surge);
        let plan = self.surge_plan(spec, budget, target, hold);
        let scale_stable = Action::ScaleStable(plan.stable);
        let scale_candidate = Action::ScaleCandidate(plan.candidate);
        // Forward: stable gives up pods before the candidate takes the room; back (a step
        // edited down): the candidate gives up pods before stable takes them.
        let order = if plan.stable <= stable.desired {
            [scale_stable, scale_candidate]
        } else {
            [scale_candidate, scale_stable]
        };
        for action in order {
            if action != Action::ScaleStable(stable.desired) {
                self.actions.push(action);
            }
        }
        // Recorded from the first look that leaves stable off its full count, even when the
        // write was made by a look whose record a crash lost.
        if plan.stable != budget.full || self.old.stable_scaled_to.is_some() {
            self.next.stable_scaled_to = Some(plan.stable);
        }
        intent.weight = plan.weight;
        self.set_traffic(intent);
        (plan.weight != target).then(|| {
            format!(
                "waiting for the candidate to take {} within maxSurge {}: at {} ({}/{} candidate replicas ready, \
                 stable at {} of {})",
                percent(target),
                budget.surge,
                percent(plan.weight),
                candidate.ready,
                plan.candidate,
                plan.stable,
                budget.full
            )
        })
    }

    /// This look's walk under `budget` towards `target`: forward, or back for a step edited
    /// down. Stable gives up pods only once status records the surge.
    pub(super) fn surge_plan(&self, spec: &ValidSpec, budget: surge::Budget, target: u16, hold: bool) -> surge::Plan {
        let applied = self.old.candidate_weight;
        let served = self.old.max_surge.is_some() && self.served(spec, applied);
        let (stable, candidate) = (pods(&self.obs.stable), pods(&self.obs.candidate));
        if target >= applied {
            surge::forward(budget, target, applied, served, stable, candidate, hold)
        } else {
            surge::back(budget, applied, target, served, stable, candidate)
        }
    }

    /// Under maxSurge, stable's replicas as someone else left them, if anyone did: neither
    /// what weir last set (status), nor what this look would set (a write whose record a crash
    /// lost), or fewer than the weight served needs. The budget cannot hold against a second
    /// manager (GitOps self-heal, an autoscaler the lookup missed, a person).
    pub(super) fn stable_changed_by_others(&self, spec: &ValidSpec) -> Option<String> {
        let budget = self.budget(spec)?;
        self.old.max_surge?;
        let expected = self.old.stable_scaled_to.unwrap_or(budget.full);
        let seen = self.obs.stable.replicas;
        let target = TrafficIntent::step(spec, self.next.step as usize, None).weight;
        let planned = self.surge_plan(spec, budget, target, false).stable;
        let enough = seen >= surge::stable_for(self.old.candidate_weight, budget.full);
        if seen == expected || (seen == planned && enough) {
            return None;
        }
        Some(format!(
            "stable {} was scaled to {seen} replicas by someone else during a maxSurge rollout (weir set {expected}): \
             the budget cannot hold with two managers of stable's replicas; keep GitOps and autoscalers off them \
             while a rollout runs, or remove maxSurge",
            spec.stable
        ))
    }

    /// The budget of a rollout under `maxSurge` (a canary: validation refuses it with
    /// blue-green), counted from stable's replicas when the rollout began.
    pub(super) fn budget(&self, spec: &ValidSpec) -> Option<surge::Budget> {
        let surge = spec.max_surge?;
        Some(surge::Budget {
            full: self.full_stable(),
            surge,
        })
    }

    /// Stable's replicas when the rollout began (at least one: the walks need a pod to size
    /// a share by).
    pub(super) fn full_stable(&self) -> u32 {
        self.next.stable_replicas.unwrap_or(self.obs.stable.replicas).max(1)
    }

    /// Stable back to its replicas from the start, if this rollout scaled them (status says
    /// so before the first scale-down, so a crash never loses it). Idempotent.
    pub(super) fn restore_stable(&mut self) {
        self.next.stable_scaled_to = None;
        if self.next.max_surge.take().is_some() {
            // Exactly what it had, even none.
            let full = self.next.stable_replicas.unwrap_or(self.obs.stable.replicas);
            self.actions.push(Action::ScaleStable(full));
        }
    }

    /// Whether the proxies are seen serving `weight`: every proxy the metrics source reports
    /// says so. A source that reports no proxy's weight (Prometheus) is trusted a warm-up, and
    /// at least 5 s, after the weight was set.
    pub(super) fn served(&self, spec: &ValidSpec, weight: u16) -> bool {
        match &self.obs.metrics {
            Err(_) => false,
            Ok(reading) => match &reading.mark.instances {
                Some(snapshot) => {
                    let weights = snapshot.weights();
                    !weights.is_empty() && weights.iter().all(|w| *w == weight)
                }
                None => self.now >= self.step_started() + spec.analysis.warmup.max(Duration::from_secs(5)),
            },
        }
    }
}
