//! Least privilege, proven: the real `weir controller` and `weir-proxy --kube-routes` run
//! outside the cluster, each impersonating its chart ServiceAccount (kubeconfig `as`) with the
//! chart's Roles and nothing else, and take a rollout through every path that needs a
//! permission (maxSurge scaling, a Service-backed side, discovered proxies, Events, the Lease)
//! to promotion. Then each rule of each Role is removed in turn, and that rollout fails.
//!
//! Traffic goes to loopback only: the EndpointSlices this test writes itself point there.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use weir::rollout::Rollout;
use weir::status::Phase;
use weir_tests::fixture::{
    Load, ModelServer, apply_all, apply_crd, deployment, get, get_json, loopback_proxy_config, model,
};
use weir_tests::helm::{Helm, find};
use weir_tests::process::{Process, free_port, workspace_binary};
use weir_tests::{Check, TestNamespace, eventually};

/// The release name, so that the objects are named as a default install names them.
const RELEASE: &str = "weir";

/// A debug-build controller on a 2-core machine shared with other tests.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the release serves Rollouts: as the chart's `watchNamespace` sets it.
#[derive(Clone, Copy, PartialEq)]
enum Watch {
    /// Its own namespace only: Roles.
    Namespace,
    /// Every namespace (the default): ClusterRoles for the Rollouts' objects.
    Cluster,
}

/// Placed in each test's namespace (and used as its gateway) before it is applied or run.
const PLACEHOLDER: &str = "placeholder";

/// What the chart renders for a release in [`PLACEHOLDER`] that serves gateway
/// [`PLACEHOLDER`]: its ServiceAccounts, Roles, ClusterRoles and bindings, and the arguments its
/// Deployments run the controller and the proxy with.
#[derive(Clone)]
struct Chart {
    rbac: Vec<Value>,
    controller_args: Vec<String>,
    proxy_args: Vec<String>,
}

