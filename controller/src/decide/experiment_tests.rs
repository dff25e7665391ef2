//! The experiment strategy's policy, with no server: starting only when every arm can serve,
//! ending on time, promoting only a judged winner, stopping a failing variant at once.

use std::collections::BTreeMap;
use std::time::SystemTime;

use proptest::prelude::*;

use super::tests::{t, workload};
use super::*;
use crate::counters::{ArmCounters, Counters, SideCounters};
use crate::experiment::verdict::Metric;
use crate::rollout::{Analysis, Experiment, ExperimentDecide, KeySpec, RouteSpec, SideSpec, Strategy, VariantSpec};
use crate::status::{Verb, WindowMark, micro_time};

fn experiment_spec(decide: ExperimentDecide) -> RolloutSpec {
    let variant = |name: &str, port: u16| VariantSpec {
        name: name.into(),
        weight: 30.0,
        side: SideSpec {
            deployment: format!("model-{name}"),
            endpoints: vec![format!("127.0.0.1:{port}")],
            ..SideSpec::default()
        },
    };
    let mut spec = crate::rollout::example(
        Strategy {
            experiment: Some(Experiment {
                variants: vec![variant("fast", 9002), variant("better", 9003)],
                primary: Metric::Score,
                guardrails: vec![Metric::ErrorRatio],
                duration: "60s".into(),
                min_users_per_variant: 50,
                confidence: 0.95,
                decide,
                stop_when_conclusive: false,
                min_effect: None,
                score_header: "x-weir-score".into(),
            }),
            ..Strategy::default()
        },
        Analysis {
            interval: "5s".into(),
            ..Analysis::default()
        },
    );
    spec.candidate = SideSpec::default();
    spec.route = RouteSpec {
        name: Some("r".into()),
        sticky: Some(KeySpec {
            header: Some("x-user-id".into()),
            cookie: None,
        }),
        ..RouteSpec::default()
    };
    spec
}

/// An arm's counters after `n` requests, `errors` of them failed, each scored around `mean`.
fn arm(n: u64, errors: u64, mean: f64, users: f64) -> ArmCounters {
    // Scores of mean `mean` and standard deviation 0.2.
    let count = n - errors;
    ArmCounters {
        side: SideCounters {
            requests: n,
            errors,
            ..SideCounters::default()
        },
        score_sum: mean * count as f64,
        score_squares: (mean * mean + 0.04) * count as f64,
        score_count: count,
        users,
        ..ArmCounters::default()
    }
}

fn reading(at: SystemTime, arms: &[(&str, ArmCounters)]) -> Result<Reading, MetricsUnavailable> {
    Ok(Reading {
        window: Some(Counters {
            arms: arms
                .iter()
                .map(|(n, a)| ((*n).to_owned(), a.clone()))
                .collect::<BTreeMap<_, _>>(),
            ..Counters::default()
        }),
        mark: WindowMark {
            at: micro_time(at),
            instances: None,
        },
        promql: Vec::new(),
        trips: Vec::new(),
    })
}

fn observe(metrics: Result<Reading, MetricsUnavailable>, request: Option<UserRequest>) -> Observation {
    Observation {
        generation: Some(1),
        stable: workload("s1", 4),
        candidate: WorkloadState::default(),
        metrics,
        request,
        variants: vec![workload("f1", 2), workload("b1", 2)],
    }
}

fn request(verb: Verb, at: SystemTime) -> Option<UserRequest> {
    Some(UserRequest {
        verb,
        at: humantime::format_rfc3339_seconds(at).to_string(),
    })
}

/// The users epoch an experiment's route carries: its start, to the microsecond.
fn epoch_of(status: &RolloutStatus) -> String {
    status.started_at.as_ref().expect("started").0.to_string()
}

fn started(spec: &RolloutSpec) -> RolloutStatus {
    let d = decide(
        spec,
        &RolloutStatus::default(),
        &observe(reading(t(0.0), &[]), None),
        t(0.0),
    );
    assert_eq!(d.status.phase, Phase::Progressing, "{}", d.status.message);
    d.status
}

/// The better arm scores 0.80 against 0.70 on 2000 requests each: a clear winner.
fn clear_winner(at: f64) -> Result<Reading, MetricsUnavailable> {
    reading(
        t(at),
        &[
            ("control", arm(2000, 2, 0.70, 400.0)),
            ("fast", arm(2000, 2, 0.70, 400.0)),
            ("better", arm(2000, 2, 0.80, 400.0)),
        ],
    )
}

