//! A step running or paused: capacity before weight, the analyses, the step's advance, the
//! progress deadline and the fail-fast abort. Part of [`decide`](super); pure.
//!
//! Windows are kept honest here. The weight a window is judged at is the weight status
//! recorded before it; whenever the weight applied changes (a new step, a spec edited
//! mid-step, capacity arriving), the step starts again from that moment: a new window from a
//! fresh baseline, a warm-up, a new hold. A window in which the proxies were seen serving
//! another weight (a config still on its way, a write that landed after a crash) is shown,
//! not judged.

use std::time::{Duration, SystemTime};

use super::{Ctx, reasons};
use crate::counters::Counters;
use crate::judge::{self, Judgement, Mode};
use crate::rollout::validate::ValidSpec;
use crate::status::{AnalysisRecord, Evidence, Phase, Verb, VerdictKind, micro_time, system_time};

impl Ctx<'_> {
    /// A step running or paused: analyses go on either way (a candidate shown to be worse is
    /// aborted even while paused); only a running step advances.
    pub(super) fn running(&mut self, spec: &ValidSpec, mut paused: bool, verb: Option<Verb>) {
        match verb {
            Some(Verb::Abort) => return self.abort(spec, "aborted on request".into()),
            Some(Verb::Promote) => return self.start_promotion(spec, "promoted on request"),
            Some(Verb::Pause) if !paused => {
                paused = true;
                self.next.phase = Phase::Paused;
                self.next.message = format!("{}: paused on request", self.step_label(spec));
                self.condition("Progressing", "False", reasons::ROLLOUT_PAUSED, "paused on request");
                self.event(reasons::ROLLOUT_PAUSED, self.next.message.clone(), false);
            }
            Some(Verb::Resume) if paused => {
                // The hold and the deadline start over: what was seen before is old news.
                paused = false;
                self.next.phase = Phase::Progressing;
                self.next.step_started_at = Some(micro_time(self.now));
                self.next.last_conclusive_at = Some(micro_time(self.now));
                self.next.step_passed = false;
                self.next.message = format!("{}: resumed", self.step_label(spec));
                self.condition("Progressing", "True", reasons::ROLLOUT_RESUMED, "");
                self.event(reasons::ROLLOUT_RESUMED, self.next.message.clone(), false);
            }
            _ => {}
        }

        // Under maxSurge weir sets stable's replicas; an autoscaler that appeared since the
        // start, or anyone else changing them, would fight it, with the fleet mid-walk.
        if let (Some(_), Some(hpa)) = (spec.max_surge, &self.obs.stable.autoscaler) {
            let why = super::scaling::surge_with_autoscaler(hpa, &spec.stable);
            return self.abort(spec, why);
        }
        if let Some(why) = self.stable_changed_by_others(spec) {
            return self.abort(spec, why);
        }

        // A fail-fast trip means the proxy already cut the candidate off; the rollout cannot
        // judge it any more (it gets no traffic), so it aborts now, with the proxy's numbers.
        if let Some(detail) = self.tripped() {
            return self.abort(spec, format!("the proxy's fail-fast tripped: {detail}"));
        }
        if let Some(why) = self.closed_without_record() {
            return self.abort(spec, why);
        }

        let waiting = self.step_traffic(spec, paused);
        // Stable's size changing (under maxSurge, or restored when it is removed) changes its
        // load per pod: the window starts again, as for a weight change, so that no window is
        // judged across it. Compared with status, so a write whose record a crash lost counts.
        let stable_resized = self.next.stable_scaled_to != self.old.stable_scaled_to;
        if self.next.candidate_weight != self.old.candidate_weight || stable_resized {
            self.restart_step(spec);
            self.next.message = format!("{}: started", self.step_label(spec));
        }
        // The candidate is judged at whatever weight it serves, also while the next step
        // waits for its pods: a wait (no GPU free) can be long, and a candidate that starts
        // failing meanwhile is aborted as at any other time. A pass at the old weight is no
        // progress of this step, though: the deadline runs on.
        let conclusive_before = self.next.last_conclusive_at.clone();
        if self.analyse(spec) {
            return;
        }
        if waiting.is_some() {
            self.next.last_conclusive_at = conclusive_before;
        }
        if let Some(wait) = &waiting {
            self.next.message = format!("{}: {wait}", self.step_label(spec));
        }
        let started = self.step_started();
        if !paused {
            let since = self
                .next
                .last_conclusive_at
                .as_ref()
                .map(system_time)
                .unwrap_or(started)
                .max(started);
            if self.now >= since + spec.analysis.progress_deadline {
                return self.pause_at_deadline(spec);
            }
            // The pass must come from a window that reaches the end of the hold: an earlier
            // pass would promote on data that stops short of it.
            let hold_ends = started + self.hold(spec);
            let judged_to_the_end = self
                .next
                .last_analysis
                .as_ref()
                .is_some_and(|a| system_time(&a.at) >= hold_ends);
            if waiting.is_none() && self.now >= hold_ends && self.next.step_passed && judged_to_the_end {
                return self.advance(spec);
            }
        }
        self.requeue_after = self.wake(spec, paused);
        if waiting.is_some() && spec.max_surge.is_some() {
            // A walk under maxSurge moves a pod at a time, and the proxies taking a weight
            // (which lets stable give up a pod) fires no watch event: look again soon.
            self.requeue_after = self.requeue_after.min(Duration::from_secs(1));
        }
    }

    /// The weight applied has just changed: the step starts again from now, with a new window
    /// from a fresh baseline, a warm-up, a new hold and a new deadline.
    fn restart_step(&mut self, spec: &ValidSpec) {
        self.next.step_started_at = Some(micro_time(self.now));
        self.next.last_conclusive_at = Some(micro_time(self.now));
        self.next.step_passed = false;
        let mark = self.mark();
        let evidence = self
            .next
            .evidence
            .get_or_insert_with(|| judge::new_evidence(&spec.analysis));
        evidence.step = Counters::default();
        for test in [
            &mut evidence.errors,
            &mut evidence.cancellations,
            &mut evidence.latency,
            &mut evidence.first_byte,
        ] {
            test.begin_step();
        }
        // Metrics that cannot be read now keep the older mark: the warm-up discards a window
        // that spans the change, but a fail-fast trip counted since that mark must still be
        // seen, which a window with no start would never do.
        // Without a warm-up, the first look then only sets the mark.
        let kept_older = mark.is_none();
        if mark.is_some() {
            evidence.window_start = mark;
        }
        evidence.warming_up = !spec.analysis.warmup.is_zero() || kept_older;
    }

    /// Runs the analysis if one is due; true if it ended the step (an abort).
    pub(super) fn analyse(&mut self, spec: &ValidSpec) -> bool {
        let mut evidence = self
            .next
            .evidence
            .clone()
            .unwrap_or_else(|| judge::new_evidence(&spec.analysis));
        if self.now < self.next_analysis(spec, &evidence) {
            return false;
        }
        let record = |verdict, judged, reason: String, values| AnalysisRecord {
            at: micro_time(self.now),
            verdict,
            judged,
            reason,
            values,
        };
        let reading = match &self.obs.metrics {
            Err(unavailable) => {
                self.inconclusive(spec, unavailable.to_string());
                return false;
            }
            Ok(reading) => reading,
        };
        let Some(window) = &reading.window else {
            evidence.window_start = Some(reading.mark.clone());
            self.next.evidence = Some(evidence);
            self.inconclusive(spec, "first look at the metrics: measuring from now".into());
            return false;
        };
        let expected = self.old.candidate_weight;
        let seen = |m: &crate::status::WindowMark| m.instances.as_ref().map(|s| s.weights()).unwrap_or_default();
        let mut weights = evidence.window_start.as_ref().map(seen).unwrap_or_default();
        weights.extend(seen(&reading.mark));
        weights.sort_unstable();
        weights.dedup();
        let settled = weights.iter().all(|w| *w == expected);
        let evidence_was_warming = evidence.warming_up;
        if evidence_was_warming || !settled {
            evidence.warming_up = false;
            evidence.window_start = Some(reading.mark.clone());
            self.next.evidence = Some(evidence);
            self.next.step_passed = false;
            let values = judge::observed(window);
            let why = if evidence_was_warming {
                "warm-up after the weight change".to_owned()
            } else {
                let seen: Vec<String> = weights.iter().map(|w| super::percent(*w)).collect();
                format!(
                    "the proxies served {} in this window, not only {}",
                    seen.join(", "),
                    super::percent(expected)
                )
            };
            let reason = format!("{why}: observed, not judged; {}", judge::summary(&values));
            self.record(spec, record(VerdictKind::Inconclusive, false, reason, values));
            return false;
        }
        // By the weight served in the window, not by the step: a step waiting for pods still
        // serves the one before. At weight 0 only override traffic (a preview's testers)
        // reaches the candidate, which is no sample to compare with production.
        let mode = match expected {
            0 => Mode::Preview,
            weir_proxy::split::BASIS_POINTS => Mode::AgainstReference,
            _ => Mode::Concurrent,
        };
        let Judgement {
            verdict,
            decisive,
            reason,
            values,
            evidence: mut judged,
            checked,
        } = judge::judge(&spec.analysis, &evidence, window, &reading.promql, mode);
        judged.window_start = Some(reading.mark.clone());
        self.next.evidence = Some(judged);
        if verdict != VerdictKind::Inconclusive {
            self.next.last_conclusive_at = Some(micro_time(self.now));
        }
        self.record(spec, record(verdict, true, reason.clone(), values));
        match verdict {
            VerdictKind::Fail if decisive => {
                self.abort(spec, reason);
                return true;
            }
            VerdictKind::Fail => {
                self.next.failed_checks = self.old.failed_checks + 1;
                self.next.step_passed = false;
                if self.next.failed_checks >= spec.analysis.failure_limit {
                    let why = format!("{} consecutive failed checks: {reason}", self.next.failed_checks);
                    self.abort(spec, why);
                    return true;
                }
                self.event(reasons::ANALYSIS_FAILED, reason, true);
            }
            VerdictKind::Inconclusive => self.next.step_passed = false,
            VerdictKind::Pass => self.next.step_passed = true,
        }
        // A window whose guardrails were all checked and held ends a run of failures, pass or
        // not (a step waiting for power is still a good window).
        if checked {
            self.next.failed_checks = 0;
        }
        false
    }

    /// An analysis with nothing to judge: no metrics, or only a baseline to measure from.
    fn inconclusive(&mut self, spec: &ValidSpec, reason: String) {
        self.next.step_passed = false;
        let record = AnalysisRecord {
            at: micro_time(self.now),
            verdict: VerdictKind::Inconclusive,
            judged: true,
            reason,
            values: Default::default(),
        };
        self.record(spec, record);
    }

    pub(super) fn record(&mut self, spec: &ValidSpec, record: AnalysisRecord) {
        self.next.message = format!("{}: {}", self.step_label(spec), record.reason);
        self.next.last_analysis = Some(record.clone());
        self.analysis = Some(record);
    }

    /// When the next analysis is due: the end of the warm-up, or an interval after the last
    /// analysis of this step (or after its start), or the end of the hold if that comes first,
    /// so that the window that ends the step reaches its end.
    pub(super) fn next_analysis(&self, spec: &ValidSpec, evidence: &Evidence) -> SystemTime {
        let started = self.step_started();
        if evidence.warming_up {
            return started + spec.analysis.warmup;
        }
        let last = self
            .next
            .last_analysis
            .as_ref()
            .map(|a| system_time(&a.at))
            .filter(|t| *t >= started);
        let regular = last.unwrap_or(started) + spec.analysis.interval;
        let hold_ends = started + self.hold(spec);
        if last.is_none_or(|l| l < hold_ends) && hold_ends < regular {
            hold_ends.max(started + spec.analysis.warmup)
        } else {
            regular
        }
    }

    /// When to look again: the next analysis, the end of the hold, the deadline, and never
    /// later than an interval, so that a fail-fast trip is seen within one.
    pub(super) fn wake(&self, spec: &ValidSpec, paused: bool) -> Duration {
        let evidence = self.next.evidence.clone().unwrap_or_default();
        let started = self.step_started();
        let mut wake = self.next_analysis(spec, &evidence);
        if !paused && let Some(since) = self.next.last_conclusive_at.as_ref().map(system_time) {
            wake = wake.min(since.max(started) + spec.analysis.progress_deadline);
        }
        wake.duration_since(self.now)
            .unwrap_or(Duration::ZERO)
            .min(spec.analysis.interval)
    }

    pub(super) fn first_look(&self, spec: &ValidSpec) -> Duration {
        let evidence = self.next.evidence.clone().unwrap_or_default();
        self.next_analysis(spec, &evidence)
            .duration_since(self.now)
            .unwrap_or(Duration::ZERO)
            .min(spec.analysis.interval)
    }

    pub(super) fn advance(&mut self, spec: &ValidSpec) {
        let passed = self.power_note();
        let last_step = self.next.step as usize + 1 >= spec.strategy.step_count();
        if last_step {
            return self.start_promotion(spec, &format!("all steps passed{passed}"));
        }
        let finished = self.step_label(spec);
        if let Some(evidence) = self.next.evidence.as_mut() {
            // Stable's windows of the step just passed are what the candidate is held to once
            // stable takes no traffic; a step in which stable had too little keeps the older.
            let step = &evidence.step;
            if step.stable.requests >= spec.analysis.min_requests {
                // In floating point: counts read from a proxy's page can be anything up to
                // u64::MAX, and their sum must not wrap.
                let (stable, candidate) = (step.stable.requests as f64, step.candidate.requests as f64);
                evidence.reference_share = Some(stable / (stable + candidate));
                evidence.reference = Some(step.stable.clone());
            }
        }
        self.next.step += 1;
        let waiting = self.step_traffic(spec, false);
        // The new step starts now, whether its weight is applied now or once the candidate
        // has the capacity for it (then it starts again at that moment).
        self.restart_step(spec);
        self.next.message = match waiting {
            Some(wait) => format!("{}: {wait}", self.step_label(spec)),
            None => format!("{}: started", self.step_label(spec)),
        };
        self.event(
            reasons::STEP_ADVANCED,
            format!("{finished} passed{passed}; {}", self.next.message),
            false,
        );
        self.requeue_after = self.first_look(spec);
    }

    /// ` with N candidate requests (M needed to catch ...)`, from the last analysis.
    pub(super) fn power_note(&self) -> String {
        self.next
            .last_analysis
            .as_ref()
            .and_then(|a| a.values.power.as_ref())
            .map(|p| {
                format!(
                    " with {} candidate requests ({} needed for 80% power against {})",
                    p.requests, p.needed, p.against
                )
            })
            .unwrap_or_default()
    }

    pub(super) fn pause_at_deadline(&mut self, spec: &ValidSpec) {
        let why = if self.next.message.contains("waiting for") {
            self.next
                .message
                .split_once(": ")
                .map_or(self.next.message.clone(), |(_, why)| why.to_owned())
        } else {
            self.next
                .last_analysis
                .as_ref()
                .map_or_else(|| "no analysis yet".to_owned(), |a| a.reason.clone())
        };
        let deadline = humantime::format_duration(spec.analysis.progress_deadline);
        let message = format!("no conclusive analysis for {deadline}: {why}");
        self.next.phase = Phase::Paused;
        self.next.message = format!("{}: paused, {message}; `weir resume` goes on", self.step_label(spec));
        self.condition("Progressing", "False", reasons::PROGRESS_DEADLINE_EXCEEDED, &message);
        self.event(reasons::PROGRESS_DEADLINE_EXCEEDED, self.next.message.clone(), true);
        self.requeue_after = spec.analysis.interval;
    }
}
