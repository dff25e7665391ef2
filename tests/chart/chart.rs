//! The Helm chart in `charts/weir`, checked with the real `helm` (built from Go modules into
//! weir's cache) and the real test cluster: its CRD is the one `weir crd` generates, it lints,
//! what it renders is valid (the proxy's config for `weir-proxy --check`, every object for the
//! API server), it installs, upgrades and uninstalls leaving nothing behind, and bad values fail
//! at install naming the value. The dashboard and the alerts query only metrics weir exports.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::{Value, json};
use weir_tests::fixture::{api_for, get_ok, wait_established};
use weir_tests::helm::{Helm, chart, find};
use weir_tests::process::{Process, free_port, workspace_binary};
use weir_tests::{Check, TestNamespace, eventually};

#[test]
fn the_charts_crd_is_the_one_weir_crd_generates() -> Result<()> {
    let path = chart().join("crds/rollouts.weir.dev.yaml");
    let in_chart = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    if in_chart != weir::rollout::crd_yaml() {
        bail!(
            "{} differs from `weir crd`: regenerate it with\n  cargo run --bin weir -- crd > charts/weir/crds/rollouts.weir.dev.yaml",
            path.display()
        );
    }
    Ok(())
}

/// Every optional part of the chart turned on, and a namespaced install.
const EVERYTHING_ON: &[&str] = &[
    "watchNamespace=\"models\"",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "proxy.autoscaling.enabled=true",
    "proxy.service.type=\"NodePort\"",
    "proxy.service.nodePort=30080",
    "proxy.pdb.maxUnavailable=\"25%\"",
    "proxy.workers=2",
    "controller.scrapeAllow=[\"10.0.0.0/8\"]",
];

#[test]
fn helm_lint_passes_with_the_defaults_and_with_every_option_on() -> Result<()> {
    let helm = Helm::new()?;
    let chart = chart();
    let chart = chart.to_str().context("UTF-8 path")?;
    for values in [&[][..], EVERYTHING_ON] {
        let mut args = vec!["lint", "--strict", chart];
        for value in values {
            args.extend(["--set-json", value]);
        }
        let out = helm.run(&args)?;
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
    }
    Ok(())
}

