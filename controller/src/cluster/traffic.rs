//! The Rollout's route, written as the ConfigMap `weir-rollout-<name>` in its namespace,
//! labelled for its gateway and owned by the Rollout (deleting the Rollout removes the route).
//! Every proxy replica of the gateway watches it.
//!
//! Before writing, the controller merges its layer with the gateway's other route ConfigMaps
//! by the proxies' own rule ([`weir_proxy::config::merge`]): a route the proxies would reject
//! for a clash is refused here with the owner named, and nothing is written.
//!
//! The ConfigMap is the controller's alone. One whose data another field manager changed
//! (`kubectl edit`, a script) is written back at once (the Rollout owns it, so the edit
//! triggers a reconcile) and a Warning Event on the Rollout names who edited it: a hand-set
//! weight would otherwise send users to a candidate no analysis approved.

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use weir_proxy::config::{Layer, LayerId, Outcome, PartialConfig, ProxyConfig, merge, parse_partial};
use weir_proxy::source::kube::text_of;
use weir_proxy::source::layers::DATA_KEY;

use super::{FIELD_MANAGER, GATEWAY_LABEL, api_error};
use crate::decide::TrafficIntent;
use crate::ports::{Traffic, TrafficError};
use crate::route_layer::route_layer;

/// The name of a Rollout's route ConfigMap.
pub fn config_map_name(rollout: &str) -> String {
    format!("weir-rollout-{rollout}")
}

/// One Rollout's route ConfigMap.
pub struct KubeTraffic {
    /// The Rollout's namespace.
    pub api: Api<ConfigMap>,
    /// Where the gateway's other route ConfigMaps are listed (all namespaces, or the watched one).
    pub all: Api<ConfigMap>,
    /// The ConfigMap's name.
    pub name: String,
    /// The Rollout's namespace.
    pub namespace: String,
    /// The gateway label's value.
    pub gateway: String,
    /// The Rollout, as the ConfigMap's owner.
    pub owner: OwnerReference,
    /// The route's name.
    pub route: String,
    /// The route as the spec writes it; `None` when the spec is invalid, and then an intent
    /// (only ever one that closes the candidate) is applied to the route as last written.
    pub template: Option<PartialConfig>,
    /// For the Event that reports a hand edit undone.
    pub client: kube::Client,
    /// Who posts that Event.
    pub reporter: Reporter,
    /// The Rollout, which the Event is about.
    pub rollout: ObjectReference,
}

/// The reason of the Event posted when a hand edit of the route ConfigMap is undone.
pub const ROUTE_RESTORED: &str = "RouteRestored";

/// The field manager other than ours that last set the ConfigMap's data, if any: server-side
/// apply with force takes the fields back, so each edit is found once.
fn foreign_data_manager(managed: &[ManagedFieldsEntry]) -> Option<String> {
    managed
        .iter()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .find(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:data").is_some()))
        .map(|m| {
            m.manager
                .clone()
                .unwrap_or_else(|| "an unnamed field manager".to_owned())
        })
}

impl KubeTraffic {
    fn write_error(&self, source: crate::ports::BoxError) -> TrafficError {
        TrafficError::Write {
            route: self.route.clone(),
            source,
        }
    }

    /// Refuses a layer that another route ConfigMap of the gateway already claims. Returns who
    /// edited ours by hand since it was last written, if anyone did, and the resourceVersion
    /// ours was read at (none before it exists).
    async fn check_clashes(&self, layer: &PartialConfig) -> Result<(Option<String>, Option<String>), TrafficError> {
        let selector = format!("{GATEWAY_LABEL}={}", self.gateway);
        let listed = self
            .all
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.write_error(api_error(e, "list", "configmaps")))?;
        let mut layers = Vec::new();
        let mut ours = LayerId {
            // Not created yet: it will be the newest.
            created: i64::MAX,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        };
        let mut edited_by = None;
        let mut read_at = None;
        for cm in listed.items {
            let (id, text) = text_of(&cm);
            if id.namespace == ours.namespace && id.name == ours.name {
                ours.created = id.created;
                edited_by = cm.metadata.managed_fields.as_deref().and_then(foreign_data_manager);
                read_at.clone_from(&cm.metadata.resource_version);
                continue;
            }
            layers.push(Layer {
                id,
                current: parse_partial(&text.unwrap_or_default()),
                previous: None,
            });
        }
        layers.push(Layer {
            id: ours.clone(),
            current: Ok(layer.clone()),
            previous: None,
        });
        let base = ProxyConfig {
            routes: Vec::new(),
            backends: Default::default(),
            ..weir_proxy::config::parse("{}").expect("an empty config is valid")
        };
        let merged = merge(&base, &layers);
        match merged.outcomes.iter().find(|(id, _)| *id == ours) {
            Some((_, Outcome::Rejected(errors) | Outcome::KeptPrevious(errors))) => Err(TrafficError::Invalid {
                route: self.route.clone(),
                message: format!("the gateway {:?} would reject it: {errors}", self.gateway),
            }),
            _ => Ok((edited_by, read_at)),
        }
    }
}

