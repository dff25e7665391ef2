//! The ports through which an observation is gathered and a decision carried out. The demo
//! implements them in-process; the cluster mode implements them with Kubernetes. They carry
//! `decide`'s typed intents and fail with typed errors that keep their cause.

use std::future::Future;
use std::time::SystemTime;

use crate::decide::{Decision, MetricsUnavailable, Reading, TrafficIntent, WorkloadState};
use crate::status::WindowMark;

/// An error from below a port: a socket, an HTTP client, the Kubernetes API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Deployments could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Reading a Deployment failed.
    #[error("reading Deployment {name}")]
    Observe {
        /// The Deployment.
        name: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Scaling a Deployment failed.
    #[error("scaling Deployment {name} to {replicas}")]
    Scale {
        /// The Deployment.
        name: String,
        /// The replicas asked for.
        replicas: u32,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The candidate no longer runs the analysed revision, so its template must not be copied.
    #[error("refusing to promote revision {analysed}: the candidate now runs {current}, which nobody analysed")]
    RevisionMismatch {
        /// The revision the rollout analysed.
        analysed: String,
        /// The candidate's revision now.
        current: String,
    },
    /// Copying the template into stable failed.
    #[error("copying revision {revision} into Deployment {name}")]
    Promote {
        /// The stable Deployment.
        name: String,
        /// The revision copied.
        revision: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

/// The route's traffic could not be set.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The route is not in the proxy config this port writes.
    #[error("no route {0:?} in the proxy config")]
    NoRoute(String),
    /// The intent cannot be written as a valid route (a weight over 10000, a bad header).
    #[error("the traffic intent for route {route} is not a valid route: {message}")]
    Invalid {
        /// The route.
        route: String,
        /// What the proxy's validation said.
        message: String,
    },
    /// Writing the config failed.
    #[error("writing route {route}")]
    Write {
        /// The route.
        route: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

/// The route's metrics could not be read: both kinds leave the analysis inconclusive.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The source could not be reached, or answered with an error.
    #[error("{source_name} is down")]
    SourceDown {
        /// Which source: a scrape target, a Prometheus URL.
        source_name: String,
        /// Why.
        #[source]
        source: BoxError,
        /// Fail-fast trips seen at the part of the source that answered, in words: a trip
        /// must stop the rollout even when another proxy cannot be read.
        trips: Vec<String>,
    },
    /// The source answered without the route's series.
    #[error("{what}")]
    NoData {
        /// What was missing, with the query or target that showed it.
        what: String,
    },
}

impl MetricsError {
    /// The plain summary `decide` records: the kind, and the whole chain of causes.
    pub fn summary(&self) -> MetricsUnavailable {
        let text = chain(self);
        match self {
            MetricsError::SourceDown { trips, .. } => MetricsUnavailable::SourceDown {
                why: text,
                trips: trips.clone(),
            },
            MetricsError::NoData { .. } => MetricsUnavailable::NoData(text),
        }
    }
}

/// An error and all its causes on one line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A decision could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("recording the decision")]
pub struct ReportError(#[source] pub BoxError);

/// The two Deployments.
pub trait Workloads {
    /// Observes (stable, candidate).
    fn observe(&self) -> impl Future<Output = Result<(WorkloadState, WorkloadState), WorkloadError>> + Send;
    /// Sets the candidate's replicas.
    fn scale_candidate(&self, replicas: u32) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    /// Sets stable's replicas: only under `maxSurge`, and to restore them after it.
    fn scale_stable(&self, replicas: u32) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    /// Copies the candidate's pod template into stable, keeping stable's selector labels. It
    /// refuses with [`WorkloadError::RevisionMismatch`] unless the candidate still runs
    /// `revision`, the analysed one. Idempotent.
    fn promote_template(&self, revision: &str) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    /// Observes an experiment's variant Deployments, in the order given.
    fn observe_variants(
        &self,
        deployments: &[String],
    ) -> impl Future<Output = Result<Vec<WorkloadState>, WorkloadError>> + Send;
    /// Copies the pod template of Deployment `from` (an experiment's winning variant) into
    /// stable, as [`Workloads::promote_template`] does the candidate's: refused unless `from`
    /// still runs `revision`, the judged one. Idempotent.
    fn promote_variant(&self, from: &str, revision: &str) -> impl Future<Output = Result<(), WorkloadError>> + Send;
}

/// The proxy's route.
pub trait Traffic {
    /// Applies the whole intent to the route in one change. Idempotent.
    fn set_traffic(&self, intent: &TrafficIntent) -> impl Future<Output = Result<(), TrafficError>> + Send;
}

/// What to read from a metrics source.
#[derive(Clone, Debug)]
pub struct MetricsQuery<'a> {
    /// The route.
    pub route: &'a str,
    /// Where the window began (from status); `None` on the first look.
    pub since: Option<&'a WindowMark>,
    /// The custom checks' PromQL, in check order.
    pub promql: &'a [String],
    /// The running experiment's users epoch (see [`crate::decide::users_epoch`]): distinct-user
    /// counts of another epoch (the last experiment's, on a proxy that has not read the route
    /// since) are not this experiment's, and are not read.
    pub users_epoch: Option<&'a str>,
    /// Now, by the controller's clock.
    pub now: SystemTime,
}

/// Where the metrics of the route come from.
pub trait Metrics {
    /// The route's window since `query.since`, where the next one starts, and the custom
    /// checks' values.
    fn read(&self, query: &MetricsQuery<'_>) -> impl Future<Output = Result<Reading, MetricsError>> + Send;
}

/// Where decisions are recorded (status, Events, a terminal).
pub trait Report {
    /// Records one decision.
    fn report(&self, decision: &Decision) -> impl Future<Output = Result<(), ReportError>> + Send;
}