fn render(watch: Watch) -> Result<Chart> {
    let mut values = vec![
        format!("gateway={}", json!(PLACEHOLDER)),
        // Shorter than a cluster's, to keep the test quick.
        "controller.leaseDuration=\"3s\"".to_owned(),
        // The proxies' discovered admin endpoint is never scraped (see `rollout_with`).
        "controller.scrapeAllow=[\"127.0.0.0/8\"]".to_owned(),
    ];
    if watch == Watch::Namespace {
        values.push(format!("watchNamespace={}", json!(PLACEHOLDER)));
    }
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let rendered = Helm::new()?.template(RELEASE, PLACEHOLDER, &values)?;
    let rbac: Vec<Value> = rendered
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .cloned()
        .collect();
    let cluster_wide = rbac
        .iter()
        .any(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("Cluster")));
    if cluster_wide != (watch == Watch::Cluster) {
        bail!("watching {PLACEHOLDER}, the chart rendered ClusterRoles: {cluster_wide}");
    }
    let args = |deployment: &str| -> Result<Vec<String>> {
        let object = find(&rendered, "Deployment", &format!("{RELEASE}-{deployment}"))?;
        let args = object["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .with_context(|| format!("{deployment} has no args"))?;
        Ok(args.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    };
    Ok(Chart {
        rbac,
        controller_args: args("controller")?,
        proxy_args: args("proxy")?,
    })
}

/// `args` as the chart renders them, moved into `namespace` and with each `--flag=` of
/// `overrides` given this process's value. Each override must replace an argument the chart
/// passes, so the test follows the chart when it changes.
fn local_args(args: &[String], namespace: &str, overrides: &[(&str, String)]) -> Result<Vec<String>> {
    let mut args: Vec<String> = args.iter().map(|a| a.replace(PLACEHOLDER, namespace)).collect();
    for (flag, value) in overrides {
        let prefix = format!("{flag}=");
        let Some(at) = args.iter().position(|a| a.starts_with(&prefix)) else {
            bail!("the chart passes no {flag}: {args:?}");
        };
        args[at] = format!("{prefix}{value}");
    }
    Ok(args)
}

/// One rule of one Role, as the closing table names it.
#[derive(Clone, Debug)]
struct Rule {
    role: String,
    index: usize,
    /// Its first resource, as a refusal names it (`deployments/scale`).
    resource: String,
    summary: String,
}

fn rules(rbac: &[Value]) -> Vec<Rule> {
    let mut all = Vec::new();
    for role in rbac.iter().filter(|o| o["kind"] == "Role") {
        let name = role["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        for (index, rule) in role["rules"].as_array().into_iter().flatten().enumerate() {
            let list = |field: &str| {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let group = list("apiGroups");
            let group = if group.is_empty() { "core".to_owned() } else { group };
            all.push(Rule {
                role: name.clone(),
                index,
                resource: rule["resources"][0].as_str().unwrap_or_default().to_owned(),
                summary: format!("{group}/{} [{}]", list("resources"), list("verbs")),
            });
        }
    }
    all
}

/// `rbac` with `rule` taken out of its Role.
fn without(rbac: &[Value], rule: &Rule) -> Vec<Value> {
    let mut rbac = rbac.to_vec();
    for role in rbac
        .iter_mut()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == rule.role)
    {
        if let Some(rules) = role["rules"].as_array_mut() {
            rules.remove(rule.index);
        }
    }
    rbac
}

/// A copy of the admin kubeconfig whose user acts as `user`: the API server authorises every
/// request as that user, with only the permissions bound to it.
fn impersonating(admin: &Path, user: &str, path: PathBuf) -> Result<PathBuf> {
    let mut config = kube::config::Kubeconfig::read_from(admin)?;
    for named in &mut config.auth_infos {
        if let Some(info) = named.auth_info.as_mut() {
            info.impersonate = Some(user.to_owned());
        }
    }
    // JSON is YAML: the kubeconfig loaders read it.
    std::fs::write(&path, serde_json::to_string(&config)?)?;
    Ok(path)
}

/// The first line of any log that says the API server refused a request.
fn forbidden(processes: &[&Process]) -> Option<String> {
    processes.iter().find_map(|p| {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        let name = p
            .log
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        log.lines()
            .find(|l| l.to_ascii_lowercase().contains("forbidden"))
            .map(|l| format!("{name}: {l}"))
    })
}

/// A Service without a selector and its one EndpointSlice, at `address`:`target`, as the
/// EndpointSlice controller would write it for a pod. The API server refuses loopback
/// addresses in EndpointSlices, so the address is never one a test may send to: it is only
/// read back from `/config` and `/targets`.
async fn service(ns: &TestNamespace, name: &str, port_name: &str, port: u16, address: &str, target: u16) -> Result<()> {
    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "ports": [ { "name": port_name, "port": port, "targetPort": target } ] }
    }))?;
    services.create(&PostParams::default(), &service).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(ns.client.clone(), &ns.name);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": { "name": format!("{name}-a"), "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "ports": [ { "name": port_name, "port": target } ],
        "endpoints": [ { "addresses": [address], "conditions": { "ready": true } } ]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    Ok(())
}

/// Stable at 3 ready pods, replaced without surging (a hard GPU budget), and an empty
/// candidate; and a second pair, for a Rollout that stays idle.
async fn workloads(ns: &TestNamespace) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, replicas) in [("m-v1", 3), ("m-v2", 0), ("d-v1", 1), ("d-v2", 0)] {
        let mut object = serde_json::to_value(deployment(name, "registry.invalid/m:1", replicas)?)?;
        object["spec"]["strategy"] =
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 } });
        deployments
            .create(&PostParams::default(), &serde_json::from_value(object)?)
            .await?;
    }
    eventually("stable at 3 ready replicas", Duration::from_secs(60), || async {
        let ready = deployments.get("m-v1").await?.status.and_then(|s| s.ready_replicas);
        Ok(if ready == Some(3) {
            Check::Done(())
        } else {
            Check::Waiting(format!("{ready:?} ready"))
        })
    })
    .await
}

