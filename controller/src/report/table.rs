//! The report's table: one row per arm (control first) with its weight, users, requests and,
//! for each judged metric, its value and (for variants) the interval of its difference with
//! control; then the verdict line. Built once as a [`Grid`] of plain cells that the terminal
//! text here and the HTML page both lay out. Pure formatting; no I/O, no colour codes.

use crate::experiment::status::{self, ExperimentStatus};
use crate::experiment::verdict::{Metric, Outcome, Significance};

use super::metrics;

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Names and intervals, which start with a sign.
    Left,
    /// Plain numbers.
    Right,
}

/// One column: its header and alignment.
#[derive(Clone, Debug)]
pub struct Column {
    /// The header text.
    pub header: String,
    /// How its cells line up.
    pub align: Align,
}

/// One cell: its text and, for a difference, what its interval says.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// The text, without padding.
    pub text: String,
    /// Set on difference cells that have an interval.
    pub significance: Option<Significance>,
}

impl Cell {
    fn plain(text: String) -> Cell {
        Cell {
            text,
            significance: None,
        }
    }
}

/// The table before layout: columns and one row of cells per arm.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The columns, arm first.
    pub columns: Vec<Column>,
    /// One row per arm, control first; each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

/// The word for what an interval says.
pub fn significance_word(significance: Significance) -> &'static str {
    match significance {
        Significance::Better => "better",
        Significance::Worse => "worse",
        Significance::Unclear => "unclear",
    }
}

/// The unit of a difference: percentage points for the error ratio.
fn difference_unit(metric: Metric) -> &'static str {
    match metric {
        Metric::ErrorRatio => "pp",
        other => metrics::unit(other),
    }
}

/// The table of `experiment`.
pub fn grid(experiment: &ExperimentStatus) -> Grid {
    let judged = status::judged(&experiment.plan);
    let control = experiment.arms.first().map(|arm| arm.summary.name.as_str());
    let mut columns = vec![
        column("arm", Align::Left),
        column("weight %", Align::Right),
        column("users", Align::Right),
        column("requests", Align::Right),
    ];
    for &metric in &judged {
        columns.push(column(&metrics::header(metric), Align::Right));
        if let Some(control) = control.filter(|_| experiment.arms.len() > 1) {
            let header = match difference_unit(metric) {
                "" => format!("{} vs {control}", metrics::label(metric)),
                unit => format!("{} vs {control} ({unit})", metrics::label(metric)),
            };
            columns.push(column(&header, Align::Left));
        }
    }
    let rows = experiment
        .arms
        .iter()
        .enumerate()
        .map(|(index, arm)| {
            let summary = &arm.summary;
            let mut row = vec![
                Cell::plain(summary.name.clone()),
                Cell::plain(metrics::weight(arm.weight)),
                Cell::plain(metrics::count(summary.users)),
                Cell::plain(metrics::count(summary.requests)),
            ];
            for &metric in &judged {
                row.push(Cell::plain(metrics::number(metrics::value(metric, summary))));
                if experiment.arms.len() > 1 {
                    row.push(if index == 0 {
                        Cell::default()
                    } else {
                        difference(experiment, &summary.name, metric)
                    });
                }
            }
            row
        })
        .collect();
    Grid { columns, rows }
}

fn column(header: &str, align: Align) -> Column {
    Column {
        header: header.to_string(),
        align,
    }
}

/// The cell of `arm - control` on `metric` from the last verdict.
fn difference(experiment: &ExperimentStatus, arm: &str, metric: Metric) -> Cell {
    let comparison = experiment
        .verdict
        .iter()
        .flat_map(|verdict| &verdict.comparisons)
        .find(|c| c.arm == arm && c.metric == metric);
    let Some(comparison) = comparison else {
        return Cell::plain("-".to_string());
    };
    let Some(interval) = comparison.interval else {
        return Cell::plain("- (too little data)".to_string());
    };
    let scale = metrics::scale(metric);
    let text = format!(
        "{} {}",
        metrics::interval(interval.estimate * scale, interval.low * scale, interval.high * scale),
        significance_word(comparison.significance)
    );
    Cell {
        text,
        significance: Some(comparison.significance),
    }
}

