//! The world a scenario's decisions act on: two Deployments, the route's traffic and one proxy
//! whose counters grow tick by tick, read as the proxy source (per-instance snapshots) or
//! Prometheus (`increase` since a time) reads them. Actions are carried out as the ports would.

use std::collections::BTreeSet;
use std::time::SystemTime;

use arbitrary::Arbitrary;
use weir::counters::{Buckets, Counters, InstanceCounters, SideCounters, Snapshot};
use weir::decide::{Action, MetricsUnavailable, Reading, WorkloadState};
use weir::rollout::RolloutSpec;
use weir::status::{RolloutStatus, WindowMark, micro_time};
use weir_proxy::metrics::LATENCY_BUCKETS;

use super::TickIn;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum MetricsIn {
    Ok,
    SourceDown,
    SourceDownWithTrip,
    NoData,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum WorldEvent {
    Nothing,
    /// The candidate Deployment gets a new template.
    NewCandidate {
        ready: bool,
    },
    /// Someone sets stable's template: to the candidate's, or to another.
    StableChanged {
        to_candidate: bool,
    },
    /// Stable's rollout finishes (after a promotion copied the template).
    StableRolledOut,
    /// Pods that were scaled become ready.
    PodsReady,
    /// An HPA appears on stable.
    Autoscaler,
    /// The proxy restarts: its counters start again from zero.
    ProxyRestart,
    /// The proxy keeps serving the previous weight for a while.
    ProxyLags,
    /// The candidate Deployment is deleted, or comes back.
    CandidateGone,
}

pub(crate) fn workload(hash: &str, replicas: u32) -> WorkloadState {
    WorkloadState {
        exists: true,
        template_hash: hash.into(),
        replicas,
        ready_replicas: replicas,
        pods: replicas,
        rolled_out: true,
        autoscaler: None,
    }
}

/// Observations all in one latency bucket.
pub(crate) fn buckets(n: u64, bucket: usize) -> Buckets {
    let bounds: Vec<f64> = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]).collect();
    let cumulative = (0..bounds.len()).map(|i| if i >= bucket { n } else { 0 }).collect();
    Buckets { bounds, cumulative }
}

/// The rollout's world: two Deployments, the route's traffic, one proxy.
pub(crate) struct World {
    pub(crate) stable: WorkloadState,
    pub(crate) candidate: WorkloadState,
    pub(crate) weight: u16,
    pub(crate) preview: bool,
    /// The weight the proxy serves (it may lag the one written).
    pub(crate) served: u16,
    /// The proxy's cumulative counters since it started, and when it started.
    pub(crate) counters: Counters,
    pub(crate) started_at: f64,
    /// Every count ever, never reset (what Prometheus' `increase` sees), with when.
    pub(crate) history: Vec<(SystemTime, Counters)>,
    pub(crate) total: Counters,
    pub(crate) revisions: u32,
    /// Revisions that entered `Promoting` through a pass or a person's request.
    pub(crate) promotable: BTreeSet<String>,
}

pub(crate) fn add_side(side: &mut SideCounters, n: u64, errors: u64, cancelled: u64, bucket: usize) {
    side.requests = side.requests.saturating_add(n);
    side.errors = side.errors.saturating_add(errors.min(n));
    side.cancelled = side.cancelled.saturating_add(cancelled.min(n - errors.min(n)));
    let latency = buckets(n, bucket);
    side.latency.add(&latency);
    side.first_byte.add(&buckets(n, bucket.saturating_sub(2)));
}

impl World {
    pub(crate) fn serve(&mut self, tick: &TickIn, seconds: u64) {
        let per_second = u64::from(tick.rate) * 10;
        let n = per_second
            .saturating_mul(seconds)
            .saturating_add(tick.burst.unwrap_or(0));
        let share = if self.preview {
            0.05
        } else {
            f64::from(self.served) / 10_000.0
        };
        let to_candidate = ((n as f64) * share).round() as u64;
        let to_stable = n - to_candidate.min(n);
        let per_mille = |n: u64, rate: u8| ((n as u128 * u128::from(rate.min(200))) / 1000) as u64;
        let candidate_bucket = usize::from(tick.candidate_latency) % (LATENCY_BUCKETS.len() + 1);
        for counters in [&mut self.counters, &mut self.total] {
            add_side(
                &mut counters.stable,
                to_stable,
                per_mille(to_stable, tick.stable_errors),
                0,
                7,
            );
            add_side(
                &mut counters.candidate,
                to_candidate,
                per_mille(to_candidate, tick.candidate_errors),
                per_mille(to_candidate, tick.cancelled),
                candidate_bucket,
            );
            counters.fail_fast_trips = counters.fail_fast_trips.saturating_add(u64::from(tick.trips % 4 / 3));
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            taken_at: 0.0,
            instances: [(
                "p".to_owned(),
                InstanceCounters {
                    started_at: Some(self.started_at),
                    counters: self.counters.clone(),
                    weight: Some(self.served),
                },
            )]
            .into(),
        }
    }