/// Runs a whole rollout with the controller and the proxy holding only `rbac`'s permissions,
/// and checks that everything each permission is for happened. The first refusal any process
/// logs ends it with an error quoting that line.
async fn rollout_with(test: &str, chart: &Chart) -> Result<()> {
    let ns = TestNamespace::create(test).await?;
    apply_crd(&ns.client).await?;
    let rbac: Vec<Value> = chart
        .rbac
        .iter()
        .map(|o| {
            let mut o = o.clone();
            // Rendered for a placeholder namespace; placed in this test's. Cluster-wide objects
            // get the namespace in their name, as tests run side by side.
            if o["metadata"]["namespace"].is_string() {
                o["metadata"]["namespace"] = json!(ns.name);
            }
            if o["kind"].as_str().is_some_and(|k| k.starts_with("Cluster")) {
                let name = format!("{}-{}", ns.name, o["metadata"]["name"].as_str().unwrap_or_default());
                o["metadata"]["name"] = json!(name);
            }
            if o["kind"] == "ClusterRoleBinding" {
                let name = format!("{}-{}", ns.name, o["roleRef"]["name"].as_str().unwrap_or_default());
                o["roleRef"]["name"] = json!(name);
            }
            let subjects = o.get_mut("subjects").and_then(Value::as_array_mut);
            for subject in subjects.into_iter().flatten() {
                subject["namespace"] = json!(ns.name);
            }
            o
        })
        .collect();
    apply_all(&ns.client, &rbac).await?;
    workloads(&ns).await?;

    let dir = tempfile::tempdir()?;
    let admin = weir_tests::shared()?.cluster.kubeconfig.clone();
    let account = |name: &str| format!("system:serviceaccount:{}:{RELEASE}-{name}", ns.name);
    let controller_config = impersonating(&admin, &account("controller"), dir.path().join("controller.kubeconfig"))?;
    let proxy_config = impersonating(&admin, &account("proxy"), dir.path().join("proxy.kubeconfig"))?;

    let stable = ModelServer::start(model("v1", 0.0), 1, dir.path()).await?;
    let candidate = ModelServer::start(model("v2", 0.0), 2, dir.path()).await?;
    // The idle Rollout's candidate follows a Service.
    service(&ns, "d-v2", "http", 80, "10.0.0.9", 8000).await?;

    let (file, listen, proxy_admin) = loopback_proxy_config(dir.path())?;
    let proxy_config = proxy_config.display().to_string();
    // The chart's arguments, with this test's config file (loopback addresses).
    let proxy_args = local_args(&chart.proxy_args, &ns.name, &[("--config", file.display().to_string())])?;
    let proxy = Process::start(
        &workspace_binary("weir-proxy")?,
        &proxy_args,
        &[
            ("KUBECONFIG", &proxy_config),
            ("WEIR_LOG", "info"),
            ("POD_NAME", "proxy-0"),
        ],
        dir.path().join("proxy.log"),
    )?;
    eventually("the proxy ready", Duration::from_secs(60), || async {
        if let Some(line) = forbidden(&[&proxy]) {
            bail!("refused: {line}");
        }
        Ok(match get(proxy_admin, "/readyz").await {
            Ok((200, _)) => Check::Done(()),
            Ok((status, body)) => Check::Waiting(format!("{status}: {body}")),
            Err(e) => Check::Waiting(e.to_string()),
        })
    })
    .await
    .with_context(|| proxy.tail(30))?;
    // The proxies' admin Service as the chart names it. Its endpoint (a pod address) is
    // refused by --scrape-allow, so a real Prometheus scraping this proxy judges the rollout.
    service(&ns, &format!("{RELEASE}-proxy-admin"), "admin", 9901, "10.0.0.8", 9901).await?;
    let prometheus = weir::demo::prometheus::LocalPrometheus::start(&[proxy_admin]).await?;

    let controller_admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut controller_args = local_args(
        &chart.controller_args,
        &ns.name,
        &[("--admin", controller_admin.to_string())],
    )?;
    // In a pod the service account's token reaches the API server; here, the kubeconfig.
    controller_args.push(format!("--kubeconfig={}", controller_config.display()));
    let controller = Process::start(
        &workspace_binary("weir")?,
        &controller_args,
        // As the chart's Deployment sets them: the Lease lives in the release's namespace.
        &[
            ("POD_NAMESPACE", &ns.name),
            ("POD_NAME", "controller-0"),
            ("WEIR_LOG", "info,kube=warn"),
        ],
        dir.path().join("controller.log"),
    )?;
    let processes = [&proxy, &controller];
    let refused = || forbidden(&processes);

    // A route ConfigMap with a bad field: the proxy refuses it and says so in an Event.
    let maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let broken: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "broken", "labels": { "weir.dev/gateway": ns.name } },
        "data": { "config.yaml": "routes:\n  - name: broken\n    stable: { backend: nowhere }\n    candidateWeight: 20000\n" }
    }))?;
    maps.create(&PostParams::default(), &broken).await?;

    let rollouts: Api<Rollout> = Api::namespaced(ns.client.clone(), &ns.name);
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": "sentiment" },
        "spec": {
            "gateway": ns.name,
            "route": { "name": "model", "timeout": "5s" },
            "stable": { "deployment": "m-v1", "endpoints": [stable.addr.to_string()] },
            "candidate": { "deployment": "m-v2", "endpoints": [candidate.addr.to_string()] },
            "scaling": { "maxSurge": 1 },
            "strategy": { "canary": { "steps": [ { "weight": 50, "hold": "1s" } ] } },
            "analysis": { "interval": "1s", "warmup": "0s", "minRequests": 20,
                "detect": { "errorRatio": 5.0, "errorRateFloor": 0.02 }, "progressDeadline": "2m",
                "source": { "prometheus": { "url": prometheus.url } },
                "checks": [ { "metric": "error-ratio", "max": 0.1 } ] }
        }
    }))?;
    rollouts.create(&PostParams::default(), &rollout).await?;
    // A second Rollout whose candidate follows a Service; it stays idle. Its route takes
    // /discovered only, which no request asks for.
    let idle: Rollout = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": "discovered" },
        "spec": {
            "gateway": ns.name,
            "route": { "name": "discovered", "match": { "pathPrefix": "/discovered" } },
            "stable": { "deployment": "d-v1", "endpoints": [stable.addr.to_string()] },
            "candidate": { "deployment": "d-v2", "service": "d-v2", "port": 80 },
            "strategy": { "canary": { "steps": [ { "weight": 50, "hold": "1m" } ] } },
            "analysis": { "checks": [ { "metric": "error-ratio", "max": 0.1 } ] }
        }
    }))?;
    rollouts.create(&PostParams::default(), &idle).await?;
    let load = Load::start(listen);
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let push = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "server", "image": "registry.invalid/m:2" }] } } } });
    deployments
        .patch("m-v2", &PatchParams::default(), &Patch::Strategic(&push))
        .await?;

    let status = eventually("the rollout promoted", ROLLOUT_TIMEOUT, || async {
        if let Some(line) = refused() {
            bail!("refused: {line}");
        }
        let status = rollouts.get("sentiment").await?.status.unwrap_or_default();
        Ok(match status.phase {
            Phase::Succeeded => Check::Done(status),
            Phase::Aborted => bail!("aborted: {}", status.message),
            _ => Check::Waiting(format!(
                "{:?} step {} weight {}: {}",
                status.phase, status.step, status.candidate_weight, status.message
            )),
        })
    })
    .await
    .with_context(|| format!("controller:\n{}\nproxy:\n{}", controller.tail(30), proxy.tail(20)))?;
    assert_eq!(status.stable_scaled_to, None, "{status:?}");

    // Promotion copied the candidate's template into stable, gave stable its pods back and
    // left no finalizer.
    let stable_deployment = deployments.get("m-v1").await?;
    let spec = stable_deployment.spec.context("spec")?;
    assert_eq!(spec.replicas, Some(3));
    let image = spec.template.spec.context("pod spec")?.containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("registry.invalid/m:2"));
    eventually("the finalizer removed", Duration::from_secs(30), || async {
        let finalizers = rollouts.get("sentiment").await?.finalizers().to_vec();
        Ok(if finalizers.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("{finalizers:?}"))
        })
    })
    .await?;
    let (_, candidate_answers) = load.sides();
    assert!(
        candidate_answers > 0,
        "the candidate, reached through its Service, answered nothing"
    );

    // The controller said what happened in Events, held the Lease, and scraped the proxy it
    // discovered through the admin Service.
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let events = events.list(&ListParams::default()).await?.items;
    let about = |kind: &str, controller: &str| {
        events.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind)
                && e.reporting_controller.as_deref() == Some(controller)
        })
    };
    assert!(about("Rollout", "weir-controller"), "no Event on the Rollout");
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let lease = leases.get("weir-controller").await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some("controller-0"),
        "the controller leads by the Lease"
    );
    let targets = get_json(controller_admin, "/targets").await?;
    assert_eq!(targets[0]["url"], "http://10.0.0.8:9901", "{targets}");
    assert_eq!(targets[0]["refused"], "10.0.0.8 is outside --scrape-allow", "{targets}");

    // The idle Rollout passed its Service check, and the proxy follows that Service.
    let idle = rollouts.get("discovered").await?.status.unwrap_or_default();
    let said = format!("{} {:?}", idle.message, idle.conditions);
    assert!(!said.to_ascii_lowercase().contains("forbidden"), "{said}");
    assert!(!said.contains("d-v2"), "{said}");
    eventually("the proxy following Service d-v2", Duration::from_secs(30), || async {
        let config = get_json(proxy_admin, "/config").await?;
        let found = &config["discovered"][format!("{}/d-v2:80", ns.name)];
        Ok(if *found == json!(["10.0.0.9:8000"]) {
            Check::Done(())
        } else {
            Check::Waiting(format!("{}", config["discovered"]))
        })
    })
    .await?;

    // The proxy refused the broken ConfigMap with an Event.
    eventually("the Event on the broken ConfigMap", Duration::from_secs(30), || async {
        let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
        let found = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken"));
        Ok(if found {
            Check::Done(())
        } else {
            Check::Waiting("none yet".into())
        })
    })
    .await?;
    if let Some(line) = refused() {
        bail!("refused: {line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_charts_roles_the_controller_and_the_proxy_take_a_rollout_to_promotion() -> Result<()> {
    rollout_with("rbac_full_rollout", &render(Watch::Namespace)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_charts_cluster_roles_a_controller_watching_every_namespace_promotes() -> Result<()> {
    rollout_with("rbac_cluster_wide_rollout", &render(Watch::Cluster)?).await
}

/// Rollouts with one rule removed, run side by side.
const AT_ONCE: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_one_rule_of_the_charts_roles_the_rollout_fails() -> Result<()> {
    let chart = render(Watch::Namespace)?;
    let all = rules(&chart.rbac);
    assert!(all.len() >= 12, "{all:#?}");
    let runs = futures::stream::iter(all.iter().enumerate().map(|(i, rule)| {
        let reduced = Chart {
            rbac: without(&chart.rbac, rule),
            ..chart.clone()
        };
        async move {
            let result = rollout_with(&format!("rbac_without_{i}"), &reduced).await;
            (rule.clone(), result)
        }
    }))
    .buffer_unordered(AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    let mut wrong = Vec::new();
    eprintln!("rule removed -> how the rollout failed");
    for (rule, result) in &runs {
        let name = format!("{} #{} {}", rule.role, rule.index, rule.summary);
        match result {
            Ok(()) => wrong.push(format!("{name}: the rollout succeeded without it")),
            Err(error) => {
                let cause = error.root_cause().to_string();
                let cause: String = cause.lines().next().unwrap_or_default().chars().take(400).collect();
                eprintln!("{name} -> {cause}");
                // It failed for want of that very permission, not for some other reason.
                if !(cause.contains("forbidden") && cause.contains(&rule.resource)) {
                    wrong.push(format!("{name}: failed otherwise: {cause}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    Ok(())
}
