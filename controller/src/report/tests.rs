//! The table's content and the renderers' behaviour on empty and broken statuses.

use proptest::prelude::*;

use super::{html, table};
use crate::experiment::status::{self, ArmPoint, ArmState, ExperimentStatus, HistoryPoint};
use crate::experiment::verdict::{self, ArmSummary, Histogram, Metric, Plan};
use crate::stats::confidence::{Interval, Moments};

const BOUNDS: [f64; 8] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, f64::INFINITY];

/// (name, weight, error rate, mean score, median latency in seconds)
const ARMS: [(&str, f64, f64, f64, f64); 3] = [
    ("stable", 34.0, 0.010, 0.70, 0.08),
    ("fast", 33.0, 0.010, 0.70, 0.04),
    ("better", 33.0, 0.008, 0.73, 0.08),
];

fn plan() -> Plan {
    Plan {
        primary: Metric::Score,
        guardrails: vec![Metric::ErrorRatio, Metric::P99],
        confidence: 0.95,
        min_users_per_variant: 2000.0,
        min_effect: None,
    }
}

fn summary(&(name, _, error_rate, score, median): &(&str, f64, f64, f64, f64), look: usize) -> ArmSummary {
    let requests = 600.0 * look as f64;
    let count = requests as u64;
    let share = |bound: f64| 1.0 / (1.0 + (-(bound / median).ln() / 0.4).exp());
    let cumulative: Vec<u64> = BOUNDS
        .iter()
        .map(|&bound| {
            if bound.is_finite() {
                (share(bound) * requests) as u64
            } else {
                count
            }
        })
        .collect();
    let scored = requests * 0.9;
    ArmSummary {
        name: name.to_string(),
        users: 150.0 * look as f64,
        requests,
        errors: (requests * error_rate).round(),
        latency: Histogram {
            bounds: BOUNDS.to_vec(),
            cumulative,
            sum: requests * median * 1.1,
        },
        score: Moments {
            count: scored,
            sum: scored * score,
            squares: (scored - 1.0) * 0.04 + scored * score * score,
        },
        ..ArmSummary::default()
    }
}

/// The experiment after `looks` looks, 30 seconds apart.
fn experiment(looks: usize) -> ExperimentStatus {
    let plan = plan();
    let mut history = Vec::new();
    let mut arms = Vec::new();
    let mut last = None;
    for look in 1..=looks {
        arms = ARMS.iter().map(|arm| summary(arm, look)).collect();
        let verdict = verdict::verdict(&plan, &arms);
        let at = format!("2025-06-01T12:{:02}:{:02}Z", look / 2, (look % 2) * 30);
        status::push_point(&mut history, HistoryPoint::of(at, &plan, &arms, &verdict));
        last = Some(verdict);
    }
    ExperimentStatus {
        started_at: "2025-06-01T12:00:00Z".to_string(),
        plan,
        arms: arms
            .into_iter()
            .zip(ARMS)
            .map(|(summary, (_, weight, ..))| ArmState {
                weight,
                deployment: format!("shop-{}", summary.name),
                summary,
            })
            .collect(),
        revisions: Vec::new(),
        verdict: last,
        ended_at: None,
        winner: None,
        stopped_by: None,
        history,
    }
}

fn empty() -> ExperimentStatus {
    ExperimentStatus {
        started_at: String::new(),
        plan: plan(),
        arms: Vec::new(),
        revisions: Vec::new(),
        verdict: None,
        ended_at: None,
        winner: None,
        stopped_by: None,
        history: Vec::new(),
    }
}