/// Every arm answers 2000 requests, 4 of them failed, but `failing`, which fails `errors`.
fn one_failing(at: f64, failing: &str, errors: u64) -> Result<Reading, MetricsUnavailable> {
    let arms: Vec<(&str, ArmCounters)> = ["control", "fast", "better"]
        .into_iter()
        .map(|name| {
            let errors = if name == failing { errors } else { 4 };
            (name, arm(2000, errors, 0.70, 400.0))
        })
        .collect();
    reading(t(at), &arms)
}

#[test]
fn it_starts_only_when_every_arm_can_serve_and_then_splits_by_the_weights() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let mut obs = observe(reading(t(0.0), &[]), None);
    obs.variants[1].ready_replicas = 0;
    let d = decide(&spec, &RolloutStatus::default(), &obs, t(0.0));
    assert_eq!(d.status.phase, Phase::Idle);
    assert!(d.status.message.contains("better"), "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);

    let d = decide(
        &spec,
        &RolloutStatus::default(),
        &observe(reading(t(0.0), &[]), None),
        t(0.0),
    );
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(
        d.actions,
        vec![Action::SetTraffic(
            TrafficIntent::experiment(vec![4000, 3000, 3000]).counting_users_since(Some(epoch_of(&d.status)))
        )]
    );
    let experiment = d.status.experiment.expect("experiment status");
    assert_eq!(experiment.revisions, ["s1", "f1", "b1"]);
    assert!(d.events.iter().any(|e| e.reason == reasons::EXPERIMENT_STARTED));
}

#[test]
fn a_manual_experiment_reports_its_winner_and_promotes_it_only_when_asked() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    // Before the duration: the winner leads, nothing ends.
    let d = decide(&spec, &status, &observe(clear_winner(30.0), None), t(30.0));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert!(d.status.message.contains("better leads"), "{}", d.status.message);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::PromoteVariant { .. })));
    // At the duration: it ends, all traffic on control, nothing promoted.
    let d = decide(&spec, &d.status, &observe(clear_winner(61.0), None), t(61.0));
    assert_eq!(d.status.phase, Phase::Succeeded, "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
    assert_eq!(
        d.status.experiment.as_ref().and_then(|e| e.winner.as_deref()),
        Some("better")
    );
    // A person's promote: the winner's judged revision goes into stable.
    let d = decide(
        &spec,
        &d.status,
        &observe(clear_winner(70.0), request(Verb::Promote, t(70.0))),
        t(70.0),
    );
    assert_eq!(d.status.phase, Phase::Promoting, "{}", d.status.message);
    assert!(d.actions.contains(&Action::PromoteVariant {
        deployment: "model-better".into(),
        revision: "b1".into(),
    }));
    // Stable rolled out with it: control (now the winner) takes everything.
    let mut obs = observe(clear_winner(80.0), None);
    obs.stable.template_hash = "b1".into();
    let d = decide(&spec, &d.status, &obs, t(80.0));
    assert_eq!(d.status.phase, Phase::Succeeded);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
    // Later looks leave it done: stable running the winner is no new template to compare.
    let later = decide(&spec, &d.status, &obs, t(200.0));
    assert_eq!(later.status.phase, Phase::Succeeded, "{}", later.status.message);
    assert_eq!(later.status.experiment, d.status.experiment);
    assert!(later.actions.is_empty(), "{:?}", later.actions);
}