#[test]
fn the_proxy_config_the_chart_renders_passes_weir_proxy_check() -> Result<()> {
    let helm = Helm::new()?;
    let config = json!({
        "sideHeader": "x-served-by",
        "routes": [{ "name": "static", "match": { "pathPrefix": "/static" }, "stable": { "backend": "files" } }],
        "backends": { "files": { "endpoints": ["files.web.svc:8080"] } }
    });
    let rendered = helm.template(
        "r",
        "weir-system",
        &[
            &format!("proxy.config={config}"),
            "proxy.port=8081",
            "proxy.drainTimeout=\"10s\"",
        ],
    )?;
    let map = find(&rendered, "ConfigMap", "r-weir-proxy")?;
    let text = map["data"]["weir-proxy.yaml"].as_str().context("the config file")?;
    assert!(text.contains("listen: 0.0.0.0:8081"), "{text}");
    assert!(text.contains("drainTimeout: 10s"), "{text}");
    assert!(text.contains("x-served-by"), "{text}");
    // null is a value: it turns the side header off, and must reach the file.
    let off = helm.template("r", "weir-system", &["proxy.config={\"sideHeader\":null}"])?;
    let off = find(&off, "ConfigMap", "r-weir-proxy")?["data"]["weir-proxy.yaml"].clone();
    assert!(off.as_str().is_some_and(|t| t.contains("sideHeader: null")), "{off}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("weir-proxy.yaml");
    std::fs::write(&file, text)?;
    let out = std::process::Command::new(workspace_binary("weir-proxy")?)
        .arg("--check")
        .arg(&file)
        .output()?;
    assert!(
        out.status.success(),
        "weir-proxy --check refused the chart's config:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // maxUnavailable 0 is a value, not "unset".
    let strict = helm.template("r", "weir-system", &["proxy.pdb.maxUnavailable=0"])?;
    let budget = &find(&strict, "PodDisruptionBudget", "r-weir-proxy")?["spec"];
    assert_eq!(budget["maxUnavailable"], 0, "{budget}");
    assert!(budget.get("minAvailable").is_none(), "{budget}");

    // The Deployment mounts that file and points the proxy at it and at the gateway's routes.
    let proxy = find(&rendered, "Deployment", "r-weir-proxy")?;
    let args = &proxy["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "--config=/etc/weir/weir-proxy.yaml", "{args}");
    assert_eq!(args[1], "--kube-routes=weir.dev/gateway=weir", "{args}");
    Ok(())
}

/// Every series name `/metrics` text can carry, from its `# TYPE` lines.
fn series_names(text: &str, into: &mut BTreeSet<String>) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        match kind {
            "counter" => {
                into.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    into.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                into.insert(name.to_owned());
            }
        }
    }
}

/// What weir exports: every series name a scrape can carry, and the label values series
/// carry now.
struct Exported {
    names: BTreeSet<String>,
    /// metric -> label -> values seen.
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// Adds the series of `/metrics` text to `labels`.
fn series_labels(text: &str, labels: &mut BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((inside, _)) = rest.split_once('}') else {
            continue;
        };
        let metric = labels.entry(name.to_owned()).or_default();
        for pair in inside.split(',') {
            if let Some((label, value)) = pair.split_once('=') {
                metric
                    .entry(label.to_owned())
                    .or_default()
                    .insert(value.trim_matches('"').to_owned());
            }
        }
    }
}

/// What weir exports: a real weir-proxy's `/metrics` after one request (to a backend that
/// refuses it), and the controller's.
async fn exported_metrics() -> Result<Exported> {
    let dir = tempfile::tempdir()?;
    let (listen, admin) = (free_port()?, free_port()?);
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nroutes:\n  - {{ name: r, stable: {{ backend: a }} }}\nbackends:\n  a: {{ endpoints: [\"127.0.0.1:9\"] }}\n"
        ),
    )?;
    let proxy = Process::start(
        &workspace_binary("weir-proxy")?,
        &["--config".into(), config.display().to_string()],
        &[],
        dir.path().join("proxy.log"),
    )?;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    eventually("the proxy's /metrics", Duration::from_secs(30), || async {
        Ok(match get_ok(admin, "/metrics").await {
            Ok(_) => Check::Done(()),
            Err(e) => Check::Waiting(e.to_string()),
        })
    })
    .await
    .with_context(|| proxy.tail(20))?;
    // One request, so that the request metrics have series to read label names from.
    let refused = get_ok(([127, 0, 0, 1], listen).into(), "/").await;
    assert!(refused.is_err(), "a backend on port 9 answered: {refused:?}");
    let text = get_ok(admin, "/metrics").await?;
    let controller = weir::cluster::metrics::ControllerMetrics::default()
        .encode(&weir::cluster::lease::Leadership::default())
        .context("encode the controller's metrics")?;
    let mut exported = Exported {
        names: BTreeSet::new(),
        labels: BTreeMap::new(),
    };
    for text in [&text, &controller] {
        series_names(text, &mut exported.names);
        series_labels(text, &mut exported.labels);
    }
    Ok(exported)
}

/// The values of the `code` label of `weir_requests_total`, as DESIGN.md's metric table gives
/// them; a scrape shows only those that happened.
const REQUEST_CODES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "grpc_error", "error", "cancelled"];

/// The labels whose every value a scrape shows (their series start at 0), and `code`'s.
fn known_values(exported: &Exported, metric: &str, label: &str) -> Option<BTreeSet<String>> {
    if label == "code" {
        return Some(REQUEST_CODES.iter().map(|c| (*c).to_owned()).collect());
    }
    let complete = matches!(label, "source" | "result" | "outcome" | "phase");
    complete
        .then(|| exported.labels.get(metric).and_then(|l| l.get(label)).cloned())
        .flatten()
}

/// Each `label op "value"` matcher on a weir metric in `expr` that the metric does not carry:
/// a label no series of it has, or a value it never takes.
fn bad_matchers(expr: &str, exported: &Exported) -> Vec<String> {
    let mut bad = Vec::new();
    for (at, _) in expr.match_indices("weir_") {
        let rest = &expr[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (metric, after) = rest.split_at(end);
        let Some(inside) = after.strip_prefix('{').and_then(|a| a.split_once('}')).map(|(i, _)| i) else {
            continue;
        };
        let Some(labels) = exported.labels.get(metric) else {
            bad.push(format!("{metric} has no series to check {inside:?} against"));
            continue;
        };
        for matcher in inside.split(',').map(str::trim) {
            let Some(op_at) = matcher.find(['=', '!']) else {
                continue;
            };
            let (label, op_value) = matcher.split_at(op_at);
            let value = op_value.trim_start_matches(['=', '!', '~']).trim_matches('"');
            if !labels.contains_key(label) {
                bad.push(format!("{metric} has no label {label}"));
                continue;
            }
            if value.starts_with('$') {
                continue;
            }
            if let Some(known) = known_values(exported, metric, label) {
                for alternative in value.split('|') {
                    if !known.contains(alternative) {
                        bad.push(format!("{metric}{{{label}}} never is {alternative:?}"));
                    }
                }
            }
        }
    }
    bad
}

/// The metric names a PromQL expression reads: its identifiers that begin with `weir_`
/// (PromQL's functions, keywords and weir's label names never do).
fn metrics_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("weir_"))
        .collect()
}

