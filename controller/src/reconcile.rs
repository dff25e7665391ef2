//! One reconcile, the same for every set of ports: observe (the Deployments, the route's
//! metrics since the window start in status), decide (the pure policy), act (each action in
//! order, stopping at the first failure), report. The demo and the Kubernetes controller differ
//! only in the ports they pass in.
//!
//! A failed act leaves the status unwritten, as a crash between act and report would: every
//! action is idempotent and the next reconcile decides again from the same status, so a step is
//! neither skipped nor repeated.

use std::time::SystemTime;

use crate::decide::{Action, Decision, Observation, decide};
use crate::ports::{Metrics, MetricsQuery, Report, ReportError, Traffic, TrafficError, WorkloadError, Workloads};
use crate::rollout::RolloutSpec;
use crate::status::{RolloutStatus, UserRequest};

/// A reconcile that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Deployments could not be observed.
    #[error("observing the Deployments")]
    Observe(#[source] WorkloadError),
    /// An action on the Deployments failed; later actions did not run.
    #[error("carrying out the decision")]
    Workloads(#[source] WorkloadError),
    /// Setting the route's traffic failed; later actions did not run.
    #[error("setting traffic")]
    Traffic(#[source] TrafficError),
    /// The decision was carried out but could not be recorded.
    #[error("reporting")]
    Report(#[source] ReportError),
}

/// The ports of one rollout.
#[derive(Debug)]
pub struct Reconciler<W, T, M, R> {
    /// The two Deployments.
    pub workloads: W,
    /// The route.
    pub traffic: T,
    /// The route's metrics.
    pub metrics: M,
    /// Where decisions go.
    pub report: R,
}

/// What a reconcile starts from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The Rollout's spec.
    pub spec: &'a RolloutSpec,
    /// Its status as last written.
    pub status: &'a RolloutStatus,
    /// The latest request of a person.
    pub request: Option<UserRequest>,
    /// The Rollout's generation.
    pub generation: Option<i64>,
    /// Now.
    pub now: SystemTime,
}

impl<W: Workloads, T: Traffic, M: Metrics, R: Report> Reconciler<W, T, M, R> {
    /// Observes, decides, acts and reports once; returns the decision (its status is the one
    /// to start from next time, its `requeue_after` when).
    pub async fn reconcile(&self, input: Input<'_>) -> Result<Decision, ReconcileError> {
        let (stable, candidate) = self.workloads.observe().await.map_err(ReconcileError::Observe)?;
        let variant_deployments: Vec<String> = input
            .spec
            .strategy
            .experiment
            .iter()
            .flat_map(|e| e.variants.iter().map(|v| v.side.deployment.clone()))
            .collect();
        let variants = if variant_deployments.is_empty() {
            Vec::new()
        } else {
            self.workloads
                .observe_variants(&variant_deployments)
                .await
                .map_err(ReconcileError::Observe)?
        };
        let promql: Vec<String> = input
            .spec
            .analysis
            .checks
            .iter()
            .filter_map(|c| c.promql.clone())
            .collect();
        let users_epoch = crate::decide::users_epoch(input.status);
        let query = MetricsQuery {
            route: input.spec.route.name.as_deref().unwrap_or_default(),
            since: input.status.evidence.as_ref().and_then(|e| e.window_start.as_ref()),
            promql: &promql,
            users_epoch: users_epoch.as_deref(),
            now: input.now,
        };
        let metrics = self.metrics.read(&query).await.map_err(|error| {
            let summary = error.summary();
            tracing::warn!(route = ?input.spec.route.name, %summary, "metrics unavailable; the analysis is inconclusive");
            summary
        });
        let observation = Observation {
            generation: input.generation,
            stable,
            candidate,
            metrics,
            request: input.request,
            variants,
        };
        let decision = decide(input.spec, input.status, &observation, input.now);
        tracing::debug!(
            stable = ?observation.stable,
            candidate = ?observation.candidate,
            actions = ?decision.actions,
            "decided"
        );
        act(&decision.actions, &self.workloads, &self.traffic).await?;
        if decision.status.step != input.status.step {
            crate::crash::point(&format!("before-status-step={}", decision.status.step + 1));
        }
        self.report.report(&decision).await.map_err(ReconcileError::Report)?;
        Ok(decision)
    }
}

/// Carries out a decision's actions, in order, stopping at the first failure: a later action
/// must never run when an earlier one (weight to zero before scaling down) did not.
pub async fn act<W: Workloads, T: Traffic>(
    actions: &[Action],
    workloads: &W,
    traffic: &T,
) -> Result<(), ReconcileError> {
    for action in actions {
        match action {
            Action::SetTraffic(intent) => {
                traffic.set_traffic(intent).await.map_err(ReconcileError::Traffic)?;
                crate::crash::point(&format!("weight={}", intent.weight));
            }
            Action::ScaleCandidate(replicas) => workloads
                .scale_candidate(*replicas)
                .await
                .map_err(ReconcileError::Workloads)?,
            Action::ScaleStable(replicas) => workloads
                .scale_stable(*replicas)
                .await
                .map_err(ReconcileError::Workloads)?,
            Action::PromoteTemplate { revision } => {
                workloads
                    .promote_template(revision)
                    .await
                    .map_err(ReconcileError::Workloads)?;
                crate::crash::point("promote");
            }
            Action::PromoteVariant { deployment, revision } => {
                workloads
                    .promote_variant(deployment, revision)
                    .await
                    .map_err(ReconcileError::Workloads)?;
                crate::crash::point("promote");
            }
        }
    }
    Ok(())
}
