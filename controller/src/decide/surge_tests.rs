//! Rollouts under `maxSurge` through `decide`, in the world of [`super::tests`]: the fleet stays
//! within budget at every write of every look, the weight never passes what the candidate's
//! ready pods carry, and every way out gives stable its pods back before the candidate loses
//! its own.

use proptest::prelude::*;

use super::surge::{carried, stable_for};
use super::tests::{World, condition, spec, tick};
use super::*;
use crate::status::PromotionStage;

const FULL: u32 = 10;

fn surge_spec(surge: u32) -> RolloutSpec {
    let mut s = spec();
    s.scaling.max_surge = Some(surge);
    s
}

/// Carries out one decision a write at a time, as the reconcile loop does, and checks the
/// budget after each write; an abort (weight to 0 first) may raise stable before the
/// candidate goes. Returns false if a write was refused.
fn apply_checked(world: &mut World, d: &Decision, budget: u32) -> bool {
    let closing = d.actions.first()
        == Some(&Action::SetTraffic(TrafficIntent::none(
            world.traffic.candidate_revision.clone(),
        )))
        || d.actions
            .iter()
            .any(|a| matches!(a, Action::SetTraffic(i) if i.weight == 0));
    for action in &d.actions {
        if let Action::SetTraffic(intent) = action
            && intent.weight > world.traffic.weight
        {
            let can_carry = carried(world.candidate.ready_replicas.min(world.candidate.replicas), FULL);
            assert!(
                intent.weight <= can_carry,
                "weight {} set with {} ready candidate pods, which carry {can_carry}",
                intent.weight,
                world.candidate.ready_replicas
            );
        }
        if !world.apply(std::slice::from_ref(action)) {
            return false;
        }
        let held = |w: &WorkloadState| w.replicas.max(w.pods);
        let fleet = held(&world.stable) + held(&world.candidate);
        assert!(
            fleet <= budget || closing,
            "fleet {fleet} over {budget} after {action:?} in {:?}",
            d.actions
        );
        // Stable always has the pods for the traffic it gets.
        let weight = world.traffic.weight;
        assert!(
            world.stable.replicas >= stable_for(weight, FULL) || closing,
            "stable at {} for weight {weight}",
            world.stable.replicas
        );
    }
    true
}

/// Runs a rollout second by second with maxSurge `surge`; returns every decision, the end
/// status and world. `errors` is the candidate's error ratio.
fn drive_surge(spec: &RolloutSpec, surge: u32, errors: f64, slow: bool) -> (Vec<Decision>, RolloutStatus, World) {
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    world.slow_pods = slow;
    let mut decisions = Vec::new();
    for sec in 0..3000u32 {
        world.serve(1000, 0.01, errors);
        if status.phase == Phase::Promoting {
            world.stable.rolled_out = true;
        }
        if slow {
            // Pods given up go within a second; new ones are ready every third second.
            for side in [&mut world.stable, &mut world.candidate] {
                side.pods = side.replicas;
                side.ready_replicas = side.ready_replicas.min(side.replicas);
                if sec % 3 == 0 {
                    side.ready_replicas = side.replicas;
                }
            }
        }
        let d = decide(spec, &status, &world.observe(&status, tests_t(sec)), tests_t(sec));
        if apply_checked(&mut world, &d, FULL + surge) {
            status = d.status.clone();
        }
        decisions.push(d);
        if status.phase.is_terminal() {
            break;
        }
    }
    (decisions, status, world)
}

fn tests_t(sec: u32) -> std::time::SystemTime {
    super::tests::t(f64::from(sec))
}

