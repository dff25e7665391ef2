//! What the demo shows: a live progress line on a terminal, plain lines otherwise, or one JSON
//! object per line with `-o json`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use crate::decide::{Decision, percent};
use crate::judge::round;
use crate::ports::{Report, ReportError};
use crate::status::{AnalysisValues, Phase, Power, RolloutStatus, SideValues};

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A progress bar redrawn in place, events above it.
    Live,
    /// Plain lines, for logs and pipes.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The end of a demo run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Succeeded, Aborted, or anything else for a run that timed out.
    pub phase: Phase,
    /// The expected phase, from the flags.
    pub expected: Phase,
    /// The rollout's last message.
    pub message: String,
    /// Seconds since the demo started.
    pub elapsed: Duration,
    /// For an abort: from the start of the step that failed to weight zero.
    pub time_to_zero: Option<Duration>,
    /// The last analysis's numbers.
    pub values: Option<AnalysisValues>,
    /// Each passed step's sample against what its power needed.
    pub steps: Vec<PassedStep>,
    /// What the clients saw: (stable answers, candidate answers, errors, skipped).
    pub clients: (u64, u64, u64, u64),
    /// An experiment's winner, if it found one.
    pub winner: Option<String>,
    /// The winner the flags predict, for an experiment.
    pub expected_winner: Option<String>,
    /// An experiment's arms, verdict and history, as the status holds them.
    pub experiment: Option<crate::experiment::status::ExperimentStatus>,
}

impl Summary {
    /// Whether the run ended as the flags predict: the phase, and for an experiment the
    /// winner.
    pub fn as_expected(&self) -> bool {
        self.phase == self.expected && self.winner == self.expected_winner
    }
}

/// A step that passed, with its sample against what its power needed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PassedStep {
    /// The step, 1-based as the progress line shows it.
    pub step: u32,
    /// Its sample.
    pub power: Power,
}

/// Writes progress to stdout.
pub struct Reporter {
    mode: Mode,
    live_line: bool,
}

impl Reporter {
    /// A reporter in `mode`.
    pub fn new(mode: Mode) -> Self {
        Reporter { mode, live_line: false }
    }

    /// Shows one decision: its events, its analysis, and (live) the progress bar.
    pub fn decision(&mut self, d: &Decision, elapsed: Duration, steps: usize) {
        let at = elapsed.as_secs_f64();
        match self.mode {
            Mode::Json => {
                for e in &d.events {
                    self.line(
                        &json!({"t": round2(at), "event": e.reason, "warning": e.warning, "message": e.message})
                            .to_string(),
                    );
                }
                if let Some(a) = &d.analysis {
                    self.line(
                        &json!({
                            "t": round2(at),
                            "analysis": a.verdict,
                            "judged": a.judged,
                            "step": d.status.step + 1,
                            "weightBasisPoints": d.status.candidate_weight,
                            "reason": a.reason,
                            "values": a.values,
                        })
                        .to_string(),
                    );
                }
            }
            Mode::Plain => {
                for e in &d.events {
                    self.line(&format!("{at:6.1}s  {:<18} {}", e.reason, e.message));
                }
                if let Some(a) = &d.analysis {
                    let label = if a.judged {
                        format!("analysis: {:?}", a.verdict).to_lowercase()
                    } else {
                        "warm-up".to_owned()
                    };
                    self.line(&format!("{at:6.1}s  {label:<18} {}", a.reason));
                }
            }
            Mode::Live => {
                for e in &d.events {
                    self.line(&format!("{at:6.1}s  {:<18} {}", e.reason, e.message));
                }
                self.bar(&d.status, at, steps);
            }
        }
    }