#[test]
fn table_names_every_arm_with_intervals_and_the_winner() {
    let text = table("shop", &experiment(40));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("experiment shop: primary score"), "{text}");
    let header = lines.iter().position(|l| l.starts_with("arm ")).expect("a header row");
    for (row, arm) in ["stable", "fast", "better"].iter().enumerate() {
        assert!(lines[header + 1 + row].starts_with(arm), "{text}");
    }
    let better = lines[header + 3];
    assert!(better.contains("] better"), "{better}");
    assert!(
        better.contains(" [+0.0") && better.contains("+0.03"),
        "score difference 0.03 with its interval: {better}"
    );
    assert!(lines[header + 2].contains("unclear"), "fast scores as stable: {text}");
    assert_eq!(lines.last(), Some(&"winner: better"));
    assert!(!text.contains('\u{1b}'), "no colour codes");
}

#[test]
fn table_columns_line_up() {
    let text = table("shop", &experiment(40));
    let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("arm ")).take(4).collect();
    let end = lines[0].find("requests").expect("a requests column") + "requests".len();
    for row in &lines[1..] {
        assert!(
            row[..end].ends_with(" 24000"),
            "600 requests a look for 40 looks: {text}"
        );
        assert_eq!(&row[end..end + 2], "  ", "{text}");
    }
    for header in [
        "error ratio (%)",
        "p99 (ms)",
        "score vs stable",
        "error ratio vs stable (pp)",
    ] {
        assert!(lines[0].contains(header), "{header}: {text}");
    }
}

#[test]
fn an_early_look_says_why_it_is_inconclusive() {
    let text = table("shop", &experiment(2));
    let verdict = text.lines().last().expect("a verdict line");
    assert!(
        verdict.starts_with("inconclusive: arm stable has 300 users of the 2000 each arm needs"),
        "{verdict}"
    );
}

#[test]
fn an_empty_status_renders_without_data() {
    let text = table("new", &empty());
    assert!(text.ends_with("inconclusive: no look yet\n"), "{text}");
    let page = html("new", &empty());
    assert_eq!(page.matches("<svg").count(), 4);
    assert_eq!(page.matches("no data yet").count(), 4);
}

#[test]
fn arms_without_scores_leave_the_score_plot_empty() {
    let mut experiment = experiment(20);
    for point in &mut experiment.history {
        for arm in &mut point.arms {
            arm.score = None;
        }
        point.differences.clear();
    }
    let page = html("shop", &experiment);
    assert_eq!(page.matches("no data yet").count(), 2, "score and differences");
}

#[test]
fn names_and_reasons_are_escaped() {
    let mut experiment = experiment(3);
    experiment.arms[1].summary.name = "<script>x&y</script>".to_string();
    for point in &mut experiment.history {
        point.arms[1].name = experiment.arms[1].summary.name.clone();
    }
    let page = html("a\"b<c>", &experiment);
    assert!(!page.contains("<script>"));
    assert!(page.contains("&lt;script&gt;x&amp;y&lt;/script&gt;"));
    assert!(page.contains("weir report: a&quot;b&lt;c&gt;"));
}

fn any_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e3..1e3_f64,
        Just(0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::MAX),
        Just(-f64::MAX),
        Just(1e-300)
    ]
}

fn any_interval() -> impl Strategy<Value = Option<Interval>> {
    proptest::option::of(
        (any_number(), any_number(), any_number()).prop_map(|(estimate, low, high)| Interval { estimate, low, high }),
    )
}

proptest! {
    #[test]
    fn arbitrary_histories_never_panic(
        bands in proptest::collection::vec((any_interval(), any_interval(), any_number()), 0..6),
        bounds in proptest::collection::vec(any_number(), 0..5),
        at in prop_oneof![Just("2025-06-01T12:00:00Z".to_string()), Just("later".to_string())],
    ) {
        let mut experiment = experiment(3);
        experiment.arms[0].summary.latency.bounds = bounds;
        experiment.history = bands
            .iter()
            .map(|&(error_ratio, score, users)| HistoryPoint {
                at: at.clone(),
                arms: vec![ArmPoint { name: "stable".to_string(), users, requests: users, error_ratio, score }],
                differences: Vec::new(),
            })
            .collect();
        let page = html("x", &experiment);
        prop_assert_eq!(page.matches("<svg").count(), 4);
        let _ = table("x", &experiment);
    }
}
