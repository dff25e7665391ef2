//! API semantics weir relies on, against the real API server: server-side
//! apply of a CRD and its objects, EndpointSlices of a selector-less Service
//! seen through a watch, and the cluster process's own lifecycle.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::time::timeout;
use weir_tests::{CALL_TIMEOUT, Check, Cluster, TestNamespace, binary, cluster, eventually};

const FIELD_MANAGER: &str = "weir-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_created_with_server_side_apply_reads_back() -> Result<()> {
    let ns = TestNamespace::create("crd_created_with_server_side_apply_reads_back").await?;
    // CRDs are cluster-scoped: a group named after the namespace keeps tests apart.
    let group = format!("{}.test.weir.dev", ns.name);
    let crd_name = format!("canaries.{group}");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "names": { "kind": "Canary", "plural": "canaries", "singular": "canary", "listKind": "CanaryList" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "required": ["route"], "properties": {
                            "route": { "type": "string" },
                            "weight": { "type": "integer", "minimum": 0, "maximum": 10000 }
                        } },
                        "status": { "type": "object", "properties": { "phase": { "type": "string" } } }
                    }
                } }
            }]
        }
    });
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    timeout(CALL_TIMEOUT, crds.patch(&crd_name, &apply, &Patch::Apply(&crd)))
        .await
        .context("apply CRD: timed out")??;

    let read = eventually(
        &format!("CRD {crd_name} Established"),
        Duration::from_secs(60),
        || async {
            let crd = crds.get(&crd_name).await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            Ok(if established {
                Check::Done(crd)
            } else {
                Check::Waiting(format!("{:?}", crd.status))
            })
        },
    )
    .await?;
    assert_eq!(read.spec.group, group);
    assert_eq!(read.spec.names.kind, "Canary");
    assert_eq!(read.spec.versions[0].name, "v1alpha1");
    let managers = read.metadata.managed_fields.unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")),
        "no Apply entry of {FIELD_MANAGER} in managedFields: {managers:?}"
    );

    // An object of the new kind, also applied server-side, reads back; the
    // schema is enforced by the real validation.
    let gvk = GroupVersionKind::gvk(&group, "v1alpha1", "Canary");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let canaries: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let canary = json!({
        "apiVersion": format!("{group}/v1alpha1"),
        "kind": "Canary",
        "metadata": { "name": "sentiment" },
        "spec": { "route": "sentiment", "weight": 500 }
    });
    // The new resource may take a moment to be served after Established.
    eventually("canary sentiment applied", Duration::from_secs(30), || async {
        Ok(
            match canaries.patch("sentiment", &apply, &Patch::Apply(&canary)).await {
                Ok(obj) => Check::Done(obj),
                Err(kube::Error::Api(e)) if e.code == 404 => Check::Waiting(e.message),
                Err(e) => return Err(e.into()),
            },
        )
    })
    .await?;
    let obj = timeout(CALL_TIMEOUT, canaries.get("sentiment")).await??;
    assert_eq!(obj.data["spec"]["route"], "sentiment");
    assert_eq!(obj.data["spec"]["weight"], 500);

    let invalid = json!({
        "apiVersion": format!("{group}/v1alpha1"),
        "kind": "Canary",
        "metadata": { "name": "too-heavy" },
        "spec": { "route": "sentiment", "weight": 10001 }
    });
    match timeout(
        CALL_TIMEOUT,
        canaries.patch("too-heavy", &apply, &Patch::Apply(&invalid)),
    )
    .await?
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => bail!("a weight over 10000 was not rejected: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslice_of_selectorless_service_arrives_through_a_watch() -> Result<()> {
    let ns = TestNamespace::create("endpointslice_of_selectorless_service_arrives_through_a_watch").await?;
    let services: Api<Service> = Api::default_namespaced(ns.client.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(ns.client.clone());

    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "sentiment-v2" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP" }] }
    }))?;
    let created = timeout(CALL_TIMEOUT, services.create(&PostParams::default(), &service)).await??;
    let cluster_ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .context("service got no cluster IP")?;
    assert!(
        cluster_ip.starts_with("10.0."),
        "cluster IP {cluster_ip} outside the service CIDR"
    );

    // Watch first, then create: the slice must arrive as a watch event.
    let selector = "kubernetes.io/service-name=sentiment-v2";
    let mut events = watcher(slices.clone(), watcher::Config::default().labels(selector)).boxed();
    let initial = timeout(CALL_TIMEOUT, async {
        // The initial listing ends with InitDone; it holds no slice of ours
        // (the EndpointSlice controller leaves selector-less Services alone).
        let mut seen = Vec::new();
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::InitApply(slice) => seen.push(slice.metadata.name),
                watcher::Event::InitDone => return Ok::<_, anyhow::Error>(seen),
                _ => {}
            }
        }
        bail!("watch ended during the initial listing")
    })
    .await
    .context("initial listing of the watch: timed out")??;
    assert!(initial.is_empty(), "unexpected slices before creation: {initial:?}");

    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "sentiment-v2-manual",
            "labels": {
                "kubernetes.io/service-name": "sentiment-v2",
                "endpointslice.kubernetes.io/managed-by": "weir-tests"
            }
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8000, "protocol": "TCP" }],
        "endpoints": [
            { "addresses": ["10.244.1.7"], "conditions": { "ready": true } },
            { "addresses": ["10.244.1.8"], "conditions": { "ready": false } }
        ]
    }))?;
    timeout(CALL_TIMEOUT, slices.create(&PostParams::default(), &slice)).await??;

    let seen = timeout(CALL_TIMEOUT, async {
        while let Some(event) = events.try_next().await? {
            if let watcher::Event::Apply(slice) = event {
                if slice.metadata.name.as_deref() == Some("sentiment-v2-manual") {
                    return Ok::<_, anyhow::Error>(slice);
                }
            }
        }
        bail!("watch ended before the slice arrived")
    })
    .await
    .context("EndpointSlice through the watch: timed out")??;

    let endpoints = seen.endpoints.unwrap_or_default();
    let ready: Vec<&str> = endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    assert_eq!(ready, ["10.244.1.7"]);
    assert_eq!(endpoints.len(), 2);
    let port = seen.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port);
    assert_eq!(port, Some(8000));
    Ok(())
}

