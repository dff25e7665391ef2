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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_config_maps_serve_beside_the_file_and_a_bad_one_is_rejected_alone() {
    let ns = TestNamespace::create("route_config_maps_serve_beside_the_file")
        .await
        .expect("a namespace on the test cluster");
    let kubeconfig = weir_tests::shared()
        .expect("the test cluster")
        .cluster
        .kubeconfig
        .clone();
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
    let selector = format!("weir.dev/gateway={gateway}");
    let proxy = start_binary(
        &path,
        &["--kube-routes", &selector, "--namespace", &ns.name],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    );

    // Ready once the first list is merged; then the ConfigMaps' routes serve beside the file's.
    eventually("the proxy to be ready", || async {
        let (parts, _, _) = send(&h1_client(), get(proxy.admin, "/readyz")).await;
        parts.status == StatusCode::OK
    })
    .await;
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