    /// What the metrics source reads, given where status says the window starts.
    pub(crate) fn reading(
        &self,
        spec: &RolloutSpec,
        status: &RolloutStatus,
        now: SystemTime,
        tick: &TickIn,
    ) -> Result<Reading, MetricsUnavailable> {
        match tick.metrics {
            MetricsIn::SourceDown => {
                return Err(MetricsUnavailable::SourceDown {
                    why: "connection refused".into(),
                    trips: Vec::new(),
                });
            }
            MetricsIn::SourceDownWithTrip => {
                return Err(MetricsUnavailable::SourceDown {
                    why: "one proxy down".into(),
                    trips: vec!["proxy p tripped".into()],
                });
            }
            MetricsIn::NoData => return Err(MetricsUnavailable::NoData("no series".into())),
            MetricsIn::Ok => {}
        }
        let since = status.evidence.as_ref().and_then(|e| e.window_start.as_ref());
        if spec.analysis.source.prometheus.is_some() {
            let window = since.map(|mark| {
                let at = weir::status::system_time(&mark.at);
                let then = self
                    .history
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= at)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                self.total.checked_since(&then).unwrap_or_else(|| self.total.clone())
            });
            let promql = spec
                .analysis
                .checks
                .iter()
                .filter(|c| c.promql.is_some())
                .map(|_| match tick.trips % 3 {
                    0 => Ok(0.5),
                    1 => Ok(2.0),
                    _ => Err("no value".to_owned()),
                })
                .collect();
            return Ok(Reading {
                window,
                mark: WindowMark {
                    at: micro_time(now),
                    instances: None,
                },
                promql,
                trips: Vec::new(),
            });
        }
        let snapshot = self.snapshot();
        Ok(Reading {
            window: since
                .and_then(|m| m.instances.as_ref())
                .map(|earlier| snapshot.increase_since(earlier)),
            mark: WindowMark {
                at: micro_time(now),
                instances: Some(snapshot),
            },
            promql: Vec::new(),
            trips: Vec::new(),
        })
    }

    /// Carries out `actions` as the ports would; false when the promotion port refuses (the
    /// candidate no longer runs the revision), which stops the actions after it.
    pub(crate) fn apply(&mut self, actions: &[Action], slow_pods: bool) -> bool {
        for action in actions {
            match action {
                Action::SetTraffic(intent) => {
                    self.weight = intent.weight;
                    self.preview = intent.preview.is_some();
                }
                Action::ScaleCandidate(n) => {
                    self.candidate.replicas = *n;
                    if !slow_pods {
                        self.candidate.ready_replicas = *n;
                        self.candidate.pods = *n;
                    }
                }
                Action::ScaleStable(n) => {
                    self.stable.replicas = *n;
                    if !slow_pods {
                        self.stable.ready_replicas = *n;
                        self.stable.pods = *n;
                    }
                }
                Action::PromoteTemplate { revision } => {
                    if *revision != self.candidate.template_hash {
                        return false;
                    }
                    assert!(
                        self.promotable.contains(revision),
                        "stable took revision {revision}, which never entered Promoting by a pass or a request"
                    );
                    self.stable.template_hash = revision.clone();
                    self.stable.rolled_out = slow_pods;
                }
                Action::PromoteVariant { .. } => panic!("a canary never promotes an experiment's variant"),
            }
        }
        true
    }

    pub(crate) fn event(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::Nothing => {}
            WorldEvent::NewCandidate { ready } => {
                self.revisions += 1;
                self.candidate.template_hash = format!("c{}", self.revisions);
                self.candidate.exists = true;
                self.candidate.rolled_out = ready;
                if !ready {
                    self.candidate.ready_replicas = 0;
                }
            }
            WorldEvent::StableChanged { to_candidate } => {
                self.stable.template_hash = if to_candidate {
                    self.candidate.template_hash.clone()
                } else {
                    self.revisions += 1;
                    format!("s{}", self.revisions)
                };
            }
            WorldEvent::StableRolledOut => self.stable.rolled_out = true,
            WorldEvent::PodsReady => {
                for w in [&mut self.stable, &mut self.candidate] {
                    w.ready_replicas = w.replicas;
                    w.pods = w.replicas;
                    w.rolled_out = true;
                }
            }
            WorldEvent::Autoscaler => self.stable.autoscaler = Some("stable-hpa".into()),
            WorldEvent::ProxyRestart => {
                self.counters = Counters::default();
                self.started_at += 1.0;
            }
            WorldEvent::ProxyLags => {}
            WorldEvent::CandidateGone => self.candidate.exists = !self.candidate.exists,
        }
    }
}
