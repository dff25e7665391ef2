//! Tests of [`super`]: examples and properties, no server.

use super::*;
use proptest::prelude::*;

const BUCKETS: [f64; 5] = [0.1, 0.2, 0.5, 1.0, f64::INFINITY];

fn scores(count: f64, mean: f64, sd: f64) -> Moments {
    Moments {
        count,
        sum: count * mean,
        squares: (count - 1.0) * sd * sd + count * mean * mean,
    }
}

fn arm(name: &str, count: f64, mean_score: f64) -> ArmSummary {
    let latency = Histogram {
        bounds: BUCKETS.to_vec(),
        cumulative: vec![count as u64; 5],
        sum: 0.05 * count,
    };
    ArmSummary {
        name: name.to_string(),
        users: count,
        requests: count,
        errors: count / 100.0,
        latency: latency.clone(),
        first_byte: latency.clone(),
        stream_gap: latency,
        score: scores(count, mean_score, 0.2),
    }
}

fn plan(primary: Metric) -> Plan {
    Plan {
        primary,
        guardrails: vec![Metric::ErrorRatio, Metric::P99],
        confidence: 0.95,
        min_users_per_variant: 1000.0,
        min_effect: None,
    }
}

fn reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Inconclusive { reason, .. } => reason,
        Outcome::Winner { arm } => panic!("unexpected winner {arm}"),
    }
}

#[test]
fn clear_winner_among_three_arms() {
    let arms = [arm("stable", 5000.0, 0.7), arm("a", 5000.0, 0.7), arm("b", 5000.0, 0.8)];
    let verdict = verdict(&plan(Metric::Score), &arms);
    assert_eq!(verdict.outcome, Outcome::Winner { arm: "b".to_string() });
    assert_eq!(verdict.comparisons.len(), 2 * 3, "two variants, three metrics");
    let b_score = &verdict.comparisons[3];
    assert_eq!((b_score.arm.as_str(), b_score.metric), ("b", Metric::Score));
    assert_eq!(b_score.significance, Significance::Better);
}

/// A few heavy users whose answers score alike are a few observations, not thousands: the
/// same numbers that name a winner when every request is its own user name none here.
#[test]
fn many_requests_from_few_users_count_as_few_observations() {
    let mut few = plan(Metric::Score);
    few.min_users_per_variant = 10.0;
    let independent = [arm("stable", 20_000.0, 0.70), arm("b", 20_000.0, 0.72)];
    assert_eq!(
        verdict(&few, &independent).outcome,
        Outcome::Winner { arm: "b".to_string() }
    );
    let clustered = independent.clone().map(|mut a| {
        a.users = 20.0;
        a
    });
    let judged = verdict(&few, &clustered);
    assert!(
        matches!(judged.outcome, Outcome::Inconclusive { .. }),
        "{:?}",
        judged.outcome
    );
}

#[test]
fn two_variants_beating_control_but_not_each_other_is_inconclusive() {
    let arms = [
        arm("stable", 5000.0, 0.7),
        arm("a", 5000.0, 0.8),
        arm("b", 5000.0, 0.801),
    ];
    let verdict = verdict(&plan(Metric::Score), &arms);
    let Outcome::Inconclusive { reason, samples_needed } = &verdict.outcome else {
        panic!("{verdict:?}")
    };
    assert_eq!(reason, "the mean score does not yet separate arm b from arm a");
    assert!(
        samples_needed.is_some_and(|needed| needed > 5000.0),
        "{samples_needed:?}"
    );
    assert!(
        verdict
            .comparisons
            .iter()
            .filter(|c| c.metric == Metric::Score)
            .all(|c| c.significance == Significance::Better)
    );
}

#[test]
fn control_wins_when_every_variant_is_worse() {
    let arms = [arm("stable", 5000.0, 0.8), arm("a", 5000.0, 0.7), arm("b", 5000.0, 0.7)];
    assert_eq!(
        verdict(&plan(Metric::Score), &arms).outcome,
        Outcome::Winner {
            arm: "stable".to_string()
        }
    );
}

