//! The Rollout spec of a scenario: canary or blue-green, analysis settings, maxSurge and
//! checks, well typed and mostly valid (1 in 16 is made invalid in one of a few ways).

use arbitrary::Arbitrary;
use weir::rollout::{
    Analysis, BlueGreen, Canary, Check, CheckMetric, Detect, MetricsSource, PrometheusSource, RolloutSpec, RouteSpec,
    Scaling, SideSpec, Step, Strategy,
};

const HOLDS: [&str; 6] = ["1s", "5s", "10s", "30s", "60s", "500ms"];
const INTERVALS: [&str; 4] = ["1s", "5s", "15s", "30s"];
const WARMUPS: [&str; 4] = ["0s", "1s", "5s", "20s"];
const DEADLINES: [&str; 4] = ["1m", "2m", "10m", "30s"];
const MIN_REQUESTS: [u64; 5] = [1, 10, 100, 1000, 50];
const FALSE_ABORT_RATES: [f64; 4] = [0.01, 0.05, 0.001, 0.5];

#[derive(Arbitrary, Debug, Clone)]
pub(crate) struct SpecIn {
    pub(crate) blue_green: bool,
    /// Increments of the canary weights, in 40-basis-point units plus one.
    pub(crate) steps: Vec<(u8, u8)>,
    pub(crate) interval: u8,
    pub(crate) warmup: Option<u8>,
    pub(crate) deadline: u8,
    pub(crate) min_requests: u8,
    pub(crate) failure_limit: u8,
    pub(crate) false_abort_rate: u8,
    pub(crate) max_surge: Option<u8>,
    /// Bits: error-ratio check, latency check, first-byte check, a PromQL check (Prometheus).
    pub(crate) checks: u8,
    pub(crate) prometheus: bool,
    /// 1 in 16 makes the spec invalid (in one of a few ways).
    pub(crate) invalid: u8,
}

pub(crate) fn pick<T: Copy>(list: &[T], index: u8) -> T {
    list[usize::from(index) % list.len()]
}

pub(crate) fn spec_of(s: &SpecIn) -> RolloutSpec {
    let side = |deployment: &str, endpoint: &str| SideSpec {
        deployment: deployment.into(),
        endpoints: vec![endpoint.into()],
        ..SideSpec::default()
    };
    let mut steps = Vec::new();
    let mut weight = 0u32;
    for (increment, hold) in s.steps.iter().take(6) {
        weight = (weight + 1 + u32::from(*increment) * 40).min(10_000);
        steps.push(Step {
            weight: f64::from(weight) / 100.0,
            hold: pick(&HOLDS, *hold).into(),
        });
        if weight == 10_000 {
            break;
        }
    }
    if steps.is_empty() {
        steps.push(Step {
            weight: 5.0,
            hold: "10s".into(),
        });
    }
    let strategy = if s.blue_green {
        Strategy {
            canary: None,
            blue_green: Some(BlueGreen {
                preview_header: "x-testers".into(),
                preview_value: "yes".into(),
                hold_before_switch: pick(&HOLDS, s.interval).into(),
                keep_old_for: pick(&HOLDS, s.deadline).into(),
            }),
            experiment: None,
        }
    } else {
        Strategy {
            canary: Some(Canary { steps }),
            blue_green: None,
            experiment: None,
        }
    };
    let mut checks = Vec::new();
    if s.checks & 1 != 0 {
        checks.push(Check {
            metric: Some(CheckMetric::ErrorRatio),
            max: Some(0.05),
            max_over_stable: Some(0.01),
            ..Check::default()
        });
    }
    if s.checks & 2 != 0 {
        checks.push(Check {
            metric: Some(CheckMetric::LatencyP99),
            max_ms: Some(500.0),
            max_ratio_to_stable: Some(1.5),
            ..Check::default()
        });
    }
    if s.checks & 4 != 0 {
        checks.push(Check {
            metric: Some(CheckMetric::FirstByteP99),
            max_ratio_to_stable: Some(2.0),
            ..Check::default()
        });
    }
    if s.checks & 8 != 0 && s.prometheus {
        checks.push(Check {
            promql: Some("sum(rate(x[1m]))".into()),
            max: Some(1.0),
            ..Check::default()
        });
    }
    let (interval, warmup, deadline) = (
        pick(&INTERVALS, s.interval),
        s.warmup.map(|w| pick(&WARMUPS, w)),
        pick(&DEADLINES, s.deadline),
    );
    let mut spec = RolloutSpec {
        gateway: "weir".into(),
        route: RouteSpec {
            name: Some("r".into()),
            ..RouteSpec::default()
        },
        stable: side("v1", "127.0.0.1:9001"),
        candidate: side("v2", "127.0.0.1:9002"),
        strategy,
        analysis: Analysis {
            interval: interval.into(),
            min_requests: pick(&MIN_REQUESTS, s.min_requests),
            failure_limit: u32::from(s.failure_limit % 3) + 1,
            false_abort_rate: pick(&FALSE_ABORT_RATES, s.false_abort_rate),
            warmup: warmup.map(Into::into),
            detect: Detect::default(),
            progress_deadline: deadline.into(),
            checks,
            source: MetricsSource {
                prometheus: s.prometheus.then(|| PrometheusSource {
                    url: "http://prometheus:9090".into(),
                }),
            },
        },
        scaling: Scaling {
            max_surge: if s.blue_green {
                None
            } else {
                s.max_surge.map(|m| u32::from(m % 4) + 1)
            },
        },
    };
    if s.invalid % 16 == 15 {
        match s.invalid / 16 % 4 {
            0 => spec.route.name = Some(String::new()),
            1 => spec.analysis.interval = "0s".into(),
            2 => spec.candidate.deployment = "v1".into(),
            _ => spec.analysis.min_requests = 0,
        }
    }
    spec
}