#[test]
fn promote_winner_promotes_at_the_end_and_refuses_a_revision_nobody_judged() {
    let spec = experiment_spec(ExperimentDecide::PromoteWinner);
    let status = started(&spec);
    let d = decide(&spec, &status, &observe(clear_winner(61.0), None), t(61.0));
    assert_eq!(d.status.phase, Phase::Promoting, "{}", d.status.message);
    // The winner's Deployment gets a new template before stable took the judged one.
    let mut obs = observe(clear_winner(62.0), None);
    obs.variants[1].template_hash = "b2".into();
    let d = decide(&spec, &d.status, &obs, t(62.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

#[test]
fn a_variant_failing_more_than_control_ends_the_experiment_at_once() {
    let spec = experiment_spec(ExperimentDecide::PromoteWinner);
    let status = started(&spec);
    let d = decide(&spec, &status, &observe(one_failing(10.0, "fast", 300), None), t(10.0));
    assert_eq!(d.status.phase, Phase::Aborted);
    assert!(
        d.status.message.contains("variant fast fails more often"),
        "{}",
        d.status.message
    );
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
    let stopped = d.status;
    assert_eq!(
        stopped.experiment.as_ref().and_then(|x| x.stopped_by.as_deref()),
        Some("fast")
    );

    // A new template on another arm does not send fast's users back to the version that
    // failed them: the experiment stays stopped, everything on control.
    let mut obs = observe(clear_winner(40.0), None);
    obs.variants[1].template_hash = "b2".into();
    obs.stable.template_hash = "s2".into();
    let d = decide(&spec, &stopped, &obs, t(40.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::SetTraffic(i) if i.arms.as_ref().is_some_and(|w| w[1] > 0))),
        "{:?}",
        d.actions
    );

    // A new template on fast starts a new experiment, as does a person's retry.
    obs.variants[0].template_hash = "f2".into();
    let d = decide(&spec, &stopped, &obs, t(41.0));
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
    assert!(d.status.message.contains("new revisions"), "{}", d.status.message);
    let retry = observe(clear_winner(42.0), request(Verb::Retry, t(42.0)));
    let d = decide(&spec, &stopped, &retry, t(42.0));
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);

    // Deleted, then recreated from the same manifest: the same version, still out.
    let mut obs = observe(clear_winner(43.0), None);
    obs.variants[0] = WorkloadState::default();
    let d = decide(&spec, &stopped, &obs, t(43.0));
    assert_eq!(d.status.phase, Phase::Aborted, "deleted: {}", d.status.message);
    let d = decide(&spec, &stopped, &observe(clear_winner(44.0), None), t(44.0));
    assert_eq!(d.status.phase, Phase::Aborted, "recreated: {}", d.status.message);
}

/// The failed arm is found by its Deployment, wherever the spec's arms have moved.
#[test]
fn an_arm_that_failed_stays_out_when_another_arm_is_removed_from_the_spec() {
    let spec = experiment_spec(ExperimentDecide::PromoteWinner);
    let status = started(&spec);
    let stopped = decide(
        &spec,
        &status,
        &observe(one_failing(10.0, "better", 300), None),
        t(10.0),
    )
    .status;
    assert_eq!(
        stopped.experiment.as_ref().and_then(|x| x.stopped_by.as_deref()),
        Some("better")
    );

    // Without fast, better is the first variant: it still runs the revision that failed.
    let mut without_fast = spec.clone();
    if let Some(x) = without_fast.strategy.experiment.as_mut() {
        x.variants.remove(0);
        x.variants[0].weight = 60.0;
    }
    let mut obs = observe(clear_winner(40.0), None);
    obs.variants.remove(0);
    let d = decide(&without_fast, &stopped, &obs, t(40.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);

    // Without better, a new experiment runs without it.
    let mut without_better = spec.clone();
    if let Some(x) = without_better.strategy.experiment.as_mut() {
        x.variants.remove(1);
    }
    let mut obs = observe(clear_winner(41.0), None);
    obs.variants.remove(1);
    let d = decide(&without_better, &stopped, &obs, t(41.0));
    assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
}

/// Control losing its pods stops the experiment but blames no version.
#[test]
fn control_without_pods_stops_the_experiment_and_is_no_arms_fault() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let mut obs = observe(clear_winner(10.0), None);
    obs.stable.ready_replicas = 0;
    let d = decide(&spec, &status, &obs, t(10.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(d.status.experiment.as_ref().and_then(|x| x.stopped_by.as_deref()), None);
}

/// An arm that loses its pods stops the experiment, and stays out until its template changes.
#[test]
fn an_arm_without_pods_is_not_brought_back_by_another_arms_change() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let mut obs = observe(clear_winner(10.0), None);
    obs.variants[1].ready_replicas = 0;
    let d = decide(&spec, &status, &obs, t(10.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(
        d.status.experiment.as_ref().and_then(|x| x.stopped_by.as_deref()),
        Some("better")
    );
    obs.variants[0].template_hash = "f2".into();
    let again = decide(&spec, &d.status, &obs, t(40.0));
    assert_eq!(again.status.phase, Phase::Aborted, "{}", again.status.message);
    obs.variants[1].template_hash = "b2".into();
    obs.variants[1].ready_replicas = 2;
    let again = decide(&spec, &d.status, &obs, t(41.0));
    assert_eq!(again.status.phase, Phase::Idle, "{}", again.status.message);
}

#[test]
fn no_score_on_any_response_stays_inconclusive_with_the_reason_and_promotes_nothing() {
    let spec = experiment_spec(ExperimentDecide::PromoteWinner);
    let status = started(&spec);
    let unscored = |at: f64| {
        let mut a = arm(2000, 0, 0.0, 400.0);
        a.score_count = 0;
        a.score_sum = 0.0;
        a.score_squares = 0.0;
        reading(t(at), &[("control", a.clone()), ("fast", a.clone()), ("better", a)])
    };
    let d = decide(&spec, &status, &observe(unscored(30.0), None), t(30.0));
    assert!(
        d.status.message.contains("carried a score"),
        "the reason names the missing score: {}",
        d.status.message
    );
    let d = decide(&spec, &d.status, &observe(unscored(61.0), None), t(61.0));
    assert_eq!(d.status.phase, Phase::Succeeded);
    assert!(d.status.message.contains("inconclusive"), "{}", d.status.message);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::PromoteVariant { .. })));
}

#[test]
fn a_new_template_on_any_arm_starts_the_experiment_again() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let mut obs = observe(clear_winner(20.0), None);
    obs.variants[0].template_hash = "f2".into();
    let d = decide(&spec, &status, &obs, t(20.0));
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(d.status.experiment, None);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);

    // The new experiment counts its own users: its route carries a new epoch.
    let again = decide(&spec, &d.status, &obs, t(21.0));
    assert_eq!(again.status.phase, Phase::Progressing, "{}", again.status.message);
    assert_ne!(epoch_of(&status), epoch_of(&again.status));
    assert_eq!(
        again.actions,
        vec![Action::SetTraffic(
            TrafficIntent::experiment(vec![4000, 3000, 3000]).counting_users_since(Some(epoch_of(&again.status)))
        )]
    );
}