#[test]
fn testcluster_exits_when_its_stdin_closes() -> Result<()> {
    let built = binary::ensure_built()?;
    let mut cluster = Cluster::start(&built.path, cluster::ready_timeout()?)?;
    let address = cluster.url.trim_start_matches("https://").to_owned();
    TcpStream::connect(&address).with_context(|| format!("the ready cluster does not listen on {address}"))?;

    // What happens when a test binary dies: the pipe's write end closes.
    cluster.close_stdin();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.has_exited()? {
        if Instant::now() >= deadline {
            bail!(
                "weir-testcluster (pid {}) still running 30s after its stdin closed; log {}\n{}",
                cluster.pid(),
                cluster.log.display(),
                binary::tail_lines(&cluster.log, 50)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect(&address).is_err(),
        "{address} still accepts connections"
    );
    Ok(())
}

#[test]
fn cluster_not_ready_by_its_deadline_fails_with_its_log() -> Result<()> {
    let built = binary::ensure_built()?;
    // No cluster gets ready in a millisecond: the start must fail, not hang,
    // and say where the log is and what it held.
    let err = match Cluster::start(&built.path, Duration::from_millis(1)) {
        Ok(cluster) => bail!("a cluster was ready within 1ms at {}", cluster.url),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("not ready within 1ms"), "{err}");
    assert!(err.contains("cluster.log"), "{err}");
    assert!(err.contains("last 50 lines of the cluster log"), "{err}");
    Ok(())
}