#[test]
fn an_arm_without_scores_is_named() {
    let mut arms = [arm("stable", 5000.0, 0.7), arm("a", 5000.0, 0.8)];
    arms[1].score = Moments::default();
    let verdict = verdict(&plan(Metric::Score), &arms);
    assert_eq!(reason(&verdict.outcome), "no response of arm a carried a score");
    assert_eq!(verdict.comparisons[0].interval, None);
}

#[test]
fn too_few_users_are_named_with_the_sample_still_needed() {
    let mut arms = [arm("stable", 5000.0, 0.7), arm("a", 5000.0, 0.701)];
    arms[0].users = 400.0;
    let verdict = verdict(&plan(Metric::Score), &arms);
    let Outcome::Inconclusive { reason, samples_needed } = &verdict.outcome else {
        panic!("{verdict:?}")
    };
    assert_eq!(reason, "arm stable has 400 users of the 1000 each arm needs");
    assert!(
        samples_needed.is_some(),
        "the leader a is not yet separated from stable"
    );
}

#[test]
fn min_effect_sizes_the_sample_still_needed() {
    let arms = [arm("stable", 2000.0, 0.7), arm("a", 2000.0, 0.7)];
    let plan = Plan {
        min_effect: Some(0.02),
        ..plan(Metric::Score)
    };
    let Outcome::Inconclusive { samples_needed, .. } = verdict(&plan, &arms).outcome else {
        panic!()
    };
    let variance = arms[0].score.variance().expect("data");
    let expected = confidence::samples_for_half_width(variance, variance, 0.7 * 0.02, 0.05);
    assert_eq!(samples_needed, expected);
    assert!(expected.is_some_and(|needed| needed > 2000.0));
}

#[test]
fn a_guardrail_regression_holds_the_winner_back() {
    let mut arms = [arm("stable", 5000.0, 0.7), arm("a", 5000.0, 0.8)];
    arms[1].errors = 500.0;
    let verdict = verdict(&plan(Metric::Score), &arms);
    assert_eq!(
        reason(&verdict.outcome),
        "arm a is better on the mean score but worse than control on the error ratio"
    );
    assert_eq!(verdict.comparisons[1].significance, Significance::Worse);
}

#[test]
fn a_winner_without_data_on_a_guardrail_control_has_is_held_back() {
    let mut guarded = plan(Metric::Score);
    guarded.guardrails = vec![Metric::StreamGap];
    let mut arms = [arm("stable", 5000.0, 0.7), arm("b", 5000.0, 0.8)];
    assert_eq!(
        verdict(&guarded, &arms).outcome,
        Outcome::Winner { arm: "b".to_string() }
    );
    arms[1].stream_gap = Histogram::default();
    let held = verdict(&guarded, &arms);
    assert!(
        reason(&held.outcome).contains("has no mean stream gap"),
        "{:?}",
        held.outcome
    );
}

#[test]
fn a_slower_tail_is_worse_on_p99() {
    let mut arms = [arm("stable", 20_000.0, 0.7), arm("a", 20_000.0, 0.7)];
    // Control: 99.5 % under 0.1 s. Variant: 5 % past 0.5 s.
    arms[0].latency.cumulative = vec![19_900, 20_000, 20_000, 20_000, 20_000];
    arms[1].latency.cumulative = vec![18_000, 18_500, 19_000, 20_000, 20_000];
    let verdict = verdict(&plan(Metric::P99), &arms);
    let p99 = &verdict.comparisons[0];
    assert_eq!((p99.metric, p99.significance), (Metric::P99, Significance::Worse));
    assert_eq!(
        verdict.outcome,
        Outcome::Winner {
            arm: "stable".to_string()
        }
    );
}

#[test]
fn a_bad_plan_or_a_lone_arm_gives_no_verdict() {
    let arms = [arm("stable", 5000.0, 0.7), arm("a", 5000.0, 0.8)];
    let sure = Plan {
        confidence: 1.0,
        ..plan(Metric::Score)
    };
    assert_eq!(
        reason(&verdict(&sure, &arms).outcome),
        "confidence must lie strictly between 0 and 1"
    );
    let lone = verdict(&plan(Metric::Score), &arms[..1]);
    assert_eq!(
        reason(&lone.outcome),
        "an experiment needs a control and at least one variant"
    );
}

