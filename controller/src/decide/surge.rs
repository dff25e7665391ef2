//! A rollout under a GPU budget (`spec.scaling.maxSurge`): the fleet, stable's replicas plus
//! the candidate's, stays within stable's count at the start (`full`) plus the surge, so stable
//! gives up pods as the candidate grows. Pure arithmetic on pods and basis points.
//!
//! Both sides carry the load per pod stable's `full` pods carried before the rollout, so the
//! comparison stays fair. Each walk moves in the order capacity requires, one pod at a time if
//! the budget is tight:
//! - forward (a step rising): stable gives up only the pods the weight the proxies already
//!   serve no longer needs; the candidate grows into what that frees; the weight rises only to
//!   what the candidate's ready pods carry.
//! - back (a promotion, once stable runs the analysed template): the candidate gives up only
//!   the pods the weight the proxies serve no longer needs; stable grows into what that frees;
//!   the weight falls only as far as stable's ready pods carry the rest.
//!
//! A weight is what `pods` carry when it is at most [`carried`]`(pods)`, which rounds a pod's
//! share up to the next basis point: a side may carry at most one basis point of all traffic
//! more than its equal share. Rounding down instead leaves walks stuck one pod short (three
//! pods: one carries 33.33 %, and the 66.67 % left needs 2.0001 pods).

use weir_proxy::split::BASIS_POINTS;

/// The share of all traffic `pods` carry at the load per pod of `full` pods carrying it all, in
/// basis points rounded up.
pub fn carried(pods: u32, full: u32) -> u16 {
    let full = u64::from(full.max(1));
    let share = (u64::from(pods) * u64::from(BASIS_POINTS)).div_ceil(full);
    u16::try_from(share.min(u64::from(BASIS_POINTS))).unwrap_or(BASIS_POINTS)
}

/// The fewest pods that carry `weight`: the inverse of [`carried`].
pub fn pods_for(weight: u16, full: u32) -> u32 {
    if weight == 0 {
        return 0;
    }
    // carried(p) >= w  <=>  p * 10000 / full > w - 1  <=>  p > (w - 1) * full / 10000.
    let below = u64::from(weight.min(BASIS_POINTS) - 1) * u64::from(full.max(1)) / u64::from(BASIS_POINTS);
    u32::try_from(below + 1).unwrap_or(u32::MAX)
}

/// Stable's pods at candidate weight `weight`: those that carry the rest, and never fewer than
/// one, so that stable keeps running (and a promotion has a pod to roll) at 100 %.
pub fn stable_for(weight: u16, full: u32) -> u32 {
    pods_for(BASIS_POINTS - weight.min(BASIS_POINTS), full).max(1)
}

/// The budget of one rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Stable's replicas when the rollout began.
    pub full: u32,
    /// Replicas the fleet may run beyond them (at least one).
    pub surge: u32,
}

impl Budget {
    /// The most replicas the fleet may run.
    pub fn fleet(self) -> u32 {
        self.full.max(1).saturating_add(self.surge)
    }
}

/// One side as observed: desired replicas, the pods it still runs, and how many are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pods {
    /// Desired replicas.
    pub desired: u32,
    /// Pods it runs (its status' replicas): more than desired while pods it gave up go.
    pub running: u32,
    /// Ready replicas.
    pub ready: u32,
}

/// What one look asks for, applied in the order the walk names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Stable's desired replicas.
    pub stable: u32,
    /// The candidate's desired replicas.
    pub candidate: u32,
    /// The candidate's weight.
    pub weight: u16,
}

/// A step rising towards `target` from `applied` (the weight status recorded), applied as
/// stable, then candidate, then weight. `served` says the proxies are seen serving `applied`;
/// `hold` (a pause) keeps the weight where it is.
pub fn forward(
    budget: Budget,
    target: u16,
    applied: u16,
    served: bool,
    stable: Pods,
    candidate: Pods,
    hold: bool,
) -> Plan {
    let full = budget.full.max(1);
    let stable_pods = if served {
        stable.desired.min(stable_for(applied, full))
    } else {
        stable.desired
    };
    // Room only where stable's pods are gone, not merely asked to go: a pod still running
    // holds its accelerator.
    let room = budget.fleet().saturating_sub(stable_pods.max(stable.running));
    // Never fewer pods than the weight applied needs, whatever the budget says: the weight
    // does not fall on the way up. Until the proxies are seen serving it, they may still
    // serve an older, higher weight (a step edited down), so the candidate keeps what it has;
    // at weight 0 it carries nothing to keep.
    let keep = if served || applied == 0 {
        pods_for(applied, full)
    } else {
        candidate.desired.max(pods_for(applied, full))
    };
    let candidate_pods = pods_for(target, full).max(1).min(room).max(keep).max(1);
    let can_carry = carried(candidate.ready.min(candidate_pods), full);
    let weight = if hold {
        applied
    } else {
        target.min(can_carry).max(applied)
    };
    Plan {
        stable: stable_pods,
        candidate: candidate_pods,
        weight,
    }
}