/// `winner: <arm>` or `inconclusive: <reason> (about N more per arm)`: the winner the
/// experiment ended with, else the last look's outcome.
pub fn verdict_line(experiment: &ExperimentStatus) -> String {
    if let Some(winner) = &experiment.winner {
        return format!("winner: {winner}");
    }
    let Some(verdict) = &experiment.verdict else {
        return "inconclusive: no look yet".to_string();
    };
    match &verdict.outcome {
        Outcome::Winner { arm } => format!("winner: {arm}"),
        Outcome::Inconclusive { reason, samples_needed } => {
            let more = samples_needed.map_or(0.0, |needed| more_per_arm(experiment, needed));
            if more >= 1.0 {
                format!("inconclusive: {reason} (about {more:.0} more per arm)")
            } else {
                format!("inconclusive: {reason}")
            }
        }
    }
}

/// How many more observations of the primary metric the arm with the fewest needs to reach
/// `needed`, the verdict's total per arm; rounded up to two significant digits.
fn more_per_arm(experiment: &ExperimentStatus, needed: f64) -> f64 {
    let primary = experiment.plan.primary;
    let fewest = experiment
        .arms
        .iter()
        .map(|arm| metrics::observations(primary, &arm.summary))
        .fold(f64::INFINITY, f64::min);
    let have = if fewest.is_finite() { fewest } else { 0.0 };
    metrics::about(needed - have)
}

/// One line naming the experiment and its plan.
pub fn heading(name: &str, experiment: &ExperimentStatus) -> String {
    let plan = &experiment.plan;
    let guardrails: Vec<&str> = status::judged(plan)[1..].iter().map(|&m| metrics::label(m)).collect();
    let guardrails = if guardrails.is_empty() {
        "none".to_string()
    } else {
        guardrails.join(", ")
    };
    let started = if experiment.started_at.is_empty() {
        "-"
    } else {
        &experiment.started_at
    };
    let ended = match &experiment.ended_at {
        Some(ended) => format!(", ended {ended}"),
        None => String::new(),
    };
    format!(
        "experiment {name}: primary {}, guardrails {guardrails}, confidence {}%, {} users per arm, started {started}{ended}",
        metrics::label(plan.primary),
        metrics::trimmed(plan.confidence * 100.0),
        metrics::count(plan.min_users_per_variant),
    )
}

/// The terminal text: heading, aligned table, verdict line.
pub fn text(name: &str, experiment: &ExperimentStatus) -> String {
    let grid = grid(experiment);
    let widths: Vec<usize> = grid
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let cells = grid.rows.iter().map(|row| width(&row[index].text));
            cells.fold(width(&column.header), usize::max)
        })
        .collect();
    let mut out = heading(name, experiment);
    out.push_str("\n\n");
    let header: Vec<&str> = grid.columns.iter().map(|c| c.header.as_str()).collect();
    push_line(&mut out, &grid.columns, &widths, &header);
    for row in &grid.rows {
        let cells: Vec<&str> = row.iter().map(|cell| cell.text.as_str()).collect();
        push_line(&mut out, &grid.columns, &widths, &cells);
    }
    out.push('\n');
    out.push_str(&verdict_line(experiment));
    out.push('\n');
    out
}

/// Width on a terminal, counting characters (names are mostly ASCII).
fn width(text: &str) -> usize {
    text.chars().count()
}

fn push_line(out: &mut String, columns: &[Column], widths: &[usize], cells: &[&str]) {
    let mut line = String::new();
    for ((column, &width), cell) in columns.iter().zip(widths).zip(cells) {
        if !line.is_empty() {
            line.push_str("  ");
        }
        let pad = " ".repeat(width.saturating_sub(self::width(cell)));
        match column.align {
            Align::Left => {
                line.push_str(cell);
                line.push_str(&pad);
            }
            Align::Right => {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}
