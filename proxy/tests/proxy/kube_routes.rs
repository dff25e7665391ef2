//! `weir-proxy --kube-routes` against the real API server (tests/cluster): route ConfigMaps
//! merged over the file's routes, and a bad one rejected alone, with an Event naming its bad
//! field, while its previous version keeps serving. Requests go only to loopback backends,
//! which the ConfigMaps name as static endpoints.

use http::StatusCode;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use weir_tests::TestNamespace;

use crate::binary::start_binary;
use crate::support::*;

/// A route ConfigMap for `gateway`: route `name` for host `<name>.test` to `backend`.
fn route_config_map(name: &str, gateway: &str, backend: std::net::SocketAddr, weight: u32) -> ConfigMap {
    let yaml = format!(
        "routes:\n  - name: {name}\n    match: {{ host: {name}.test }}\n    stable: {{ backend: {name}.stable }}\n    \
         candidate: {{ backend: {name}.candidate, revision: r1 }}\n    candidateWeight: {weight}\n\
         backends:\n  {name}.stable: {{ endpoints: [\"{backend}\"] }}\n  {name}.candidate: {{ endpoints: [\"{backend}\"] }}\n"
    );
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("weir-rollout-{name}")),
            labels: Some([("weir.dev/gateway".to_owned(), gateway.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("config.yaml".to_owned(), yaml)].into()),
        ..ConfigMap::default()
    }
}

/// The `config.yaml` of a ConfigMap made by [`route_config_map`].
fn config_yaml_of(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .cloned()
        .unwrap_or_default()
}

/// What the proxy answers for host `host`: the status and the backend that answered.
async fn ask(addr: std::net::SocketAddr, host: &str) -> (StatusCode, String) {
    let mut req = get(addr, "/");
    req.headers_mut()
        .insert("host", http::HeaderValue::from_str(host).expect("a host"));
    let (parts, body, _) = send(&h1_client(), req).await;
    (parts.status, String::from_utf8_lossy(&body).into_owned())
}

async fn config_json(admin: std::net::SocketAddr) -> serde_json::Value {
    let (parts, body, _) = send(&h1_client(), get(admin, "/config")).await;
    assert_eq!(parts.status, StatusCode::OK);
    serde_json::from_slice(&body).expect("/config is JSON")
}

/// The binary on `config` with the route ConfigMaps of `gateway` in `ns`, once ready (the
/// ConfigMaps' first list merged).
async fn start_ready(
    config: &std::path::Path,
    ns: &TestNamespace,
    gateway: &str,
    kubeconfig: &std::path::Path,
) -> crate::binary::Running {
    let selector = format!("weir.dev/gateway={gateway}");
    let proxy = start_binary(
        config,
        &["--kube-routes", &selector, "--namespace", &ns.name],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    );
    eventually("the proxy to be ready", || async {
        let (parts, _, _) = send(&h1_client(), get(proxy.admin, "/readyz")).await;
        parts.status == StatusCode::OK
    })
    .await;
    proxy
}

