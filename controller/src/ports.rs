//! The ports through which a decision is carried out and an observation gathered. The demo
//! implements them in-process; the cluster mode implements them with Kubernetes.

use std::future::Future;

use crate::decide::{Action, Decision, WorkloadState};
use crate::judge::Counters;

/// A port operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct PortError {
    /// What was being done, like `scale candidate`.
    pub operation: &'static str,
    /// Why it failed.
    pub message: String,
}

/// The two Deployments.
pub trait Workloads {
    /// Observes (stable, candidate).
    fn observe(&self) -> impl Future<Output = Result<(WorkloadState, WorkloadState), PortError>> + Send;
    /// Sets the candidate's replicas.
    fn scale_candidate(&self, replicas: u32) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Copies the candidate's pod template into stable. Idempotent.
    fn promote_template(&self) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The proxy's route.
pub trait Traffic {
    /// Sets the candidate weight (basis points) and the preview override. Idempotent.
    fn set_traffic(&self, weight: u16, preview: bool) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Where the metrics of the route come from.
pub trait Metrics {
    /// Cumulative counters of both sides, or why they are unavailable.
    fn counters(&self) -> impl Future<Output = Result<Counters, String>> + Send;
}

/// Where decisions are recorded (status, Events, a terminal).
pub trait Report {
    /// Records one decision.
    fn report(&self, decision: &Decision) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Carries out a decision's actions, in order, stopping at the first failure: a later action
/// must never run when an earlier one (weight to zero before scaling down) did not.
pub async fn act<W: Workloads, T: Traffic>(actions: &[Action], workloads: &W, traffic: &T) -> Result<(), PortError> {
    for action in actions {
        match action {
            Action::SetTraffic { weight, preview } => traffic.set_traffic(*weight, *preview).await?,
            Action::ScaleCandidate(replicas) => workloads.scale_candidate(*replicas).await?,
            Action::PromoteTemplate => workloads.promote_template().await?,
        }
    }
    Ok(())
}
