//! The Rollout's route, written as the ConfigMap `weir-rollout-<name>` in its namespace,
//! labelled for its gateway and owned by the Rollout (deleting the Rollout removes the route).
//! Every proxy replica of the gateway watches it.
//!
//! Before writing, the controller merges its layer with the gateway's other route ConfigMaps
//! by the proxies' own rule ([`weir_proxy::config::merge`]): a route the proxies would reject
//! for a clash is refused here with the owner named, and nothing is written.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams};
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
}

impl KubeTraffic {
    fn write_error(&self, source: crate::ports::BoxError) -> TrafficError {
        TrafficError::Write {
            route: self.route.clone(),
            source,
        }
    }

    /// Refuses a layer that another route ConfigMap of the gateway already claims.
    async fn check_clashes(&self, layer: &PartialConfig) -> Result<(), TrafficError> {
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
        for cm in listed.items {
            let (id, text) = text_of(&cm);
            if id.namespace == ours.namespace && id.name == ours.name {
                ours.created = id.created;
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
            _ => Ok(()),
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
        self.check_clashes(&layer).await?;
        let patch = json!({
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
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| self.write_error(api_error(e, "patch", "configmaps")))?;
        Ok(())
    }
}