#[test]
fn abort_puts_everything_on_control() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let d = decide(
        &spec,
        &status,
        &observe(clear_winner(5.0), request(Verb::Abort, t(5.0))),
        t(5.0),
    );
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

#[test]
fn while_promoting_only_control_and_the_winner_keep_traffic_and_abort_still_works() {
    let spec = experiment_spec(ExperimentDecide::PromoteWinner);
    let status = started(&spec);
    let d = decide(&spec, &status, &observe(clear_winner(61.0), None), t(61.0));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(
        d.actions.first(),
        Some(&Action::SetTraffic(
            TrafficIntent::experiment(vec![7000, 0, 3000]).counting_users_since(Some(epoch_of(&status)))
        )),
        "the loser's share goes to control"
    );
    let promoting = d.status.clone();
    // Stable rolling to the winner, no pod ready yet, and the winner losing its pods: the
    // winner's users go to control, and the promotion waits for stable.
    let mut obs = observe(clear_winner(62.0), None);
    obs.stable.template_hash = "b1".into();
    obs.stable.ready_replicas = 0;
    obs.stable.rolled_out = false;
    obs.variants[1].ready_replicas = 0;
    let waiting = decide(&spec, &promoting, &obs, t(62.0));
    assert_eq!(waiting.status.phase, Phase::Promoting, "{}", waiting.status.message);
    assert_eq!(
        waiting.actions,
        vec![Action::SetTraffic(TrafficIntent::control_only(3))]
    );
    // Abort once stable runs the judged template: refused, as for a canary.
    obs.request = request(Verb::Abort, t(62.5));
    let refused = decide(&spec, &promoting, &obs, t(62.5));
    assert_eq!(refused.status.phase, Phase::Promoting);
    assert!(
        refused.status.message.contains("cannot abort"),
        "{}",
        refused.status.message
    );
    // Abort before the copy: all traffic on control.
    let d = decide(
        &spec,
        &d.status,
        &observe(clear_winner(63.0), request(Verb::Abort, t(63.0))),
        t(63.0),
    );
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

#[test]
fn the_experiment_ends_on_time_even_when_the_metrics_cannot_be_read() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let down = || Err(MetricsUnavailable::NoData("no proxy answered".into()));
    let d = decide(&spec, &status, &observe(down(), None), t(30.0));
    assert_eq!(d.status.phase, Phase::Progressing, "holds while there is time");
    let d = decide(&spec, &d.status, &observe(down(), None), t(61.0));
    assert_eq!(d.status.phase, Phase::Succeeded, "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

#[test]
fn a_failing_variant_is_stopped_even_when_errors_are_not_among_the_metrics() {
    let mut spec = experiment_spec(ExperimentDecide::Manual);
    if let Some(e) = spec.strategy.experiment.as_mut() {
        e.guardrails = vec![Metric::P99];
    }
    let status = started(&spec);
    let d = decide(&spec, &status, &observe(one_failing(10.0, "fast", 600), None), t(10.0));
    assert_eq!(d.status.phase, Phase::Aborted, "{}", d.status.message);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

#[test]
fn a_changed_plan_or_weight_starts_the_experiment_again() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    for edit in [
        (|e: &mut Experiment| e.primary = Metric::P99) as fn(&mut Experiment),
        |e| e.confidence = 0.8,
        |e| e.variants[0].weight = 20.0,
        |e| e.variants.swap(0, 1),
    ] {
        let mut edited = spec.clone();
        edit(edited.strategy.experiment.as_mut().expect("an experiment"));
        let mut obs = observe(clear_winner(20.0), None);
        if edited
            .strategy
            .experiment
            .as_ref()
            .is_some_and(|e| e.variants[0].name == "better")
        {
            obs.variants.swap(0, 1);
        }
        let d = decide(&edited, &status, &obs, t(20.0));
        assert_eq!(d.status.phase, Phase::Idle, "{}", d.status.message);
        assert_eq!(d.status.experiment, None);
    }
}

#[test]
fn an_experiment_whose_spec_turns_invalid_holds_and_still_obeys_abort() {
    let spec = experiment_spec(ExperimentDecide::Manual);
    let status = started(&spec);
    let mut broken = spec.clone();
    if let Some(e) = broken.strategy.experiment.as_mut() {
        e.duration = "soon".into();
    }
    let d = decide(&broken, &status, &observe(clear_winner(5.0), None), t(5.0));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let d = decide(
        &broken,
        &status,
        &observe(clear_winner(6.0), request(Verb::Abort, t(6.0))),
        t(6.0),
    );
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(d.actions, vec![Action::SetTraffic(TrafficIntent::control_only(3))]);
}

proptest! {
    /// Whatever the data and the requests, a variant's template is promoted only when the
    /// verdict recorded in status named it the winner, and every end puts traffic on control
    /// or keeps the judged split while stable takes the winner.
    #[test]
    fn only_a_judged_winner_is_ever_promoted(
        looks in proptest::collection::vec((0u64..3000, 0u64..60, 0.5f64..0.9, 0.5f64..0.9, 0.5f64..0.9, 0u8..8), 1..25),
        promote_winner in any::<bool>(),
    ) {
        let decide_mode = if promote_winner { ExperimentDecide::PromoteWinner } else { ExperimentDecide::Manual };
        let spec = experiment_spec(decide_mode);
        let mut status = started(&spec);
        let (mut total, mut at) = (0u64, 0.0);
        for (n, errors, c, f, b, verb) in looks {
            total += n;
            at += 7.0;
            let errors = errors.min(total);
            let data = reading(t(at), &[
                ("control", arm(total, errors, c, total as f64 / 5.0)),
                ("fast", arm(total, errors, f, total as f64 / 5.0)),
                ("better", arm(total, errors, b, total as f64 / 5.0)),
            ]);
            let verb = match verb { 0 => request(Verb::Promote, t(at)), 1 => request(Verb::Abort, t(at)), _ => None };
            let d = decide(&spec, &status, &observe(data, verb), t(at));
            for action in &d.actions {
                if let Action::PromoteVariant { deployment, revision } = action {
                    let experiment = d.status.experiment.as_ref().expect("an experiment");
                    let winner = experiment.winner.as_deref().expect("a recorded winner");
                    prop_assert_eq!(deployment, &format!("model-{winner}"));
                    let named = matches!(
                        experiment.verdict.as_ref().map(|v| &v.outcome),
                        Some(crate::experiment::verdict::Outcome::Winner { arm }) if arm == winner
                    );
                    prop_assert!(named, "promoted {} without a verdict naming it", winner);
                    prop_assert!(revision == "f1" || revision == "b1");
                }
            }
            if d.status.phase == Phase::Aborted && status.phase != Phase::Aborted {
                prop_assert_eq!(d.actions.first(), Some(&Action::SetTraffic(TrafficIntent::control_only(3))));
            }
            status = d.status;
        }
    }
}
