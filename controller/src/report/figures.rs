//! The report's four figures as [`Chart`]s: each arm's latency CDF, each arm's error ratio and
//! mean score over time with their bands, and each variant's difference with control on the
//! primary metric over time. Picks the data out of the status; [`super::plot`] draws it. Each
//! arm keeps one colour in every figure. No I/O.

use std::time::SystemTime;

use crate::experiment::status::{ArmPoint, ExperimentStatus, HistoryPoint};
use crate::experiment::verdict::Histogram;
use crate::stats::confidence::Interval;

use super::metrics;
use super::plot::{Chart, Line, Point};

/// Colours by arm position (control first), from the Tableau 10 palette, which stays apart
/// for common colour blindness.
const PALETTE: [(u8, u8, u8); 10] = [
    (78, 121, 167),
    (242, 142, 43),
    (89, 161, 79),
    (225, 87, 89),
    (176, 122, 161),
    (118, 183, 178),
    (237, 201, 72),
    (156, 117, 95),
    (255, 157, 167),
    (186, 176, 172),
];

/// Every arm's name: the status' arms in order, then any that only the history names.
fn arm_names(experiment: &ExperimentStatus) -> Vec<String> {
    let mut names: Vec<String> = experiment.arms.iter().map(|arm| arm.summary.name.clone()).collect();
    for point in experiment.history.iter().flat_map(|point| &point.arms) {
        if !names.contains(&point.name) {
            names.push(point.name.clone());
        }
    }
    names
}

/// The colour of the arm at `index` (control first), the same in every figure and the table.
pub fn color(index: usize) -> (u8, u8, u8) {
    PALETTE[index % PALETTE.len()]
}

/// Figure 1: each arm's share of requests at or below each latency bound.
pub fn latency_cdf(experiment: &ExperimentStatus) -> Chart {
    let lines = experiment
        .arms
        .iter()
        .enumerate()
        .map(|(index, arm)| Line {
            name: arm.summary.name.clone(),
            color: color(index),
            runs: vec![cdf(&arm.summary.latency)],
        })
        .collect();
    Chart {
        title: "Latency CDF per arm".to_string(),
        x_label: "request duration (ms, log scale)".to_string(),
        y_label: "share of requests at or below".to_string(),
        log_x: true,
        zero_line: false,
        y_bounds: Some((0.0, 1.0)),
        lines,
    }
}

/// The cumulative share at each finite, positive bound, in milliseconds; nothing for a
/// histogram of the wrong shape or without observations.
fn cdf(histogram: &Histogram) -> Vec<Point> {
    let total = match histogram.cumulative.last() {
        Some(&total) if total > 0 && histogram.bounds.len() == histogram.cumulative.len() => total as f64,
        _ => return Vec::new(),
    };
    histogram
        .bounds
        .iter()
        .zip(&histogram.cumulative)
        .filter(|(bound, _)| bound.is_finite() && **bound > 0.0)
        .map(|(bound, &count)| Point {
            x: bound * 1000.0,
            y: (count as f64 / total).min(1.0),
            band: None,
        })
        .collect()
}

/// Where each look sits on the time axis: minutes since the start when every time parses,
/// else the look's number.
struct Timeline {
    xs: Vec<f64>,
    label: &'static str,
}

impl Timeline {
    fn of(experiment: &ExperimentStatus) -> Timeline {
        let parse = |at: &str| humantime::parse_rfc3339_weak(at).ok();
        let times: Option<Vec<SystemTime>> = experiment.history.iter().map(|p| parse(&p.at)).collect();
        let origin = parse(&experiment.started_at).or_else(|| times.as_ref()?.first().copied());
        match (times, origin) {
            (Some(times), Some(origin)) => Timeline {
                xs: times.iter().map(|&at| minutes_between(origin, at)).collect(),
                label: "minutes since the split began",
            },
            _ => Timeline {
                xs: (1..=experiment.history.len()).map(|look| look as f64).collect(),
                label: "look",
            },
        }
    }
}