/// A namespace of the shared test cluster for `test`, and the cluster's kubeconfig.
async fn namespace(test: &str) -> (TestNamespace, std::path::PathBuf) {
    let ns = TestNamespace::create(test)
        .await
        .expect("a namespace on the test cluster");
    let kubeconfig = weir_tests::shared()
        .expect("the test cluster")
        .cluster
        .kubeconfig
        .clone();
    (ns, kubeconfig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_config_maps_serve_beside_the_file_and_a_bad_one_is_rejected_alone() {
    let (ns, kubeconfig) = namespace("route_config_maps_serve_beside_the_file").await;
    // The namespace's name is the gateway: ConfigMaps of other tests never match.
    let gateway = ns.name.clone();
    let (alpha, beta, other) = (
        Backend::start("alpha").await,
        Backend::start("beta").await,
        Backend::start("other").await,
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let post = PostParams::default();
    for cm in [
        route_config_map("alpha", &gateway, alpha.addr, 0),
        route_config_map("beta", &gateway, beta.addr, 0),
        route_config_map("gamma", "another-gateway", other.addr, 0),
    ] {
        within(config_maps.create(&post, &cm)).await.expect("create ConfigMap");
    }

    let file_backend = Backend::start("file").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    let file = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ndrainTimeout: 2s\nroutes:\n  - {{ name: file, match: {{ host: file.test }}, stable: {{ backend: file }} }}\n\
         backends:\n  file: {{ endpoints: [\"{}\"] }}\n",
        file_backend.addr
    );
    std::fs::write(&path, file).expect("write config");
    // Ready once the first list is merged; then the ConfigMaps' routes serve beside the file's.
    let proxy = start_ready(&path, &ns, &gateway, &kubeconfig).await;
    assert_eq!(ask(proxy.listen, "alpha.test").await, (StatusCode::OK, "alpha".into()));
    assert_eq!(ask(proxy.listen, "beta.test").await, (StatusCode::OK, "beta".into()));
    assert_eq!(ask(proxy.listen, "file.test").await, (StatusCode::OK, "file".into()));
    assert_eq!(
        ask(proxy.listen, "gamma.test").await.0,
        StatusCode::NOT_FOUND,
        "another gateway's ConfigMap is not ours"
    );
    let config = config_json(proxy.admin).await;
    let results: Vec<(String, String)> = config["kubernetes"]
        .as_array()
        .expect("the ConfigMaps in /config")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_owned(),
                l["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("weir-rollout-alpha".to_owned(), "ok".to_owned()),
            ("weir-rollout-beta".to_owned(), "ok".to_owned())
        ]
    );

    // A bad edit of beta: rejected alone, its previous version serves, an Event says why.
    let mut bad = route_config_map("beta", &gateway, beta.addr, 20_000);
    bad.metadata.name = None;
    within(config_maps.patch(
        "weir-rollout-beta",
        &PatchParams::apply("weir-tests").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "data": bad.data,
        })),
    ))
    .await
    .expect("edit ConfigMap");
    eventually("beta to be rejected in /config", || async {
        let config = config_json(proxy.admin).await;
        config["kubernetes"].as_array().is_some_and(|layers| {
            layers
                .iter()
                .any(|l| l["name"] == "weir-rollout-beta" && l["result"] == "previous")
        })
    })
    .await;
    let config = config_json(proxy.admin).await;
    let beta_status = config["kubernetes"]
        .as_array()
        .and_then(|layers| layers.iter().find(|l| l["name"] == "weir-rollout-beta"))
        .expect("beta in /config");
    assert_eq!(
        beta_status["errors"][0]["path"], "routes[0].candidateWeight",
        "{beta_status}"
    );
    assert_eq!(ask(proxy.listen, "beta.test").await, (StatusCode::OK, "beta".into()));
    assert_eq!(ask(proxy.listen, "alpha.test").await, (StatusCode::OK, "alpha".into()));

    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let rejection_event = |fragment: &'static str| {
        let events = events.clone();
        eventually_some("an Event on the rejected ConfigMap", move || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref()?.name.as_deref()? == "weir-rollout-beta";
                    let note = e.note.unwrap_or_default();
                    (about && e.reason.as_deref() == Some("ConfigRejected") && note.contains(fragment)).then_some(note)
                })
            }
        })
    };
    let note = rejection_event("routes[0].candidateWeight: 20000 is over 10000").await;
    assert!(note.contains("previous version keeps serving"), "{note}");

    // A second, different mistake gets an Event of its own, naming the new field.
    let data = serde_json::json!({
        "config.yaml": config_yaml_of(&route_config_map("beta", &gateway, beta.addr, 0)).replace("match:", "timeout: soon\n    match:")
    });
    within(config_maps.patch(
        "weir-rollout-beta",
        &PatchParams::apply("weir-tests").force(),
        &Patch::Apply(serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "data": data })),
    ))
    .await
    .expect("edit ConfigMap again");
    let note = rejection_event("routes[0].timeout").await;
    assert!(note.contains("\"soon\" is not a duration"), "{note}");

    let (parts, metrics, _) = send(&h1_client(), get(proxy.admin, "/metrics")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        sample(
            &metrics,
            "weir_config_reloads_total{source=\"kubernetes\",result=\"error\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // Deleting a ConfigMap removes its route.
    within(config_maps.delete("weir-rollout-alpha", &DeleteParams::default()))
        .await
        .expect("delete ConfigMap");
    eventually("alpha's route to be gone", || async {
        ask(proxy.listen, "alpha.test").await.0 == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(ask(proxy.listen, "file.test").await, (StatusCode::OK, "file".into()));

    proxy.signal("TERM");
    let (exit, log) = proxy.exited().await;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
}

/// The ready endpoints the proxy follows for `service` (`namespace/name:port`), from `/config`.
async fn discovered(admin: std::net::SocketAddr, service: &str) -> Option<Vec<String>> {
    let config = config_json(admin).await;
    config["discovered"][service]
        .as_array()
        .map(|list| list.iter().map(|e| e.as_str().unwrap_or_default().to_owned()).collect())
}

/// An EndpointSlice of `m-v2` on port `http` 9000: `(address, ready, terminating)` each. The
/// addresses are never sent a request: the test reads them back from `/config` only.
fn slice(endpoints: &[(&str, bool, bool)]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "m-v2-a", "labels": { "kubernetes.io/service-name": "m-v2" } },
        "addressType": "IPv4",
        "ports": [ { "name": "http", "port": 9000, "protocol": "TCP" } ],
        "endpoints": endpoints.iter().map(|(address, ready, terminating)| serde_json::json!({
            "addresses": [address],
            "conditions": { "ready": ready, "terminating": terminating }
        })).collect::<Vec<_>>()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_backend_follows_its_ready_endpoints_without_rebuilding_the_table() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    let (ns, kubeconfig) = namespace("a_service_backend_follows_its_ready_endpoints").await;
    let gateway = ns.name.clone();
    let post = PostParams::default();
    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "m-v2" },
        "spec": { "ports": [ { "name": "http", "port": 8000, "targetPort": 9000 } ] }
    }))
    .expect("a Service");
    within(services.create(&post, &service)).await.expect("create Service");
    let yaml = "routes:\n  - name: disc\n    match: { host: disc.test }\n    stable: { backend: disc.stable }\n\
                backends:\n  disc.stable: { service: m-v2, port: 8000 }\n";
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("weir-rollout-disc".into()),
            labels: Some([("weir.dev/gateway".to_owned(), gateway.clone())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("config.yaml".to_owned(), yaml.to_owned())].into()),
        ..ConfigMap::default()
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    within(config_maps.create(&post, &cm)).await.expect("create ConfigMap");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ndrainTimeout: 1s\n").expect("write config");
    let proxy = start_ready(&path, &ns, &gateway, &kubeconfig).await;
    let key = format!("{}/m-v2:8000", ns.name);

    // No EndpointSlice yet: no endpoint, so the proxy answers 503 itself and sends nothing.
    let no_endpoint = || async {
        let mut req = get(proxy.listen, "/");
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("disc.test"));
        let (parts, _, _) = send(&h1_client(), req).await;
        (parts.status, parts.headers.get("x-weir-error").cloned())
    };
    eventually("the Service followed with no endpoint", || async {
        discovered(proxy.admin, &key).await == Some(Vec::new())
    })
    .await;
    let (status, reason) = no_endpoint().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason.as_ref().map(|r| r.as_bytes()), Some(&b"no-endpoint"[..]));

    // Ready endpoints only; a terminating one gets nothing new.
    let slices: Api<EndpointSlice> = Api::namespaced(ns.client.clone(), &ns.name);
    let apply = PatchParams::apply("weir-tests").force();
    let one = slice(&[
        ("10.0.0.1", true, false),
        ("10.0.0.2", false, false),
        ("10.0.0.3", true, true),
    ]);
    within(slices.patch("m-v2-a", &apply, &Patch::Apply(&one)))
        .await
        .expect("apply EndpointSlice");
    eventually("the ready endpoint discovered", || async {
        discovered(proxy.admin, &key).await == Some(vec!["10.0.0.1:9000".to_owned()])
    })
    .await;
    let version = config_json(proxy.admin).await["version"].clone();

    // Another endpoint becomes ready: followed in place, the table is the same version.
    let two = slice(&[
        ("10.0.0.1", true, false),
        ("10.0.0.2", true, false),
        ("10.0.0.3", true, true),
    ]);
    within(slices.patch("m-v2-a", &apply, &Patch::Apply(&two)))
        .await
        .expect("apply EndpointSlice");
    eventually("both ready endpoints discovered", || async {
        discovered(proxy.admin, &key).await == Some(vec!["10.0.0.1:9000".to_owned(), "10.0.0.2:9000".to_owned()])
    })
    .await;
    assert_eq!(
        config_json(proxy.admin).await["version"],
        version,
        "an endpoint change does not rebuild the route table"
    );

    // All gone: 503 again.
    within(slices.delete("m-v2-a", &DeleteParams::default()))
        .await
        .expect("delete EndpointSlice");
    eventually("no endpoint left", || async {
        discovered(proxy.admin, &key).await == Some(Vec::new())
    })
    .await;
    assert_eq!(no_endpoint().await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_config_map_changes_under_load_lose_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use crate::zero_loss::{Tally, load};

    let (ns, kubeconfig) = namespace("a_hundred_config_map_changes_under_load").await;
    let gateway = ns.name.clone();
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    // A route for any host, so the load needs no Host of its own.
    let config_map = |weight: u32| {
        let yaml = format!(
            "routes:\n  - {{ name: any, stable: {{ backend: any.stable }}, candidate: {{ backend: any.candidate, revision: r1 }}, candidateWeight: {weight} }}\n\
             backends:\n  any.stable: {{ endpoints: [\"{}\"] }}\n  any.candidate: {{ endpoints: [\"{}\"] }}\n",
            stable.addr, candidate.addr
        );
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("weir-rollout-any".to_owned()),
                labels: Some([("weir.dev/gateway".to_owned(), gateway.clone())].into()),
                ..ObjectMeta::default()
            },
            data: Some([("config.yaml".to_owned(), yaml)].into()),
            ..ConfigMap::default()
        }
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    within(config_maps.create(&PostParams::default(), &config_map(0)))
        .await
        .expect("create ConfigMap");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ndrainTimeout: 1s\n").expect("write config");
    let proxy = start_ready(&path, &ns, &gateway, &kubeconfig).await;

    let tally = Arc::new(Tally::default());
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(load(
        proxy.listen,
        started + std::time::Duration::from_secs(30),
        60_000,
        Arc::clone(&tally),
    ));
    let mut last = 0;
    for i in 1..=100u32 {
        last = (i * 997) % 10_001;
        within(config_maps.replace("weir-rollout-any", &PostParams::default(), &config_map(last)))
            .await
            .expect("replace ConfigMap");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eventually("the last change to serve", || async {
        config_json(proxy.admin).await["config"]["routes"][0]["candidateWeight"] == last
    })
    .await;
    running.abort();
    let _ = running.await;
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!(
        "zero loss: {ok} requests over 100 ConfigMap changes in {:.1} s, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0);
    assert!(ok > 1000, "the load ran: {ok}");
}