#[test]
fn a_healthy_candidate_walks_every_step_within_one_extra_pod_and_stable_gets_all_back() {
    let (decisions, status, world) = drive_surge(&surge_spec(1), 1, 0.01, false);
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    assert_eq!((world.stable.replicas, world.candidate.replicas), (FULL, 0));
    assert_eq!(status.max_surge, None, "nothing left to restore");
    let mut weights: Vec<u16> = decisions
        .iter()
        .flat_map(|d| &d.actions)
        .filter_map(|a| match a {
            Action::SetTraffic(i) => Some(i.weight),
            _ => None,
        })
        .collect();
    weights.dedup();
    // 5 % and 25 % fit the surge whole; 50 % needs stable to give up pods one by one, and
    // the promotion walks back the same way.
    assert!(weights.starts_with(&[500, 1000, 2000, 2500]), "{weights:?}");
    assert!(weights.contains(&5000) && weights.ends_with(&[0]), "{weights:?}");
    let least_stable = |ds: &[Decision]| {
        ds.iter()
            .flat_map(|d| &d.actions)
            .filter_map(|a| match a {
                Action::ScaleStable(n) => Some(*n),
                _ => None,
            })
            .min()
    };
    let promoting = decisions
        .iter()
        .position(|d| d.events.iter().any(|e| e.reason == reasons::ROLLOUT_PROMOTING))
        .expect("a promotion");
    assert_eq!(
        least_stable(&decisions[..promoting]),
        Some(5),
        "stable carried 50 % on 5 of its 10 pods"
    );
    // Stable's pods are replaced only once they carry nothing: the candidate first takes all
    // traffic, within the budget (stable down to its last pod).
    assert_eq!(least_stable(&decisions[promoting..]), Some(1));
    for d in &decisions {
        if d.actions.iter().any(|a| matches!(a, Action::PromoteTemplate { .. })) {
            assert_eq!(d.status.candidate_weight, 10_000, "{:?}", d.actions);
        }
    }
    let growing = decisions
        .iter()
        .any(|d| d.status.promotion == Some(PromotionStage::GrowingStable));
    assert!(growing, "the promotion walked traffic back as stable grew");
}

#[test]
fn stable_is_scaled_down_only_after_status_records_the_surge() {
    let mut world = World::new();
    let d = tick(&surge_spec(1), &RolloutStatus::default(), &mut world, 0.0);
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.max_surge, Some(1));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::ScaleStable(_))),
        "{:?}",
        d.actions
    );
}

#[test]
fn an_abort_mid_walk_closes_the_candidate_then_gives_stable_its_pods_back_first() {
    // Healthy until stable has given up pods, then failing.
    let s = surge_spec(1);
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    let mut sec = 0;
    while world.stable.replicas == FULL || status.candidate_weight < 3000 {
        world.serve(1000, 0.01, 0.01);
        status = tick(&s, &status, &mut world, f64::from(sec)).status;
        sec += 1;
        assert!(sec < 2000, "{}", status.message);
    }
    let mut abort = None;
    for _ in 0..600 {
        world.serve(1000, 0.01, 0.5);
        let d = tick(&s, &status, &mut world, f64::from(sec));
        sec += 1;
        status = d.status.clone();
        if status.phase == Phase::Aborted {
            abort = Some(d);
            break;
        }
    }
    let abort = abort.expect("a failing candidate is aborted");
    assert_eq!(
        abort.actions,
        vec![
            Action::SetTraffic(TrafficIntent::none(Some("b".into()))),
            Action::ScaleStable(FULL),
            Action::ScaleCandidate(0),
        ]
    );
    assert_eq!(abort.status.max_surge, None);
    // Parked afterwards: stable's replicas are no longer weir's to set.
    let d = tick(&s, &status, &mut world, f64::from(sec + 40));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::ScaleStable(_))),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_new_candidate_mid_walk_gives_stable_its_pods_back() {
    let s = surge_spec(1);
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    let mut sec = 0;
    while world.stable.replicas == FULL {
        world.serve(1000, 0.01, 0.01);
        status = tick(&s, &status, &mut world, f64::from(sec)).status;
        sec += 1;
        assert!(sec < 2000, "{}", status.message);
    }
    world.candidate.template_hash = "c".into();
    let d = tick(&s, &status, &mut world, f64::from(sec));
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(
        d.actions,
        vec![
            Action::SetTraffic(TrafficIntent::none(Some("c".into()))),
            Action::ScaleStable(FULL)
        ]
    );
    assert_eq!(world.stable.replicas, FULL);
}

