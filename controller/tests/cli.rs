//! The `weir` binary end to end: the demo's outcomes, the CRD, and usage errors.

use std::process::Command;

use clap::Parser;
use weir::demo::report::Mode;
use weir::demo::{DemoArgs, run_inner};
use weir::status::Phase;

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    demo: DemoArgs,
}

fn args(flags: &[&str]) -> DemoArgs {
    Wrapper::parse_from(std::iter::once("demo").chain(flags.iter().copied())).demo
}

/// The demo's stories (canary healthy and bad twice, blue-green, an experiment) and the Prometheus
/// source, one after another so that they do not compete for the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_promotes_a_healthy_candidate_and_aborts_bad_ones() {
    weir_test_tools::debian_tool("prometheus", "prometheus").unwrap_or_else(|e| panic!("{e:#}"));
    let cases: [(&[&str], Phase, &str); 6] = [
        (&["--fast"], Phase::Succeeded, "promoted revision"),
        (
            &["--fast", "--candidate-error-rate", "0.05"],
            Phase::Aborted,
            "worse than stable on errors",
        ),
        (
            &["--fast", "--candidate-latency-ms", "400"],
            Phase::Aborted,
            "worse than stable on latency",
        ),
        (
            &["--fast", "--strategy", "blue-green"],
            Phase::Succeeded,
            "promoted revision",
        ),
        (
            &["--fast", "--metrics-source", "prometheus"],
            Phase::Succeeded,
            "promoted revision",
        ),
        (
            &["--fast", "--strategy", "experiment"],
            Phase::Succeeded,
            "promoted variant better",
        ),
    ];
    for (flags, expected, message) in cases {
        let a = args(flags);
        assert_eq!(a.expected(), expected, "{flags:?}");
        let summary = tokio::time::timeout(std::time::Duration::from_secs(90), run_inner(&a, Mode::Plain))
            .await
            .expect("the demo ends by itself")
            .expect("the demo runs");
        assert_eq!(summary.phase, expected, "{flags:?}: {}", summary.message);
        assert!(summary.message.contains(message), "{flags:?}: {}", summary.message);
        assert!(summary.as_expected(), "{flags:?}: {:?}", summary.winner);
        if let Some(experiment) = &summary.experiment {
            // The better-scoring variant won, with every arm's score read from its trailers.
            assert_eq!(experiment.winner.as_deref(), Some("better"));
            assert!(
                experiment.arms.iter().all(|a| a.summary.score.count > 0.0),
                "{experiment:?}"
            );
        } else if expected == Phase::Aborted {
            assert!(
                summary.time_to_zero.is_some(),
                "an abort reports its time to weight zero"
            );
        } else {
            // A healthy run says how many requests each step needed for its power, and had them
            // (a blue-green preview is judged by its guardrails alone: only the switch is sized).
            assert_eq!(
                summary.steps.len(),
                a.spec(([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into(), &[])
                    .strategy
                    .canary
                    .map_or(1, |c| c.steps.len()),
                "{flags:?}"
            );
            for passed in &summary.steps {
                let power = &passed.power;
                assert!(power.requests >= power.needed, "{flags:?}: {power:?}");
            }
        }
    }
}

#[test]
fn bad_demo_flags_are_a_usage_error() {
    for flags in [
        &["demo", "--candidate-error-rate", "2"][..],
        &["demo", "--candidate-latency-ms", "-5"],
        &["demo", "--strategy", "yolo"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(flags)
            .output()
            .expect("run weir");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn crd_prints_the_rollout_definition() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("crd")
        .output()
        .expect("run weir");
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    assert!(yaml.contains("kind: CustomResourceDefinition"), "{yaml}");
    assert!(yaml.contains("name: rollouts.weir.dev"), "{yaml}");
    assert!(yaml.contains("candidateWeight"), "{yaml}");
}