/// Every PromQL expression in the dashboard: panel targets, and template variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.to_owned());
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_query_only_metrics_weir_exports() -> Result<()> {
    let exported = exported_metrics().await?;
    for name in [
        "weir_requests_total",
        "weir_rollout_outcomes_total",
        "weir_config_reloads_total",
    ] {
        assert!(exported.names.contains(name), "{name} not in {:?}", exported.names);
    }

    let path = chart().join("files/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let queries = dashboard_queries(&dashboard);
    let panels = dashboard["panels"].as_array().context("panels")?;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
    }
    let alerts: Value = serde_saphyr::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml"))?)?;
    let rules = alerts["groups"][0]["rules"].as_array().context("alert rules")?;
    let alert_exprs: Vec<String> = rules
        .iter()
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(alert_exprs.len(), rules.len(), "every rule has an expr");

    let mut used = BTreeSet::new();
    for expr in queries.iter().chain(&alert_exprs) {
        let names = metrics_in(expr);
        assert!(!names.is_empty(), "{expr:?} reads no weir metric");
        for name in names {
            assert!(
                exported.names.contains(name),
                "{expr:?} reads {name}, which weir does not export"
            );
            used.insert(name.to_owned());
        }
        let bad = bad_matchers(expr, &exported);
        assert!(bad.is_empty(), "{expr:?}: {bad:?}");
    }
    // What the dashboard must show: weight, requests and errors per side, both p99s,
    // cancellations, fail-fast trips, reloads, and the rollouts' phases.
    for needed in [
        "weir_candidate_weight_basis_points",
        "weir_requests_total",
        "weir_request_duration_seconds_bucket",
        "weir_response_first_byte_seconds_bucket",
        "weir_fail_fast_trips_total",
        "weir_config_reloads_total",
        "weir_rollouts",
        "weir_controller_leader",
    ] {
        assert!(used.contains(needed), "nothing shows {needed}");
    }
    assert!(
        queries.iter().any(|q| q.contains("code=\"cancelled\"")),
        "no panel shows cancellations"
    );
    let alert_names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alert_names,
        [
            "WeirFailFastTripped",
            "WeirRolloutAborted",
            "WeirConfigRejected",
            "WeirNoControllerLeader"
        ]
    );
    Ok(())
}

#[test]
fn promtool_accepts_the_alerts_and_the_prometheus_rule_carries_them_all() -> Result<()> {
    let promtool = weir_test_tools::debian_tool("promtool", "prometheus")?;
    let alerts = chart().join("files/alerts.yaml");
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&alerts)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");

    let rendered = Helm::new()?.template("r", "weir-system", &["monitoring.prometheusRule.enabled=true"])?;
    let rule = find(&rendered, "PrometheusRule", "r-weir")?;
    let file: Value = serde_saphyr::from_str(&std::fs::read_to_string(&alerts)?)?;
    assert_eq!(rule["spec"], file, "the PrometheusRule differs from files/alerts.yaml");
    Ok(())
}

/// The Prometheus Operator's CRDs for ServiceMonitor and PrometheusRule, from its Go module,
/// so the API server checks the chart's monitoring objects against their real schemas.
const PROMETHEUS_OPERATOR: (&str, &str) = ("github.com/prometheus-operator/prometheus-operator", "v0.88.0");