/// Minutes from `origin` to `at`, negative when `at` is earlier.
fn minutes_between(origin: SystemTime, at: SystemTime) -> f64 {
    match at.duration_since(origin) {
        Ok(after) => after.as_secs_f64() / 60.0,
        Err(before) => -before.duration().as_secs_f64() / 60.0,
    }
}

/// Runs of points for one named series over the history: a look where `pick` finds nothing
/// ends a run.
fn runs<F>(history: &[HistoryPoint], timeline: &Timeline, scale: f64, pick: F) -> Vec<Vec<Point>>
where
    F: Fn(&HistoryPoint) -> Option<Interval>,
{
    let mut runs = vec![Vec::new()];
    for (point, &x) in history.iter().zip(&timeline.xs) {
        match pick(point) {
            Some(interval) => runs.last_mut().expect("runs starts non-empty").push(Point {
                x,
                y: interval.estimate * scale,
                band: Some((interval.low * scale, interval.high * scale)),
            }),
            None if runs.last().is_some_and(|run| !run.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|run| !run.is_empty());
    runs
}

/// One band per arm over time, of what `pick` takes from the arm's point.
fn arm_bands<F>(experiment: &ExperimentStatus, scale: f64, pick: F) -> (Vec<Line>, &'static str)
where
    F: Fn(&ArmPoint) -> Option<Interval>,
{
    let timeline = Timeline::of(experiment);
    let lines = arm_names(experiment)
        .into_iter()
        .enumerate()
        .map(|(index, name)| {
            let runs = runs(&experiment.history, &timeline, scale, |point| {
                point.arms.iter().find(|arm| arm.name == name).and_then(&pick)
            });
            Line {
                name,
                color: color(index),
                runs,
            }
        })
        .collect();
    (lines, timeline.label)
}

/// Figure 2: each arm's error ratio over time with its band.
pub fn error_ratio(experiment: &ExperimentStatus) -> Chart {
    let (lines, x_label) = arm_bands(experiment, 100.0, |arm| arm.error_ratio);
    Chart {
        title: "Error ratio over time, with each arm's confidence band".to_string(),
        x_label: x_label.to_string(),
        y_label: "error ratio (%)".to_string(),
        log_x: false,
        zero_line: false,
        y_bounds: Some((0.0, 100.0)),
        lines,
    }
}

/// Figure 3: each arm's mean score over time with its band.
pub fn score(experiment: &ExperimentStatus) -> Chart {
    let (lines, x_label) = arm_bands(experiment, 1.0, |arm| arm.score);
    Chart {
        title: "Mean score over time, with each arm's confidence band".to_string(),
        x_label: x_label.to_string(),
        y_label: "mean score".to_string(),
        log_x: false,
        zero_line: false,
        y_bounds: None,
        lines,
    }
}

/// Figure 4: each variant's difference with control on the primary metric over time, the
/// interval narrowing as data come in, around a line at zero.
pub fn differences(experiment: &ExperimentStatus) -> Chart {
    let primary = experiment.plan.primary;
    let timeline = Timeline::of(experiment);
    let names = arm_names(experiment);
    let control = names.first().cloned().unwrap_or_else(|| "control".to_string());
    let scale = metrics::scale(primary);
    let lines = names
        .into_iter()
        .enumerate()
        .skip(1)
        .map(|(index, name)| {
            let runs = runs(&experiment.history, &timeline, scale, |point| {
                let comparison = point.differences.iter().find(|c| c.arm == name && c.metric == primary);
                comparison.and_then(|c| c.interval)
            });
            Line {
                name: format!("{name} - {control}"),
                color: color(index),
                runs,
            }
        })
        .collect();
    let unit = match metrics::unit(primary) {
        "%" => " (percentage points)",
        "ms" => " (ms)",
        _ => "",
    };
    Chart {
        title: format!(
            "Difference with {control} on the {} over time, with its confidence interval",
            metrics::label(primary)
        ),
        x_label: timeline.label.to_string(),
        y_label: format!("{} difference{unit}", metrics::label(primary)),
        log_x: false,
        zero_line: true,
        y_bounds: None,
        lines,
    }
}
