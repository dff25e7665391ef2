//! weir on Kubernetes: `weir controller` and the ports it acts through. The Rollout's two
//! Deployments ([`workloads`]), its route ConfigMap ([`traffic`]), its status and Events
//! ([`report`]), one Lease for leader election ([`lease`]), and the loop over Rollouts that
//! runs the same reconcile as the demo ([`controller`]), and the finalizer that restores
//! stable when a Rollout under `maxSurge` is deleted ([`finalizer`]). Pure helpers:
//! [`revision`], [`request`].

pub mod admin;
pub mod controller;
pub mod finalizer;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({ "code": code, "message": message })).expect("a Status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_denial_names_the_verb_and_resource_and_a_conflict_says_to_read_again() {
        let denied = api_error(status(403, "configmaps is forbidden"), "patch", "configmaps");
        let text = chain(&*denied);
        assert!(
            text.contains("may not patch configmaps") && text.contains("configmaps is forbidden"),
            "{text}"
        );
        let conflict = api_error(status(409, "the object has been modified"), "patch", "rollouts/status");
        assert!(
            chain(&*conflict).contains("changed since it was read"),
            "{}",
            chain(&*conflict)
        );
    }
}
