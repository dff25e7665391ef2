//! The controller's own metrics, served on `--admin` at `/metrics` (OpenMetrics text).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::lease::Leadership;
use crate::status::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Every phase, so that `weir_rollouts` shows zeros rather than missing series.
const PHASES: [Phase; 6] = [
    Phase::Idle,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoting,
    Phase::Succeeded,
    Phase::Aborted,
];

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "Idle",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Promoting => "Promoting",
        Phase::Succeeded => "Succeeded",
        Phase::Aborted => "Aborted",
    }
}

/// The controller's metrics and the registry that serves them.
pub struct ControllerMetrics {
    /// The registry.
    pub registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
    rollouts: Family<PhaseLabels, Gauge>,
    outcomes: Family<OutcomeLabels, Counter>,
    abort_seconds: Histogram,
    phases: Mutex<BTreeMap<(String, String), Phase>>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let leader = Gauge::default();
        let rollouts = Family::<PhaseLabels, Gauge>::default();
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let abort_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "weir_controller_reconciles",
            "Reconciles by result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "weir_controller_reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "weir_controller_leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        registry.register("weir_rollouts", "Rollouts by phase", rollouts.clone());
        registry.register(
            "weir_rollout_outcomes",
            "Rollouts ended, by outcome (promoted, aborted)",
            outcomes.clone(),
        );
        registry.register(
            "weir_rollout_abort_seconds",
            "From the start of the window that failed, or the fail-fast trip, to weight 0 written",
            abort_seconds.clone(),
        );
        // Every series from 0, so that the first abort is an increase() an alert sees, not a
        // series appearing at 1.
        for outcome in ["promoted", "aborted"] {
            let _ = outcomes.get_or_create(&OutcomeLabels { outcome });
        }
        for result in ["ok", "error"] {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
        for phase in PHASES {
            rollouts
                .get_or_create(&PhaseLabels {
                    phase: phase_name(phase),
                })
                .set(0);
        }
        ControllerMetrics {
            registry,
            reconciles,
            duration,
            leader,
            rollouts,
            outcomes,
            abort_seconds,
            phases: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ControllerMetrics {
    /// One reconcile's result and time.
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&ResultLabels { result }).inc();
        self.duration.observe(seconds);
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text of every metric, with `weir_controller_leader` read from the
    /// election now: a leader with no Rollout to reconcile still says it leads, so "no leader"
    /// alerts do not fire on an idle cluster.
    pub fn encode(&self, leadership: &Leadership) -> Result<String, std::fmt::Error> {
        let leader = leadership.is_leader();
        self.set_leader(leader);
        if !leader {
            // Only the leader reconciles, so only its phases are current: a replica that lost
            // the Lease would otherwise report its last ones for ever beside the new leader's.
            self.forget_phases();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// A Rollout's phase after a reconcile (`None`: it is gone); counts an outcome when it
    /// changes into one.
    pub fn phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().expect("no panics while holding the phases");
        let key = (namespace.to_owned(), name.to_owned());
        let before = match phase {
            Some(phase) => phases.insert(key, phase),
            None => phases.remove(&key),
        };
        if let Some(now) = phase
            && before.is_some_and(|b| b != now)
        {
            match now {
                Phase::Succeeded => self
                    .outcomes
                    .get_or_create(&OutcomeLabels { outcome: "promoted" })
                    .inc(),
                Phase::Aborted => self.outcomes.get_or_create(&OutcomeLabels { outcome: "aborted" }).inc(),
                _ => 0,
            };
        }
        for p in PHASES {
            let count = phases.values().filter(|v| **v == p).count();
            self.rollouts
                .get_or_create(&PhaseLabels { phase: phase_name(p) })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Every Rollout's phase forgotten: `weir_rollouts` at 0 in every phase.
    fn forget_phases(&self) {
        self.phases.lock().expect("no panics while holding the phases").clear();
        for p in PHASES {
            self.rollouts
                .get_or_create(&PhaseLabels { phase: phase_name(p) })
                .set(0);
        }
    }

    /// The time an abort took to reach weight 0.
    pub fn aborted_in(&self, seconds: f64) {
        self.abort_seconds.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_line(text: &str) -> Option<&str> {
        text.lines().find(|l| l.starts_with("weir_controller_leader "))
    }

    #[test]
    fn the_leader_gauge_follows_the_election_without_any_reconcile() {
        let metrics = ControllerMetrics::default();
        let leadership = Leadership::default();
        let text = metrics.encode(&leadership).expect("encodes");
        assert_eq!(leader_line(&text), Some("weir_controller_leader 0"), "{text}");
        leadership.set(true);
        let text = metrics.encode(&leadership).expect("encodes");
        assert_eq!(leader_line(&text), Some("weir_controller_leader 1"), "{text}");
    }

    #[test]
    fn a_replica_that_lost_the_lease_reports_no_rollouts() {
        let metrics = ControllerMetrics::default();
        let leadership = Leadership::default();
        leadership.set(true);
        metrics.phase("models", "sentiment", Some(Phase::Progressing));
        let text = metrics.encode(&leadership).expect("encodes");
        assert!(text.contains("weir_rollouts{phase=\"Progressing\"} 1"), "{text}");
        leadership.set(false);
        let text = metrics.encode(&leadership).expect("encodes");
        assert!(text.contains("weir_rollouts{phase=\"Progressing\"} 0"), "{text}");
        // Leading again, it counts from what it reconciles next, not from before.
        leadership.set(true);
        metrics.phase("models", "sentiment", Some(Phase::Aborted));
        let text = metrics.encode(&leadership).expect("encodes");
        assert!(text.contains("weir_rollouts{phase=\"Aborted\"} 1"), "{text}");
        assert!(
            text.contains("weir_rollout_outcomes_total{outcome=\"aborted\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn outcomes_and_reconciles_are_exported_from_zero_before_any_happens() {
        let text = ControllerMetrics::default()
            .encode(&Leadership::default())
            .expect("encodes");
        for series in [
            "weir_rollout_outcomes_total{outcome=\"aborted\"} 0",
            "weir_rollout_outcomes_total{outcome=\"promoted\"} 0",
            "weir_controller_reconciles_total{result=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == series), "no {series} in\n{text}");
        }
    }
}