impl KubeTraffic {
    /// The route as this ConfigMap holds it now, if it exists and is valid.
    async fn last_written(&self) -> Result<Option<PartialConfig>, TrafficError> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.write_error(api_error(e, "get", "configmaps")))?;
        let text = cm.and_then(|cm| cm.data).and_then(|mut d| d.remove(DATA_KEY));
        Ok(text.and_then(|t| parse_partial(&t).ok()))
    }
}

impl Traffic for KubeTraffic {
    async fn set_traffic(&self, intent: &TrafficIntent) -> Result<(), TrafficError> {
        let layer = match &self.template {
            Some(template) => route_layer(template, &self.route, intent)?,
            None => {
                let Some(written) = self.last_written().await? else {
                    // Never written: no proxy sends anything to this candidate.
                    return Ok(());
                };
                let Some(route) = written.routes.first().map(|r| r.name.clone()) else {
                    return Ok(());
                };
                route_layer(&written, &route, intent)?
            }
        };
        let (edited_by, read_at) = self.check_clashes(&layer).await?;
        let mut patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": { GATEWAY_LABEL: self.gateway },
                "ownerReferences": [self.owner],
            },
            "data": { DATA_KEY: layer.to_yaml() },
        });
        // Written only over the version just read: a hand edit that lands between the read
        // and this write makes it fail with a conflict, and the next reconcile reads the edit,
        // undoes it and reports it, instead of undoing it unseen.
        if let Some(version) = read_at {
            patch["metadata"]["resourceVersion"] = json!(version);
        }
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| self.write_error(api_error(e, "patch", "configmaps")))?;
        if let Some(manager) = edited_by {
            self.report_restored(&manager, intent).await;
        }
        Ok(())
    }
}

impl KubeTraffic {
    async fn report_restored(&self, manager: &str, intent: &TrafficIntent) {
        let note = format!(
            "ConfigMap {} was edited by {manager:?}; restored to the rollout's route (candidate weight {} basis \
             points). Change the Rollout, not its route ConfigMap",
            self.name, intent.weight
        );
        tracing::warn!(configmap = %self.name, %manager, "a hand edit of the route ConfigMap was undone");
        let event = Event {
            type_: EventType::Warning,
            reason: ROUTE_RESTORED.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, &self.rollout).await {
            tracing::warn!(%error, configmap = %self.name, "cannot post the RouteRestored Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(manager: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn only_another_manager_of_the_data_is_an_edit() {
        let ours = entry(FIELD_MANAGER, json!({ "f:data": { "f:config.yaml": {} } }));
        let labels = entry("kubectl-label", json!({ "f:metadata": { "f:labels": {} } }));
        assert_eq!(foreign_data_manager(&[ours.clone(), labels.clone()]), None);
        let edit = entry("kubectl-edit", json!({ "f:data": { "f:config.yaml": {} } }));
        assert_eq!(
            foreign_data_manager(&[ours, labels, edit]),
            Some("kubectl-edit".to_owned())
        );
    }
}