#[test]
fn an_autoscaler_on_stable_refuses_the_surge_and_one_appearing_mid_rollout_aborts() {
    let s = surge_spec(1);
    let mut world = World::new();
    world.stable.autoscaler = Some("model-hpa".into());
    let d = tick(&s, &RolloutStatus::default(), &mut world, 0.0);
    assert_eq!(d.status.phase, Phase::Idle);
    let workloads = condition(&d.status, "Workloads");
    assert_eq!(
        (workloads.status.as_str(), workloads.reason.as_str()),
        ("False", reasons::SURGE_WITH_AUTOSCALER)
    );
    assert!(
        workloads.message.contains("HorizontalPodAutoscaler model-hpa"),
        "{}",
        workloads.message
    );

    let mut world = World::new();
    let mut status = tick(&s, &RolloutStatus::default(), &mut world, 0.0).status;
    status = tick(&s, &status, &mut world, 1.0).status;
    world.stable.autoscaler = Some("model-hpa".into());
    let d = tick(&s, &status, &mut world, 2.0);
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert!(d.status.message.contains("model-hpa"), "{}", d.status.message);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any surge, slow pods or not, a candidate healthy or failing: every write keeps the
    /// budget (but an abort's, which raises stable first), the weight never passes what the
    /// candidate's ready pods carry, and the rollout ends with stable at its full count.
    #[test]
    fn rollouts_under_any_surge_keep_the_budget_and_end_with_stable_whole(
        surge in 1u32..5,
        slow in any::<bool>(),
        bad in any::<bool>(),
    ) {
        let errors = if bad { 0.3 } else { 0.01 };
        let (_, status, world) = drive_surge(&surge_spec(surge), surge, errors, slow);
        prop_assert!(status.phase.is_terminal(), "{}", status.message);
        prop_assert_eq!(status.phase, if bad { Phase::Aborted } else { Phase::Succeeded });
        prop_assert_eq!(world.stable.replicas, FULL);
        prop_assert_eq!(world.candidate.replicas, 0);
        prop_assert_eq!(world.traffic.weight, 0);
    }
}

