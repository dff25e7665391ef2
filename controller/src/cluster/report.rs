//! Where a Rollout's decisions go: its status, written with server-side apply through the
//! status subresource (only if the Rollout is still the version the decision was made from),
//! then its Events, each with the verdict's numbers.
//!
//! Events follow the status write: a controller that dies between its acts and this write
//! decides again from the old status and posts the Events once, when that decision is written.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use serde_json::json;

use weir_proxy::source::kube::truncate;

use super::{FIELD_MANAGER, api_error};
use crate::decide::Decision;
use crate::ports::{Report, ReportError};
use crate::rollout::Rollout;

/// How long one Event may take to post.
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One Rollout's status and Events.
pub struct KubeReport {
    /// The Rollout's namespace.
    pub api: Api<Rollout>,
    /// For Events.
    pub client: kube::Client,
    /// Who posts the Events.
    pub reporter: Reporter,
    /// The Rollout.
    pub name: String,
    /// The Rollout's resourceVersion when it was read: a status written from an older read
    /// is refused by the API server (409), and the next reconcile reads again.
    pub resource_version: Option<String>,
    /// The Rollout, for the Events.
    pub reference: ObjectReference,
}

impl KubeReport {
    /// Writes `status` fields (as JSON) to the Rollout's status.
    pub async fn write_status(&self, status: serde_json::Value) -> Result<(), ReportError> {
        let mut metadata = json!({ "name": self.name });
        if let Some(version) = &self.resource_version {
            metadata["resourceVersion"] = json!(version);
        }
        let patch = json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": metadata,
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| ReportError(api_error(e, "patch", "rollouts/status")))?;
        Ok(())
    }
}

impl Report for KubeReport {
    async fn report(&self, decision: &Decision) -> Result<(), ReportError> {
        let mut status = decision.status.clone();
        let generation = status.observed_generation;
        super::reconciled_condition(&mut status.conditions, true, "", generation);
        let status = serde_json::to_value(&status).map_err(|e| ReportError(Box::new(e)))?;
        self.write_status(status).await?;
        for event in &decision.events {
            let posted = KubeEvent {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.into(),
                note: Some(truncate(&event.message, 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            // A recorder of its own per Event: one that saw this reason on this object would
            // only count it again, keeping the first note.
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            match tokio::time::timeout(EVENT_TIMEOUT, recorder.publish(&posted, &self.reference)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, rollout = %self.name, reason = event.reason, "cannot post an Event")
                }
                Err(_) => tracing::warn!(rollout = %self.name, reason = event.reason, "posting an Event timed out"),
            }
        }
        Ok(())
    }
}