async fn install_crds(client: &kube::Client, files: &[&Path]) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)?;
        let name = crd.metadata.name.clone().context("a CRD has a name")?;
        crds.patch(&name, &PatchParams::apply("weir-tests").force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("apply {name}"))?;
        wait_established(&crds, &name).await?;
    }
    Ok(())
}

async fn install_monitoring_crds(client: &kube::Client) -> Result<()> {
    let (module, version) = PROMETHEUS_OPERATOR;
    let dir = tokio::task::spawn_blocking(move || weir_test_tools::go_module_dir(module, version)).await??;
    let crds = dir.join("example/prometheus-operator-crd");
    install_crds(
        client,
        &[
            &crds.join("monitoring.coreos.com_servicemonitors.yaml"),
            &crds.join("monitoring.coreos.com_prometheusrules.yaml"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_accepts_everything_the_chart_renders_in_a_server_side_dry_run() -> Result<()> {
    let ns = TestNamespace::create("chart_dry_run").await?;
    // Rollouts in one namespace, weir installed in another: Roles in both.
    let watched = TestNamespace::create("chart_dry_run_watched").await?;
    install_monitoring_crds(&ns.client).await?;
    let helm = Helm::new()?;
    let watch = format!("watchNamespace=\"{}\"", watched.name);
    let mut everything_on: Vec<&str> = EVERYTHING_ON
        .iter()
        .copied()
        .filter(|v| !v.starts_with("watchNamespace"))
        .collect();
    everything_on.push(&watch);
    for values in [&[][..], &everything_on[..]] {
        let rendered = helm.template("dry", &ns.name, values)?;
        assert!(rendered.len() >= 13, "{} objects rendered", rendered.len());
        for object in &rendered {
            strict_dry_run(&ns.client, object).await.with_context(|| {
                format!(
                    "strict field validation refused {} {} (values {values:?})",
                    object["kind"], object["metadata"]["name"]
                )
            })?;
        }
    }
    Ok(())
}

/// A server-side apply dry run, as `kubectl apply --dry-run=server --server-side` makes, with
/// strict field validation: an unknown or duplicated field fails instead of being dropped.
async fn strict_dry_run(client: &kube::Client, object: &Value) -> Result<()> {
    let api = api_for(client, object).await?;
    let name = object["metadata"]["name"].as_str().context("a name")?;
    let mut params = PatchParams::apply("weir-tests").force().validation_strict();
    params.dry_run = true;
    api.patch(name, &params, &Patch::Apply(object)).await?;
    Ok(())
}

/// Objects labelled as `release`'s, of every kind the chart makes or causes (ReplicaSets and
/// Pods of its Deployments), in `namespace` and cluster-wide.
async fn release_objects(client: &kube::Client, namespace: &str, release: &str) -> Result<Vec<String>> {
    let kinds = [
        ("apps", "v1", "Deployment"),
        ("apps", "v1", "ReplicaSet"),
        ("", "v1", "Pod"),
        ("", "v1", "Service"),
        ("", "v1", "ConfigMap"),
        ("", "v1", "ServiceAccount"),
        ("policy", "v1", "PodDisruptionBudget"),
        ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        ("rbac.authorization.k8s.io", "v1", "Role"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        ("monitoring.coreos.com", "v1", "ServiceMonitor"),
        ("monitoring.coreos.com", "v1", "PrometheusRule"),
    ];
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut found = Vec::new();
    for (group, version, kind) in kinds {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = discovery::pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        };
        for object in api.list(&ListParams::default().labels(&selector)).await?.items {
            found.push(format!("{kind} {}", object.metadata.name.unwrap_or_default()));
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_into_the_cluster_leaving_no_orphans() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let ns = TestNamespace::create("chart_install").await?;
    install_monitoring_crds(&ns.client).await?;
    let kubeconfig = weir_tests::shared()?.cluster.kubeconfig.clone();
    let helm = Helm::with_cluster(&kubeconfig)?;
    let chart = chart();
    let chart = chart.to_str().context("UTF-8 path")?;
    let release = "edge";
    let watch = format!("watchNamespace=\"{}\"", ns.name);
    let values = [
        "gateway=\"edge-gw\"",
        &watch,
        "proxy.replicas=3",
        "proxy.service.port=8081",
        "proxy.pdb.minAvailable=2",
        "controller.leaseDuration=\"20s\"",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
    ];
    let mut install = vec!["install", release, chart, "--namespace", &ns.name];
    for value in &values {
        install.extend(["--set-json", value]);
    }
    let notes = helm.run(&install)?;
    assert!(
        notes.contains("kubectl weir status --watch"),
        "NOTES name the next command:\n{notes}"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    wait_established(&crds, "rollouts.weir.dev").await?;

    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let proxy = deployments.get("edge-weir-proxy").await?;
    let spec = proxy.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    assert_eq!(pod.service_account_name.as_deref(), Some("edge-weir-proxy"));
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--kube-routes=weir.dev/gateway=edge-gw".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&format!("--namespace={}", ns.name)), "{args:?}");
    let security = container.security_context.as_ref().context("securityContext")?;
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        security.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let pre_stop = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
    assert_eq!(pre_stop.and_then(|h| h.sleep.as_ref()).map(|s| s.seconds), Some(5));
    assert!(pod.topology_spread_constraints.as_ref().is_some_and(|t| !t.is_empty()));

    let controller = deployments.get("edge-weir-controller").await?;
    let spec = controller.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(2), "two controllers, one leading");
    let container = &spec.template.spec.as_ref().context("pod spec")?.containers[0];
    let args = container.args.clone().unwrap_or_default();
    for arg in [
        "--gateway=edge-gw".to_owned(),
        format!("--namespace={}", ns.name),
        format!("--proxy-admin-service={}/edge-weir-proxy-admin", ns.name),
        "--lease-duration=20s".to_owned(),
        "--lease-name=edge-weir-controller".to_owned(),
    ] {
        assert!(args.contains(&arg), "{arg} not in {args:?}");
    }
    let probe = container.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    assert_eq!(probe.and_then(|g| g.path.as_deref()), Some("/healthz"));

    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let gateway = services.get("edge-weir-proxy").await?;
    let ports = gateway.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(ports[0].port, 8081);
    services.get("edge-weir-proxy-admin").await?;
    services.get("edge-weir-controller").await?;

    let maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let config = maps.get("edge-weir-proxy").await?;
    let file = config
        .data
        .unwrap_or_default()
        .remove("weir-proxy.yaml")
        .unwrap_or_default();
    assert!(file.contains("listen: 0.0.0.0:8080"), "{file}");
    let dashboard = maps.get("edge-weir-dashboard").await?;
    assert_eq!(
        dashboard
            .metadata
            .labels
            .unwrap_or_default()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1")
    );
    let json = dashboard
        .data
        .unwrap_or_default()
        .remove("weir.json")
        .unwrap_or_default();
    serde_json::from_str::<Value>(&json).context("the dashboard ConfigMap holds JSON")?;

    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ns.client.clone(), &ns.name);
    let budget = budgets.get("edge-weir-proxy").await?;
    assert_eq!(
        budget.spec.and_then(|s| s.min_available),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))
    );

    let accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    accounts.get("edge-weir-controller").await?;
    accounts.get("edge-weir-proxy").await?;
    let roles: Api<Role> = Api::namespaced(ns.client.clone(), &ns.name);
    let bindings: Api<RoleBinding> = Api::namespaced(ns.client.clone(), &ns.name);
    for name in ["edge-weir-controller", "edge-weir-controller-local", "edge-weir-proxy"] {
        roles.get(name).await.with_context(|| format!("Role {name}"))?;
        bindings
            .get(name)
            .await
            .with_context(|| format!("RoleBinding {name}"))?;
    }
    let found = release_objects(&ns.client, &ns.name, release).await?;
    for monitoring in ["ServiceMonitor edge-weir", "PrometheusRule edge-weir"] {
        assert!(found.iter().any(|f| f == monitoring), "{monitoring} missing: {found:?}");
    }
    assert!(
        !found.iter().any(|f| f.starts_with("ClusterRole")),
        "a namespaced install makes no ClusterRoles: {found:?}"
    );

    // Upgrade: more proxies, no PDB.
    let mut upgrade = vec!["upgrade", release, chart, "--namespace", &ns.name, "--reuse-values"];
    upgrade.extend([
        "--set-json",
        "proxy.replicas=4",
        "--set-json",
        "proxy.pdb.enabled=false",
    ]);
    helm.run(&upgrade)?;
    let proxy = deployments.get("edge-weir-proxy").await?;
    assert_eq!(proxy.spec.and_then(|s| s.replicas), Some(4));
    assert!(
        budgets.get_opt("edge-weir-proxy").await?.is_none(),
        "the upgrade left the PDB it no longer renders"
    );

    helm.run(&["uninstall", release, "--namespace", &ns.name])?;
    eventually("every object of the release gone", Duration::from_secs(60), || async {
        let left = release_objects(&ns.client, &ns.name, release).await?;
        Ok(if left.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("left: {left:?}"))
        })
    })
    .await?;
    // Helm's convention: CRDs stay, so that uninstalling never deletes every Rollout.
    crds.get("rollouts.weir.dev").await.context("the CRD stays")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_break_the_schema_fail_at_install_naming_the_value() -> Result<()> {
    let ns = TestNamespace::create("chart_bad_values").await?;
    let kubeconfig = weir_tests::shared()?.cluster.kubeconfig.clone();
    let helm = Helm::with_cluster(&kubeconfig)?;
    let chart = chart();
    let chart = chart.to_str().context("UTF-8 path")?;
    let cases = [
        ("proxy.replicas=0", "/proxy/replicas", "minimum"),
        ("proxy.replicas=\"three\"", "/proxy/replicas", "want integer"),
        ("proxy.logFormat=\"xml\"", "/proxy/logFormat", "one of"),
        ("proxy.drainTimeout=\"soon\"", "/proxy/drainTimeout", "soon"),
        ("controller.leaseDuration=\"15\"", "/controller/leaseDuration", "15"),
        (
            "controller.leaseDuration=\"500ms\"",
            "/controller/leaseDuration",
            "500ms",
        ),
        ("proxy.drainTimeout=\"0s\"", "/proxy/drainTimeout", "0s"),
        ("gateway=\"Not A Label\"", "/gateway", "Not A Label"),
        ("proxy.servce={}", "/proxy", "servce"),
        ("proxy.config={\"listen\":\"0.0.0.0:1\"}", "/proxy/config/listen", ""),
        ("proxy.service.type=\"Ingress\"", "/proxy/service/type", "one of"),
        ("image.pullPolicy=\"Sometimes\"", "/image/pullPolicy", "one of"),
    ];
    for (i, (value, path, detail)) in cases.into_iter().enumerate() {
        let release = format!("bad-{i}");
        let (ok, stdout, stderr) =
            helm.try_run(&["install", &release, chart, "--namespace", &ns.name, "--set-json", value])?;
        assert!(!ok, "helm install accepted {value}:\n{stdout}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{value}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("at '{path}'")),
            "{value}: the error does not name {path}:\n{stderr}"
        );
        assert!(
            stderr.contains(detail),
            "{value}: the error does not say {detail:?}:\n{stderr}"
        );
        let (_, list, _) = helm.try_run(&["list", "--all", "--namespace", &ns.name, "--short"])?;
        assert!(
            !list.contains(&release),
            "a refused install left release {release}: {list}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_rollout_passes_weirs_validation_and_the_api_servers() -> Result<()> {
    let ns = TestNamespace::create("example_rollout").await?;
    weir_tests::fixture::apply_crd(&ns.client).await?;
    let path = chart().join("../../examples/rollout.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut objects = weir_tests::helm::objects(&text)?;
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Deployment", "Service", "Service", "Rollout"]);
    for object in &mut objects {
        object["metadata"]["namespace"] = json!(ns.name);
        strict_dry_run(&ns.client, object).await.with_context(|| {
            format!(
                "the API server refused {} {}",
                object["kind"], object["metadata"]["name"]
            )
        })?;
    }
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert!(container["readinessProbe"].is_object(), "{container}");
        assert_eq!(container["resources"]["requests"]["nvidia.com/gpu"], 1, "{container}");
    }
    let rollout: weir::rollout::Rollout = serde_json::from_value(objects[4].clone())?;
    let mut spec = rollout.spec.clone();
    // As the controller does: the route is named after the Rollout unless it says otherwise.
    spec.route.name.get_or_insert_with(|| "sentiment".to_owned());
    if let Err(errors) = weir::rollout::validate::validate(&spec) {
        bail!(
            "weir refuses the example: {}",
            weir::rollout::validate::describe(&errors)
        );
    }
    Ok(())
}
