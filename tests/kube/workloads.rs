//! Deployments against the real control plane: the Deployment and ReplicaSet
//! controllers create Pods, the binder puts them on the kwok node, and kwok
//! makes them Ready.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::timeout;
use weir_tests::{CALL_TIMEOUT, Check, TestNamespace, eventually};

/// Generous: the first test of a binary also waits for the cluster to start.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

fn deployment(name: &str, version: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "containers": [{
                        "name": "server",
                        "image": format!("registry.invalid/{name}:{version}"),
                        "ports": [{ "containerPort": 8000 }],
                        "readinessProbe": { "httpGet": { "path": "/ready", "port": 8000 } }
                    }]
                }
            }
        }
    }))?)
}

async fn wait_available(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<DeploymentStatus> {
    eventually(
        &format!("deployment {name} with {replicas} available replicas"),
        ROLLOUT_TIMEOUT,
        || async {
            let d = api.get(name).await?;
            let generation = d.metadata.generation;
            let status = d.status.unwrap_or_default();
            let done = status.observed_generation == generation
                && status.available_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.replicas == Some(replicas);
            Ok(if done {
                Check::Done(status)
            } else {
                Check::Waiting(format!("{status:?}"))
            })
        },
    )
    .await
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_with_three_replicas_becomes_available() -> Result<()> {
    let ns = TestNamespace::create("deployment_with_three_replicas_becomes_available").await?;
    let deployments: Api<Deployment> = Api::default_namespaced(ns.client.clone());
    timeout(
        CALL_TIMEOUT,
        deployments.create(&PostParams::default(), &deployment("web", "v1", 3)?),
    )
    .await
    .context("create deployment: timed out")??;

    let status = wait_available(&deployments, "web", 3).await?;
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!(status.ready_replicas, Some(3));

    // The Pods behind it are real objects: bound to the simulated node,
    // Running, Ready, with an IP.
    let pods: Api<Pod> = Api::default_namespaced(ns.client.clone());
    let list = timeout(CALL_TIMEOUT, pods.list(&ListParams::default().labels("app=web"))).await??;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(
        live.len(),
        3,
        "pods: {:?}",
        list.items.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
    for pod in live {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let status = pod.status.as_ref().context("pod without status")?;
        assert_eq!(spec.node_name.as_deref(), Some("weir-node-0"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.is_some(), "pod {:?} has no IP", pod.metadata.name);
        assert!(is_ready(pod), "pod {:?} not Ready", pod.metadata.name);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_template_update_rolls_out_a_new_replicaset() -> Result<()> {
    let ns = TestNamespace::create("pod_template_update_rolls_out_a_new_replicaset").await?;
    let deployments: Api<Deployment> = Api::default_namespaced(ns.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(ns.client.clone());
    timeout(
        CALL_TIMEOUT,
        deployments.create(&PostParams::default(), &deployment("api", "v1", 3)?),
    )
    .await
    .context("create deployment: timed out")??;
    wait_available(&deployments, "api", 3).await?;

    let before = timeout(CALL_TIMEOUT, replicasets.list(&ListParams::default().labels("app=api"))).await??;
    let [old] = before.items.as_slice() else {
        bail!(
            "expected one ReplicaSet before the update, found {}",
            before.items.len()
        );
    };
    let old_name = old.metadata.name.clone().context("replicaset without name")?;

    let patch = json!({ "spec": { "template": { "spec": { "containers": [
        { "name": "server", "image": "registry.invalid/api:v2" }
    ] } } } });
    timeout(
        CALL_TIMEOUT,
        deployments.patch("api", &PatchParams::default(), &Patch::Strategic(&patch)),
    )
    .await
    .context("patch deployment: timed out")??;

    let new_name = eventually(
        "a new ReplicaSet with 3 ready replicas and the old one at 0",
        ROLLOUT_TIMEOUT,
        || async {
            let list = replicasets.list(&ListParams::default().labels("app=api")).await?;
            let mut new_ready = None;
            let mut old_state = None;
            for rs in &list.items {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let spec_replicas = rs.spec.as_ref().and_then(|s| s.replicas);
                let status = rs.status.clone().unwrap_or_default();
                if name == old_name {
                    old_state = Some((spec_replicas, status.replicas));
                } else if spec_replicas == Some(3) && status.ready_replicas == Some(3) {
                    new_ready = Some(name);
                }
            }
            Ok(match (new_ready, old_state) {
                (Some(new), Some((Some(0), 0))) => Check::Done(new),
                (new, old) => Check::Waiting(format!(
                    "{} replicasets; new ready: {new:?}; old (spec, status) replicas: {old:?}",
                    list.items.len()
                )),
            })
        },
    )
    .await?;
    assert_ne!(new_name, old_name);

    let status = wait_available(&deployments, "api", 3).await?;
    assert_eq!(status.updated_replicas, Some(3));
    let new_rs = timeout(CALL_TIMEOUT, replicasets.get(&new_name)).await??;
    let image = new_rs
        .spec
        .and_then(|s| s.template)
        .and_then(|t| t.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image);
    assert_eq!(image.as_deref(), Some("registry.invalid/api:v2"));
    Ok(())
}