/// Pods given up take five looks to go (a model server draining its streams): the candidate
/// grows only into room stable's running pods have left, never into room merely asked for.
#[test]
fn the_candidate_grows_only_where_stable_pods_are_gone_not_merely_asked_to_go() {
    let s = surge_spec(1);
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    world.stable = super::tests::workload("a", 3);
    world.slow_pods = true;
    let mut most = 0;
    for sec in 0..600u32 {
        world.serve(1000, 0.01, 0.01);
        if status.phase == Phase::Promoting {
            world.stable.rolled_out = true;
        }
        if sec % 5 == 0 {
            for side in [&mut world.stable, &mut world.candidate] {
                side.pods = side.replicas;
                side.ready_replicas = side.replicas;
            }
        }
        let d = decide(&s, &status, &world.observe(&status, tests_t(sec)), tests_t(sec));
        assert!(world.apply(&d.actions));
        status = d.status.clone();
        let held = |w: &WorkloadState| w.replicas.max(w.pods);
        let fleet = held(&world.stable) + held(&world.candidate);
        assert!(
            fleet <= 4,
            "{sec}: {fleet} pods after {:?}: {}",
            d.actions,
            status.message
        );
        most = most.max(fleet);
        if status.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(status.phase, Phase::Succeeded, "{}", status.message);
    assert_eq!(most, 4, "the surge was used");
}

/// Runs a healthy rollout under maxSurge 1 until `until` holds; returns its status, world and
/// the next second.
fn run_until(s: &RolloutSpec, until: impl Fn(&RolloutStatus, &World) -> bool) -> (RolloutStatus, World, u32) {
    let mut status = RolloutStatus::default();
    let mut world = World::new();
    let mut sec = 0;
    while !until(&status, &world) {
        world.serve(1000, 0.01, 0.01);
        if status.phase == Phase::Promoting {
            world.stable.rolled_out = true;
        }
        status = tick(s, &status, &mut world, f64::from(sec)).status;
        sec += 1;
        assert!(sec < 3000, "never got there: {}", status.message);
    }
    (status, world, sec)
}

#[test]
fn another_manager_scaling_stable_mid_walk_aborts_but_a_write_whose_record_a_crash_lost_does_not() {
    let s = surge_spec(1);
    let (status, world, sec) = run_until(&s, |_, w| w.stable.replicas == FULL - 2);
    assert_eq!(status.stable_scaled_to, Some(FULL - 2));

    // GitOps self-heal puts stable back to its manifest's count.
    let mut reverted = clone_world(&world);
    reverted.stable.replicas = FULL;
    reverted.stable.pods = FULL;
    let d = tick(&s, &status, &mut reverted, f64::from(sec));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert!(
        d.status.message.contains("scaled to 10 replicas by someone else"),
        "{}",
        d.status.message
    );
    assert_eq!(
        d.actions,
        vec![
            Action::SetTraffic(TrafficIntent::none(Some("b".into()))),
            Action::ScaleStable(FULL),
            Action::ScaleCandidate(0),
        ]
    );

    // weir's own next write landed, but the controller died before recording it: that is no
    // other manager, and the window starts again (stable's load per pod changed).
    let mut crashed = clone_world(&world);
    let mut walked = status.clone();
    let mut at = sec;
    loop {
        crashed.serve(1000, 0.01, 0.01);
        let d = decide(&s, &walked, &crashed.observe(&walked, tests_t(at)), tests_t(at));
        at += 1;
        let shrinks = d
            .actions
            .iter()
            .any(|a| matches!(a, Action::ScaleStable(n) if *n < crashed.stable.replicas));
        assert!(crashed.apply(&d.actions));
        if shrinks {
            break;
        }
        walked = d.status;
        assert!(at < sec + 600, "no further shrink: {}", walked.message);
    }
    let d = decide(&s, &walked, &crashed.observe(&walked, tests_t(at)), tests_t(at));
    assert_eq!(d.status.phase, Phase::Progressing, "{}", d.status.message);
    assert_eq!(d.status.stable_scaled_to, Some(crashed.stable.replicas));
    assert_eq!(
        d.status.step_started_at,
        Some(micro_time(tests_t(at))),
        "the window starts again"
    );
}

#[test]
fn the_candidate_keeps_its_last_pod_until_the_proxies_are_seen_sending_it_nothing() {
    let s = surge_spec(1);
    let (status, mut world, sec) = run_until(&s, |st, w| {
        st.promotion == Some(PromotionStage::GrowingStable) && w.traffic.weight == 0
    });
    // A proxy still serves the last weight it had.
    world.served_weight = Some(1000);
    let d = tick(&s, &status, &mut world, f64::from(sec));
    assert_eq!(d.status.phase, Phase::Promoting, "{}", d.status.message);
    assert!(world.candidate.replicas >= 1, "{:?}", d.actions);
    world.served_weight = None;
    let d = tick(&s, &d.status, &mut world, f64::from(sec + 1));
    assert_eq!(d.status.phase, Phase::Succeeded, "{}", d.status.message);
    assert_eq!(world.candidate.replicas, 0);
}

fn clone_world(world: &World) -> World {
    let mut copy = World::new();
    copy.stable = world.stable.clone();
    copy.candidate = world.candidate.clone();
    copy.traffic = world.traffic.clone();
    copy.counters = world.counters.clone();
    copy
}

#[test]
fn a_promotion_whose_spec_turns_invalid_still_closes_a_new_candidate_and_gives_stable_its_pods_back() {
    let s = surge_spec(1);
    let (status, mut world, sec) = run_until(&s, |st, _| st.promotion == Some(PromotionStage::GrowingStable));
    let mut invalid = s.clone();
    invalid.scaling.max_surge = Some(0);
    // A GitOps commit with a bad spec and a new candidate image at once.
    world.candidate.template_hash = "c".into();
    let d = tick(&invalid, &status, &mut world, f64::from(sec));
    assert_eq!(
        d.actions,
        vec![
            Action::SetTraffic(TrafficIntent::none(Some("c".into()))),
            Action::ScaleStable(FULL)
        ]
    );
    assert_eq!(d.status.promotion, Some(PromotionStage::StableOnly));
    assert!(d.status.message.contains("invalid spec"), "{}", d.status.message);
    // Before the copy, the analysed template is gone: the rollout starts again once valid.
    let (status, mut world, sec) = run_until(&s, |st, _| st.promotion == Some(PromotionStage::FillingCandidate));
    world.candidate.template_hash = "c".into();
    let d = tick(&invalid, &status, &mut world, f64::from(sec));
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
    assert_eq!(world.traffic.weight, 0);
    assert_eq!(world.stable.replicas, FULL);
}