    fn bar(&mut self, status: &RolloutStatus, at: f64, steps: usize) {
        let done = match status.phase {
            Phase::Promoting | Phase::Succeeded => steps as f64,
            Phase::Aborted => status.step as f64,
            _ => f64::from(status.step) + if status.step_passed { 0.5 } else { 0.0 },
        };
        let width = 20;
        let filled = ((done / steps.max(1) as f64) * width as f64).round() as usize;
        let (cand, stable) = status
            .last_analysis
            .as_ref()
            .map(|a| (side(&a.values.candidate), side(&a.values.stable)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let evidence = status.last_analysis.as_ref().map_or("-".to_owned(), |a| {
            format!(
                "{}/{} of {}",
                round(a.values.error_evidence),
                round(a.values.latency_evidence),
                round(a.values.threshold)
            )
        });
        let power = status
            .last_analysis
            .as_ref()
            .and_then(|a| a.values.power.as_ref())
            .map_or(String::new(), |p| {
                format!(" | sample {}/{}", p.requests.min(p.needed), p.needed)
            });
        let text = format!(
            "[{}{}] {at:5.1}s {:?} step {}/{} at {} | candidate {cand} | stable {stable} | evidence {evidence}{power}",
            "#".repeat(filled.min(width)),
            ".".repeat(width - filled.min(width)),
            status.phase,
            status.step + 1,
            steps,
            percent(status.candidate_weight),
        );
        print!("\r\x1b[2K{text}");
        let _ = std::io::stdout().flush();
        self.live_line = true;
    }

    fn line(&mut self, text: &str) {
        if self.live_line {
            print!("\r\x1b[2K");
            self.live_line = false;
        }
        println!("{text}");
    }

    /// Shows the end of the run.
    pub fn summary(&mut self, s: &Summary) {
        let (stable, candidate, errors, skipped) = s.clients;
        let time_to_zero = s.time_to_zero.map(|d| round2(d.as_secs_f64()));
        if self.mode == Mode::Json {
            self.line(
                &json!({
                    "summary": {
                        "outcome": s.phase,
                        "expected": s.expected,
                        "asExpected": s.as_expected(),
                        "winner": s.winner,
                        "message": s.message,
                        "seconds": round2(s.elapsed.as_secs_f64()),
                        "badStepToWeightZeroSeconds": time_to_zero,
                        "lastAnalysis": s.values,
                        "steps": s.steps,
                        "clients": {"stable": stable, "candidate": candidate, "errors": errors, "skipped": skipped},
                    }
                })
                .to_string(),
            );
            return;
        }
        let outcome = match s.phase {
            Phase::Succeeded => "PROMOTED",
            Phase::Aborted => "ABORTED",
            _ => "DID NOT FINISH",
        };
        self.line("");
        self.line(&format!(
            "{outcome} after {:.1}s: {}",
            s.elapsed.as_secs_f64(),
            s.message
        ));
        if let Some(experiment) = &s.experiment {
            for line in crate::report::table("demo", experiment).lines() {
                self.line(&format!("  {line}"));
            }
        }
        if let Some(t) = s.time_to_zero {
            self.line(&format!(
                "  time from the bad step's start to weight 0: {:.2}s",
                t.as_secs_f64()
            ));
        }
        for passed in &s.steps {
            self.line(&format!(
                "  step {} passed with {}",
                passed.step,
                super::describe_power(&passed.power)
            ));
        }
        if let Some(v) = &s.values {
            self.line(&format!(
                "  last window: candidate {} | stable {}",
                side(&v.candidate),
                side(&v.stable)
            ));
            self.line(&format!(
                "  evidence against the candidate: errors {}, cancellations {}, latency {} (abort at {})",
                round(v.error_evidence),
                round(v.cancel_evidence),
                round(v.latency_evidence),
                round(v.threshold)
            ));
        }
        if s.experiment.is_some() {
            // The arms' own counts are in the table above.
            let answers = stable + candidate;
            self.line(&format!(
                "  clients saw {answers} answers, {errors} errors, {skipped} skipped"
            ));
        } else {
            self.line(&format!(
                "  clients saw {stable} stable and {candidate} candidate answers, {errors} errors, {skipped} skipped"
            ));
        }
        let verdict = if s.as_expected() {
            "as the flags predict"
        } else {
            "NOT what the flags predict"
        };
        match &s.expected_winner {
            Some(winner) => self.line(&format!("  expected {:?} with winner {winner}: {verdict}", s.expected)),
            None => self.line(&format!("  expected {:?}: {verdict}", s.expected)),
        }
    }
}

/// The demo's [`Report`] port: each decision goes to the terminal (or JSON lines).
pub struct TerminalReport {
    reporter: Mutex<Reporter>,
    start: Instant,
    steps: usize,
}

impl TerminalReport {
    /// Reports a rollout of `steps` steps that began at `start`.
    pub fn new(mode: Mode, start: Instant, steps: usize) -> Self {
        TerminalReport {
            reporter: Mutex::new(Reporter::new(mode)),
            start,
            steps,
        }
    }
}

impl Report for TerminalReport {
    async fn report(&self, decision: &Decision) -> Result<(), ReportError> {
        let mut reporter = self
            .reporter
            .lock()
            .map_err(|_| ReportError("the reporter's lock is poisoned".into()))?;
        reporter.decision(decision, self.start.elapsed(), self.steps);
        Ok(())
    }
}

fn side(v: &SideValues) -> String {
    format!(
        "{} req {} err p99 {}",
        v.requests,
        v.error_ratio.map_or("-".into(), |r| format!("{:.2}%", r * 100.0)),
        v.p99_ms.map_or("-".into(), |m| format!("{m:.0}ms"))
    )
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