/// Traffic moving back to stable from `applied` towards `floor`: a promotion (stable now runs
/// the analysed template; floor 0) or a step edited down. Applied as candidate, then stable,
/// then weight. `served` says the proxies are seen serving `applied`.
pub fn back(budget: Budget, applied: u16, floor: u16, served: bool, stable: Pods, candidate: Pods) -> Plan {
    let full = budget.full.max(1);
    // The candidate keeps a pod to the end: requests an override sends it still need one
    // until the promotion closes it off.
    let candidate_pods = if served {
        candidate
            .desired
            .min(pods_for(applied, full).max(pods_for(floor, full)).max(1))
    } else {
        candidate.desired
    };
    let room = budget.fleet().saturating_sub(candidate_pods.max(candidate.running));
    let stable_pods = full.min(room).max(stable.desired);
    let stable_carries = carried(stable.ready.min(stable_pods), full);
    // The weight falls only as far as stable's ready pods carry the rest, and not below floor.
    let weight = applied.min(BASIS_POINTS - stable_carries).max(floor.min(applied));
    Plan {
        stable: stable_pods,
        candidate: candidate_pods,
        weight,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_share_rounds_up_and_pods_for_is_its_inverse() {
        assert_eq!(carried(1, 3), 3334);
        assert_eq!(carried(2, 3), 6667);
        assert_eq!(carried(3, 3), 10_000);
        assert_eq!(carried(5, 3), 10_000, "never more than all traffic");
        assert_eq!(pods_for(3334, 3), 1);
        assert_eq!(pods_for(3335, 3), 2);
        assert_eq!(pods_for(0, 3), 0);
        assert_eq!(pods_for(10_000, 3), 3);
        assert_eq!(stable_for(6667, 3), 1, "the 33.33 % left fits one pod");
        assert_eq!(stable_for(10_000, 3), 1, "stable keeps one pod at 100 %");
        for full in 1..50u32 {
            for w in 0..=10_000u16 {
                let p = pods_for(w, full);
                assert!(carried(p, full) >= w, "{full} {w}");
                assert!(p == 0 || carried(p - 1, full) < w, "{full} {w}: {p} is not the fewest");
            }
        }
    }

    /// A world of two Deployments and proxies that follow a plan one look later: desired pods
    /// are ready at the next look, the weight written is served at the next look.
    #[derive(Debug)]
    struct Fleet {
        stable: Pods,
        candidate: Pods,
        weight: u16,
        served: u16,
    }

    impl Fleet {
        /// Applies a plan in the order its walk names and checks the budget after each write,
        /// counting a side's pods as the more of those asked for and those still running.
        fn apply(&mut self, plan: Plan, budget: Budget, forward: bool) {
            let writes: [fn(&mut Fleet, Plan); 2] = if forward {
                [
                    |f, p| f.stable.desired = p.stable,
                    |f, p| f.candidate.desired = p.candidate,
                ]
            } else {
                [
                    |f, p| f.candidate.desired = p.candidate,
                    |f, p| f.stable.desired = p.stable,
                ]
            };
            for write in writes {
                write(self, plan);
                let held = |p: Pods| p.desired.max(p.running);
                assert!(
                    held(self.stable) + held(self.candidate) <= budget.fleet(),
                    "{self:?} over {budget:?}"
                );
            }
            self.weight = plan.weight;
        }

        /// Pods given up are gone, new ones run but are not ready yet.
        fn pods_move(&mut self) {
            for side in [&mut self.stable, &mut self.candidate] {
                side.running = side.desired;
                side.ready = side.ready.min(side.desired);
            }
        }

        /// The time between looks: pods come and go and are ready, the proxies take the weight.
        fn settle(&mut self) {
            self.pods_move();
            self.stable.ready = self.stable.desired;
            self.candidate.ready = self.candidate.desired;
            self.served = self.weight;
        }
    }

    proptest! {
        /// Walking a rollout's steps and then its promotion: the fleet never passes the budget,
        /// the weight never passes what the candidate's ready pods carry nor what stable's
        /// leave, the weight only rises on the way up and falls on the way back, and the walk
        /// always finishes.
        #[test]
        fn walks_keep_the_budget_and_capacity_and_always_finish(
            full in 1u32..40,
            surge in 1u32..6,
            raw_steps in proptest::collection::vec(1u16..=10_000, 1..5),
            served_late in any::<bool>(),
        ) {
            let budget = Budget { full, surge };
            let mut steps = raw_steps;
            steps.sort_unstable();
            steps.dedup();
            let mut f = Fleet {
                stable: Pods { desired: full, running: full, ready: full },
                candidate: Pods { desired: 1, running: 1, ready: 1 },
                weight: 0,
                served: 0,
            };
            let mut looks = 0;
            for target in steps.iter().copied() {
                while f.weight < target || f.stable.desired > stable_for(target, full) {
                    looks += 1;
                    prop_assert!(looks < 10_000, "stuck: {f:?} at {target}");
                    let before = f.weight;
                    let served = f.served == f.weight;
                    let plan = forward(budget, target, f.weight, served, f.stable, f.candidate, false);
                    prop_assert!(plan.weight >= before);
                    prop_assert!(plan.weight <= target);
                    prop_assert!(plan.weight <= carried(f.candidate.ready.min(plan.candidate), full));
                    // Stable gives up only what the weight served no longer needs.
                    prop_assert!(plan.stable >= stable_for(f.served, full));
                    f.apply(plan, budget, true);
                    // The proxies may take a look longer than the pods.
                    if served_late && looks % 2 == 0 {
                        f.pods_move();
                    } else {
                        f.settle();
                    }
                }
                f.settle();
            }
            while f.weight > 0 || f.stable.desired < full {
                looks += 1;
                prop_assert!(looks < 20_000, "stuck going back: {f:?}");
                let served = f.served == f.weight;
                let plan = back(budget, f.weight, 0, served, f.stable, f.candidate);
                prop_assert!(plan.weight <= f.weight);
                prop_assert!(u32::from(BASIS_POINTS - plan.weight) <= u32::from(carried(f.stable.ready.min(plan.stable), full)));
                prop_assert!(plan.candidate >= pods_for(f.served, full));
                f.apply(plan, budget, false);
                f.settle();
            }
            prop_assert_eq!(f.stable.desired, full);
        }
    }
}
