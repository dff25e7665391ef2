//! The two Deployments of a Rollout, through the API server: observed fresh on every
//! reconcile (with the HorizontalPodAutoscaler that scales stable, if any), the candidate
//! scaled with server-side apply (field manager `weir`), stable scaled under `maxSurge`
//! through its scale subresource, and the analysed template copied into stable.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::revision::{for_stable, revision};
use super::{FIELD_MANAGER, api_error};
use crate::decide::WorkloadState;
use crate::ports::{WorkloadError, Workloads};

/// The Deployments of one Rollout, in its namespace.
pub struct KubeWorkloads {
    api: Api<Deployment>,
    /// HorizontalPodAutoscalers, read only for a Rollout under `maxSurge`: others need no
    /// permission to list them.
    autoscalers: Option<Api<HorizontalPodAutoscaler>>,
    stable: String,
    candidate: String,
}

impl KubeWorkloads {
    /// The Deployments `stable` and `candidate` of `namespace`; with `autoscalers`, also the
    /// HorizontalPodAutoscaler that scales stable, if any.
    pub fn new(client: kube::Client, namespace: &str, stable: &str, candidate: &str, autoscalers: bool) -> Self {
        KubeWorkloads {
            api: Api::namespaced(client.clone(), namespace),
            autoscalers: autoscalers.then(|| Api::namespaced(client, namespace)),
            stable: stable.to_owned(),
            candidate: candidate.to_owned(),
        }
    }

    /// The HorizontalPodAutoscaler whose target is the Deployment `name`, if any.
    async fn autoscaler(&self, name: &str) -> Result<Option<String>, WorkloadError> {
        let Some(autoscalers) = &self.autoscalers else {
            return Ok(None);
        };
        let list = autoscalers
            .list(&ListParams::default())
            .await
            .map_err(|e| WorkloadError::Observe {
                name: name.to_owned(),
                source: api_error(e, "list", "horizontalpodautoscalers"),
            })?;
        Ok(list
            .items
            .iter()
            .find(|hpa| {
                // apiVersion may be left out of the reference.
                let target = &hpa.spec.scale_target_ref;
                target.kind == "Deployment"
                    && target.name == name
                    && target.api_version.as_deref().is_none_or(|v| v == "apps/v1")
            })
            .and_then(|hpa| hpa.metadata.name.clone()))
    }

    async fn get(&self, name: &str) -> Result<Option<Deployment>, WorkloadError> {
        self.api.get_opt(name).await.map_err(|e| WorkloadError::Observe {
            name: name.to_owned(),
            source: api_error(e, "get", "deployments"),
        })
    }
}

/// The selector's `matchLabels`.
fn selector(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
}

/// What `decide` needs of a Deployment: its revision, its replicas, and whether its
/// controller has finished rolling out the current template (as `kubectl rollout status`
/// judges it: observed, every replica updated, no old ones left, all available).
pub fn state(d: Option<&Deployment>) -> WorkloadState {
    let Some(d) = d else {
        return WorkloadState::default();
    };
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let rolled_out = observed && updated >= desired && status.replicas.unwrap_or(0) == updated && available >= updated;
    WorkloadState {
        exists: true,
        template_hash: revision(&spec.template, &selector(d)),
        replicas: u32::try_from(desired).unwrap_or(0),
        ready_replicas: if observed {
            u32::try_from(available.min(updated)).unwrap_or(0)
        } else {
            0
        },
        // Terminating pods still hold their accelerators: counted where the cluster reports
        // them (Kubernetes 1.33 and later).
        pods: u32::try_from(status.replicas.unwrap_or(0) + status.terminating_replicas.unwrap_or(0)).unwrap_or(0),
        rolled_out,
        autoscaler: None,
    }
}

impl Workloads for KubeWorkloads {
    async fn observe(&self) -> Result<(WorkloadState, WorkloadState), WorkloadError> {
        let stable = self.get(&self.stable).await?;
        // An experiment names no candidate: its variants are observed on their own.
        let candidate = if self.candidate.is_empty() {
            None
        } else {
            self.get(&self.candidate).await?
        };
        let mut stable_state = state(stable.as_ref());
        if stable_state.exists {
            stable_state.autoscaler = self.autoscaler(&self.stable).await?;
        }
        Ok((stable_state, state(candidate.as_ref())))
    }

    /// Through the scale subresource, as an autoscaler or `kubectl scale` does: stable's
    /// manifest stays its owners', and weir takes no lasting ownership of its replicas.
    async fn scale_stable(&self, replicas: u32) -> Result<(), WorkloadError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch_scale(
                &self.stable,
                &params,
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map_err(|e| WorkloadError::Scale {
                name: self.stable.clone(),
                replicas,
                source: api_error(e, "patch", "deployments/scale"),
            })?;
        Ok(())
    }

    async fn scale_candidate(&self, replicas: u32) -> Result<(), WorkloadError> {
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": self.candidate },
            "spec": { "replicas": replicas },
        });
        self.api
            .patch(
                &self.candidate,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| WorkloadError::Scale {
                name: self.candidate.clone(),
                replicas,
                source: api_error(e, "patch", "deployments"),
            })?;
        Ok(())
    }

    async fn promote_template(&self, analysed: &str) -> Result<(), WorkloadError> {
        self.promote_from(&self.candidate, analysed).await
    }

    async fn observe_variants(&self, deployments: &[String]) -> Result<Vec<WorkloadState>, WorkloadError> {
        let mut states = Vec::with_capacity(deployments.len());
        for name in deployments {
            states.push(state(self.get(name).await?.as_ref()));
        }
        Ok(states)
    }

    async fn promote_variant(&self, from: &str, revision: &str) -> Result<(), WorkloadError> {
        self.promote_from(from, revision).await
    }
}

impl KubeWorkloads {
    /// Replaces stable's whole template with Deployment `from`'s (a merge would keep fields
    /// `from` dropped), with stable's resourceVersion, so a template changed since the read is
    /// never overwritten blind: the conflict fails this act and the next reconcile reads again.
    async fn promote_from(&self, from: &str, analysed: &str) -> Result<(), WorkloadError> {
        let promote_error = |source| WorkloadError::Promote {
            name: self.stable.clone(),
            revision: analysed.to_owned(),
            source,
        };
        let candidate = self.get(from).await?.ok_or_else(|| WorkloadError::Observe {
            name: from.to_owned(),
            source: format!("Deployment {from}, whose template was to be promoted, is gone").into(),
        })?;
        let current = state(Some(&candidate)).template_hash;
        if current != analysed {
            return Err(WorkloadError::RevisionMismatch {
                analysed: analysed.to_owned(),
                current,
            });
        }
        let mut stable = self.get(&self.stable).await?.ok_or_else(|| WorkloadError::Observe {
            name: self.stable.clone(),
            source: "the stable Deployment is gone".into(),
        })?;
        if state(Some(&stable)).template_hash == analysed {
            return Ok(());
        }
        let candidate_spec = candidate.spec.clone().unwrap_or_default();
        let stable_selector = selector(&stable);
        let template = for_stable(&candidate_spec.template, &selector(&candidate), &stable_selector);
        let Some(spec) = stable.spec.as_mut() else {
            return Err(promote_error("the stable Deployment has no spec".into()));
        };
        spec.template = template;
        stable.metadata.managed_fields = None;
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        self.api
            .replace(&self.stable, &params, &stable)
            .await
            .map_err(|e| promote_error(api_error(e, "update", "deployments")))?;
        Ok(())
    }
}