#[test]
fn names_serialize_in_camel_case() {
    let metrics = [
        Metric::ErrorRatio,
        Metric::P99,
        Metric::FirstByteP99,
        Metric::StreamGap,
        Metric::Score,
    ];
    let json = serde_json::to_string(&metrics).expect("serializable");
    assert_eq!(json, r#"["errorRatio","p99","firstByteP99","streamGap","score"]"#);
    let outcome = Outcome::Inconclusive {
        reason: "r".to_string(),
        samples_needed: Some(3.0),
    };
    let json = serde_json::to_string(&outcome).expect("serializable");
    assert_eq!(json, r#"{"kind":"inconclusive","reason":"r","samplesNeeded":3.0}"#);
}

fn any_number() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), 0.0..1e5, Just(0.0), Just(f64::NAN), Just(f64::INFINITY)]
}

fn any_histogram() -> impl Strategy<Value = Histogram> {
    let bounds = prop_oneof![Just(BUCKETS.to_vec()), proptest::collection::vec(any_number(), 0..4)];
    let counts = proptest::collection::vec(0..1000_u64, 5);
    (bounds, counts, any_number()).prop_map(|(bounds, mut cumulative, sum)| {
        cumulative.sort_unstable();
        Histogram {
            bounds,
            cumulative,
            sum,
        }
    })
}

fn any_arm() -> impl Strategy<Value = ArmSummary> {
    let numbers = proptest::collection::vec(any_number(), 6);
    (numbers, any_histogram(), any_histogram()).prop_map(|(n, latency, stream_gap)| ArmSummary {
        name: "x".to_string(),
        users: n[0],
        requests: n[1],
        errors: n[2],
        first_byte: latency.clone(),
        latency,
        stream_gap,
        score: Moments {
            count: n[3],
            sum: n[4],
            squares: n[5],
        },
    })
}

fn any_metric() -> impl Strategy<Value = Metric> {
    prop_oneof![
        Just(Metric::ErrorRatio),
        Just(Metric::P99),
        Just(Metric::FirstByteP99),
        Just(Metric::StreamGap),
        Just(Metric::Score)
    ]
}

proptest! {
    #[test]
    fn arbitrary_summaries_never_give_nan(
        arms in proptest::collection::vec(any_arm(), 0..5),
        primary in any_metric(),
        confidence in any_number(),
        min_users in any_number(),
        min_effect in proptest::option::of(any_number()),
    ) {
        let plan = Plan { primary, guardrails: vec![Metric::P99, Metric::StreamGap], confidence, min_users_per_variant: min_users, min_effect };
        let verdict = verdict(&plan, &arms);
        for interval in verdict.comparisons.iter().filter_map(|c| c.interval) {
            prop_assert!(interval.low.is_finite() && interval.high.is_finite() && interval.estimate.is_finite());
        }
        if let Outcome::Inconclusive { samples_needed: Some(needed), .. } = verdict.outcome {
            prop_assert!(needed.is_finite());
        }
    }

    #[test]
    fn a_winner_beats_every_other_arm(
        arms in proptest::collection::vec((100.0..20_000.0_f64, 0.6..0.8_f64, 0.05..0.3_f64), 2..5),
    ) {
        let arms: Vec<ArmSummary> = arms.iter().enumerate().map(|(index, &(count, mean, sd))| {
            ArmSummary { score: scores(count, mean, sd), ..arm(&index.to_string(), count, mean) }
        }).collect();
        let plan = Plan { guardrails: Vec::new(), min_users_per_variant: 0.0, ..plan(Metric::Score) };
        let verdict = verdict(&plan, &arms);
        if let Outcome::Winner { arm } = &verdict.outcome {
            let winner = arms.iter().find(|a| &a.name == arm).expect("a winner is an arm");
            let alpha = 0.05 / (arms.len() * (arms.len() - 1) / 2) as f64;
            for other in arms.iter().filter(|a| a.name != *arm) {
                let interval = confidence::mean_difference(&winner.score, &other.score, alpha).expect("data");
                prop_assert!(interval.low > 0.0, "{arm} vs {}: {interval:?}", other.name);
            }
            for comparison in &verdict.comparisons {
                let expected = if comparison.arm == *arm { Significance::Better } else if arm == "0" { Significance::Worse } else { comparison.significance };
                prop_assert_eq!(comparison.significance, expected);
            }
        }
    }
}
