//! weir on Kubernetes: `weir controller` and the ports it acts through. The Rollout's two
//! Deployments ([`workloads`]), its route ConfigMap ([`traffic`]), its status and Events
//! ([`report`]), one Lease for leader election ([`lease`]), and the loop over Rollouts that
//! runs the same reconcile as the demo ([`controller`]). Pure helpers: [`revision`],
//! [`request`].

pub mod admin;
pub mod controller;
pub mod lease;
pub mod metrics;
pub mod report;
pub mod request;
pub mod revision;
pub mod targets;
pub mod traffic;
pub mod workloads;

use crate::ports::BoxError;
pub use crate::ports::chain;

/// The field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "weir";

/// The label that ties a route ConfigMap to its gateway's proxies.
pub const GATEWAY_LABEL: &str = "weir.dev/gateway";

/// An API error with what was attempted: a denial names the verb and resource that RBAC is
/// missing, a conflict says that the object changed since it was read.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// RBAC refused.
    #[error("forbidden: the controller's account may not {verb} {resource} (grant it in its Role): {message}")]
    Forbidden {
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The API server's message.
        message: String,
    },
    /// The object changed since it was read.
    #[error("conflict: {resource} changed since it was read; the next reconcile reads it again")]
    Conflict {
        /// The resource.
        resource: &'static str,
    },
    /// Anything else.
    #[error("{verb} {resource}")]
    Other {
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// `error` from `verb` on `resource`, boxed for a port's error.
pub fn api_error(error: kube::Error, verb: &'static str, resource: &'static str) -> BoxError {
    Box::new(match error {
        kube::Error::Api(status) if status.code == 403 => ApiError::Forbidden {
            verb,
            resource,
            message: status.message.clone(),
        },
        kube::Error::Api(status) if status.code == 409 => ApiError::Conflict { resource },
        source => ApiError::Other { verb, resource, source },
    })
}

/// Sets the condition `Reconciled`: whether the last reconcile carried out its decision, and if
/// not, why.
pub fn reconciled_condition(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    acted: bool,
    why: &str,
    generation: Option<i64>,
) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    crate::status::set_condition(
        conditions,
        Condition {
            type_: "Reconciled".into(),
            status: if acted { "True" } else { "False" }.into(),
            reason: if acted { "Acted" } else { "ActFailed" }.into(),
            message: why.into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            observed_generation: generation,
        },
    );
}
