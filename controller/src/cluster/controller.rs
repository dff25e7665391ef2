//! `weir controller`: a kube-runtime controller over Rollouts (and the Deployments and route
//! ConfigMaps they name), acting only while it holds the Lease. Each reconcile reads the
//! Rollout fresh from the API server, runs the same [`Reconciler`] as the demo through the
//! Kubernetes ports, and writes status only onto the version it read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::lease::{Election, Leadership};
use super::metrics::ControllerMetrics;
use super::report::KubeReport;
use super::targets::{Cidr, SharedTargets, Target, default_allow};
use super::traffic::{KubeTraffic, config_map_name};
use super::workloads::KubeWorkloads;
use super::{GATEWAY_LABEL, chain, finalizer, request};
use crate::ports::Workloads;
use crate::reconcile::{Input, Reconciler};
use crate::rollout::Rollout;
use crate::rollout::validate::validate;
use crate::source::Source;
use crate::source::prometheus::PrometheusSource as PrometheusClient;
use crate::source::proxies::ProxyScrape;
use crate::status::{Phase, RolloutStatus, system_time};

/// `weir controller`'s flags.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("proxies").required(true).args(["proxy_admin_urls", "proxy_admin_service"])))]
pub struct ControllerArgs {
    /// Watch Rollouts in this namespace only (default: all namespaces).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Act only on Rollouts naming this gateway.
    #[arg(long, default_value = "weir")]
    pub gateway: String,
    /// Scrape this proxy admin URL for the `proxy` metrics source, like http://10.0.0.7:9901
    /// (repeatable; every proxy replica of the gateway must be listed).
    #[arg(long = "proxy-admin-url")]
    pub proxy_admin_urls: Vec<String>,
    /// Scrape the ready endpoints of this Service (NS/NAME, its first port): the proxies'
    /// admin Service.
    #[arg(long, value_parser = parse_namespaced)]
    pub proxy_admin_service: Option<(String, String)>,
    /// Scrape discovered targets only inside this range (repeatable; default: loopback and the
    /// /16 of $POD_IP).
    #[arg(long)]
    pub scrape_allow: Vec<Cidr>,
    /// Serve /metrics and /healthz here.
    #[arg(long, default_value = "127.0.0.1:9902")]
    pub admin: SocketAddr,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Name of the Lease whose holder acts: one per gateway (replicas of one install share it).
    #[arg(long, default_value = super::lease::DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// How long the Lease holds without renewal: the longest a crashed leader goes unreplaced
    /// (whole seconds, at least 1s).
    #[arg(long, default_value = "15s", value_parser = lease_duration)]
    pub lease_duration: Duration,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// `NS/NAME`.
fn parse_namespaced(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.to_owned(), name.to_owned())),
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// A client as kubectl would build it: `--kubeconfig`, then `$KUBECONFIG` or `~/.kube/config`,
/// then the in-cluster config; `--context` picks the context.
pub async fn client(kubeconfig: Option<&PathBuf>, context: Option<&str>) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let raw = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(raw, &options).await?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// What every reconcile shares.
struct Context {
    client: kube::Client,
    args: ControllerArgs,
    leadership: Leadership,
    metrics: Arc<ControllerMetrics>,
    reporter: Reporter,
    targets: SharedTargets,
}

/// A reconcile that failed; its condition is on the Rollout.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

/// `--lease-duration`: a Lease holds whole seconds, and a replica tries every fifth of it, so
/// under a second it would be rounded up while the replicas hammer the API server.
fn lease_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!("{text} is not a whole number of seconds of at least 1s"));
    }
    Ok(duration)
}

/// How often a controller that cannot reach the API server at startup tries again.
const STARTUP_RETRY: Duration = Duration::from_secs(2);

/// What a first request to the API server says about the kubeconfig.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// It works.
    Granted,
    /// It will never work as written: exit and say why.
    Refused(String),
    /// The server could not be reached; it may be starting. Try again.
    Unreachable(String),
}

/// Sorts the answer to the first request by whether trying again can help.
fn access_of(result: Result<(), kube::Error>, namespace: Option<&str>) -> Access {
    let scope = namespace.map_or_else(|| "in any namespace".to_owned(), |ns| format!("in namespace {ns}"));
    match result {
        Ok(()) => Access::Granted,
        Err(kube::Error::Api(status)) if status.code == 401 => Access::Refused(format!(
            "the API server refused the kubeconfig's credentials (401 Unauthorized: {}): they are wrong or expired",
            status.message
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Access::Refused(format!(
            "the kubeconfig's user may not list Rollouts {scope} (403 Forbidden: {}); grant it the controller's role",
            status.message
        )),
        Err(kube::Error::Api(status)) if status.code == 404 => Access::Refused(format!(
            "the API server does not serve Rollouts (404: {}); install the CRD with `weir crd | kubectl apply -f -`",
            status.message
        )),
        Err(error @ (kube::Error::Auth(_) | kube::Error::Discovery(_) | kube::Error::InferConfig(_))) => {
            Access::Refused(format!("the kubeconfig cannot be used: {}", chain(&error)))
        }
        Err(error) if tls_rejected(&error) => Access::Refused(format!(
            "the API server's certificate is not trusted by the kubeconfig's CA: {}",
            chain(&error)
        )),
        Err(error) => Access::Unreachable(chain(&error)),
    }
}

/// Whether a request failed because the server's certificate was refused.
fn tls_rejected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        // An I/O error's `source` skips the error it wraps: look inside it too.
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if e.downcast_ref::<rustls::Error>().is_some()
            || wrapped.is_some_and(|w| w.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Checks the kubeconfig with one real request before anything starts: credentials that are
/// wrong or expired, a missing permission or CRD end the controller with the reason, while an
/// API server not reachable yet is waited for.
async fn check_access(client: &kube::Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let rollouts: Api<Rollout> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    loop {
        let result = rollouts.list_metadata(&ListParams::default().limit(1)).await.map(drop);
        match access_of(result, namespace) {
            Access::Granted => return Ok(()),
            Access::Refused(why) => anyhow::bail!("{why}"),
            Access::Unreachable(why) => {
                tracing::warn!(error = %why, "cannot reach the API server; trying again");
                tokio::time::sleep(STARTUP_RETRY).await;
            }
        }
    }
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    crate::crash::warn_if_ignored();
    let client = client(args.kubeconfig.as_ref(), args.context.as_deref()).await?;
    check_access(&client, args.namespace.as_deref()).await?;
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let leadership = Leadership::default();
    let election = Arc::new(Election {
        api: Api::<Lease>::namespaced(client.clone(), &lease_namespace),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: args.lease_duration,
        leadership: leadership.clone(),
    });
    let electing = tokio::spawn(Arc::clone(&election).run());
    let metrics = Arc::new(ControllerMetrics::default());
    let targets: SharedTargets = Arc::new(ArcSwap::from_pointee(
        args.proxy_admin_urls
            .iter()
            .map(|url| Target {
                url: url.trim_end_matches('/').to_owned(),
                refused: None,
            })
            .collect(),
    ));
    if let Some((namespace, name)) = args.proxy_admin_service.clone() {
        let allow = if args.scrape_allow.is_empty() {
            default_allow(std::env::var("POD_IP").ok().as_deref())
        } else {
            args.scrape_allow.clone()
        };
        tokio::spawn(super::targets::follow(
            client.clone(),
            namespace,
            name,
            allow,
            Arc::clone(&targets),
        ));
    }
    let admin = super::admin::serve(
        args.admin,
        Arc::clone(&metrics),
        Arc::clone(&targets),
        leadership.clone(),
    )
    .await?;
    let context = Arc::new(Context {
        client: client.clone(),
        leadership,
        metrics,
        targets,
        reporter: Reporter {
            controller: "weir-controller".into(),
            instance: Some(identity),
        },
        args: args.clone(),
    });
    tracing::info!(admin = %admin, gateway = %args.gateway, "weir controller started");

    let (rollouts, deployments, config_maps) = match &args.namespace {
        Some(ns) => (
            Api::<Rollout>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let controller = Controller::new(rollouts, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(config_maps, watcher::Config::default().labels(GATEWAY_LABEL))
        .watches(deployments, watcher::Config::default(), move |d: Deployment| {
            let namespace = d.namespace().unwrap_or_default();
            let name = d.name_any();
            store
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace().as_deref() == Some(namespace.as_str())
                        && (r.spec.stable.deployment == name
                            || r.spec.candidate.deployment == name
                            || r.spec
                                .strategy
                                .experiment
                                .iter()
                                .flat_map(|e| &e.variants)
                                .any(|v| v.side.deployment == name))
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown_signal())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            // A failed reconcile is logged by error_policy; a watch that fails (a missing
            // permission, an API server away) would otherwise go unsaid while nothing moves.
            if let Err(kube::runtime::controller::Error::QueueError(error)) = result {
                tracing::warn!(%error, "watching Rollouts, Deployments or ConfigMaps failed; retrying");
            }
        })
        .await;
    // Every reconcile under way has finished: nothing acts any more, so the Lease can go.
    electing.abort();
    if let Err(error) = election.release().await {
        tracing::warn!(%error, "releasing the Lease failed; another replica takes over once it expires");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn error_policy(_: Arc<Rollout>, error: &Failed, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(seen: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, Failed> {
    let leader = ctx.leadership.is_leader();
    ctx.metrics.set_leader(leader);
    if !leader {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let started = Instant::now();
    let namespace = seen.namespace().unwrap_or_default();
    let name = seen.name_any();
    let api = Api::<Rollout>::namespaced(ctx.client.clone(), &namespace);
    // Fresh from the API server, not the cache: a status written a moment ago must be the one
    // decided from, or a step would be taken twice.
    let rollout = match api.get_opt(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            ctx.metrics.phase(&namespace, &name, None);
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Failed(format!("reading Rollout {namespace}/{name}: {e}"))),
    };
    if rollout.spec.gateway != ctx.args.gateway {
        return Ok(Action::await_change());
    }
    let result = reconcile_one(&rollout, &ctx, api).await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_one(rollout: &Rollout, ctx: &Context, api: Api<Rollout>) -> Result<Action, Failed> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let surge = rollout.status.as_ref().and_then(|s| s.max_surge);
    if rollout.metadata.deletion_timestamp.is_some() {
        return deleted(rollout, ctx, &api).await;
    }
    // Before any look that may scale stable down: the finalizer follows status' surge. The
    // status write needs the Rollout's version, so a change is read again first.
    let changed = finalizer::set(&api, rollout, surge.is_some())
        .await
        .map_err(|e| Failed(format!("Rollout {namespace}/{name}: {}", chain(&*e))))?;
    if changed {
        return Ok(Action::requeue(Duration::ZERO));
    }
    let mut spec = rollout.spec.clone();
    spec.route.name.get_or_insert_with(|| name.clone());
    let status = rollout.status.clone().unwrap_or_default();
    let request = rollout
        .annotations()
        .get(request::ANNOTATION)
        .and_then(|value| match request::parse(value) {
            Ok(request) => Some(request),
            Err(why) => {
                tracing::warn!(rollout = %name, %why, "ignoring the request annotation");
                None
            }
        });
    let valid = validate(&spec).ok();
    let route = spec.route.name.clone().unwrap_or_default();
    let owner = rollout
        .controller_owner_ref(&())
        .ok_or_else(|| Failed(format!("Rollout {namespace}/{name} has no uid yet")))?;
    let client = ctx.client.clone();
    let report = KubeReport {
        api,
        client: client.clone(),
        reporter: ctx.reporter.clone(),
        name: name.clone(),
        resource_version: rollout.resource_version(),
        reference: rollout.object_ref(&()),
    };
    // A side following a Service that does not exist would send its traffic nowhere: no
    // rollout starts until it does. One already under way goes on being decided, so that the
    // candidate's failures (503 no-endpoint) still abort it.
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let starting = matches!(status.phase, Phase::Idle | Phase::Succeeded | Phase::Aborted);
    let mut sides = vec![
        ("spec.stable.service".to_owned(), &spec.stable),
        ("spec.candidate.service".to_owned(), &spec.candidate),
    ];
    for (i, variant) in spec
        .strategy
        .experiment
        .iter()
        .flat_map(|e| e.variants.iter().enumerate())
    {
        sides.push((format!("spec.strategy.experiment.variants[{i}].service"), &variant.side));
    }
    for (field, side) in sides.into_iter().filter(|_| starting) {
        let Some(service) = &side.service else { continue };
        match services.get_opt(service).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let why = format!("Service {service} ({field}) does not exist in namespace {namespace}");
                return failed(&report, &status, rollout.metadata.generation, why).await;
            }
            Err(e) => {
                let why = chain(&*super::api_error(e, "get", "services"));
                return failed(&report, &status, rollout.metadata.generation, why).await;
            }
        }
    }
    let metrics = match &spec.analysis.source.prometheus {
        Some(p) => match PrometheusClient::new(&p.url) {
            Ok(source) => Source::Prometheus(source),
            Err(e) => {
                let why = format!("spec.analysis.source.prometheus.url {:?}: {e}", p.url);
                return failed(&report, &status, rollout.metadata.generation, why).await;
            }
        },
        None => {
            let targets = ctx.targets.load();
            let (scraped, refused): (Vec<&Target>, Vec<&Target>) = targets.iter().partition(|t| t.refused.is_none());
            Source::Proxies(ProxyScrape::with_refused(
                scraped.iter().map(|t| t.url.clone()).collect(),
                refused
                    .iter()
                    .map(|t| (t.url.clone(), t.refused.clone().unwrap_or_default()))
                    .collect(),
            ))
        }
    };
    let reconciler = Reconciler {
        workloads: KubeWorkloads::new(
            client.clone(),
            &namespace,
            &spec.stable.deployment,
            &spec.candidate.deployment,
            spec.scaling.max_surge.is_some(),
        ),
        traffic: KubeTraffic {
            api: Api::namespaced(client.clone(), &namespace),
            all: match &ctx.args.namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            },
            name: config_map_name(&name),
            namespace: namespace.clone(),
            gateway: spec.gateway.clone(),
            owner,
            route,
            template: valid.map(|v| v.route_config),
            client: client.clone(),
            reporter: ctx.reporter.clone(),
            rollout: rollout.object_ref(&()),
        },
        metrics,
        report,
    };
    let now = SystemTime::now();
    let input = Input {
        spec: &spec,
        status: &status,
        request,
        generation: rollout.metadata.generation,
        now,
    };
    match reconciler.reconcile(input).await {
        Ok(decision) => {
            let next = &decision.status;
            ctx.metrics.phase(&namespace, &name, Some(next.phase));
            if next.phase == Phase::Aborted && status.phase != Phase::Aborted {
                let since = status
                    .evidence
                    .as_ref()
                    .and_then(|e| e.window_start.as_ref())
                    .map(|m| system_time(&m.at))
                    .unwrap_or(now);
                ctx.metrics
                    .aborted_in(now.duration_since(since).unwrap_or_default().as_secs_f64());
            }
            Ok(Action::requeue(decision.requeue_after))
        }
        Err(error) => {
            let why = chain(&error);
            failed(&reconciler.report, &status, rollout.metadata.generation, why).await
        }
    }
}

/// A Rollout being deleted: stable gets back any pods maxSurge took, then the finalizer goes
/// (and with the Rollout, its route ConfigMap).
async fn deleted(rollout: &Rollout, ctx: &Context, api: &Api<Rollout>) -> Result<Action, Failed> {
    if !finalizer::has(rollout) {
        return Ok(Action::await_change());
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let status = rollout.status.clone().unwrap_or_default();
    if status.max_surge.is_some()
        && let Some(replicas) = status.stable_replicas
    {
        let spec = &rollout.spec;
        let workloads = KubeWorkloads::new(
            ctx.client.clone(),
            &namespace,
            &spec.stable.deployment,
            &spec.candidate.deployment,
            false,
        );
        workloads
            .scale_stable(replicas)
            .await
            .map_err(|e| Failed(format!("restoring stable before the Rollout goes: {}", chain(&e))))?;
        tracing::info!(rollout = %rollout.name_any(), replicas, "stable restored: the Rollout under maxSurge is being deleted");
    }
    finalizer::set(api, rollout, false).await.map_err(|e| {
        Failed(format!(
            "removing the finalizer {}: {}",
            finalizer::FINALIZER,
            chain(&*e)
        ))
    })?;
    Ok(Action::await_change())
}

/// Records a failed reconcile on the Rollout (condition `Reconciled=False` with the whole
/// chain of causes), then fails so that it is retried.
async fn failed(
    report: &KubeReport,
    status: &RolloutStatus,
    generation: Option<i64>,
    why: String,
) -> Result<Action, Failed> {
    let mut next = status.clone();
    super::reconciled_condition(&mut next.conditions, false, &why, generation);
    if next != *status
        && let Ok(value) = serde_json::to_value(&next)
        && let Err(e) = report.write_status(value).await
    {
        tracing::warn!(error = %chain(&e), "cannot record a failed reconcile");
    }
    Err(Failed(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Result<(), kube::Error> {
        Err(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "no".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn a_kubeconfig_that_can_never_work_is_refused_and_an_unreachable_server_waited_for() {
        assert_eq!(access_of(Ok(()), Some("ns")), Access::Granted);
        for (code, says) in [
            (401, "wrong or expired"),
            (403, "may not list Rollouts in namespace ns"),
            (404, "weir crd"),
        ] {
            match access_of(api(code), Some("ns")) {
                Access::Refused(why) => assert!(why.contains(says), "{code}: {why}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let tls = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(matches!(
            access_of(Err(kube::Error::Service(Box::new(refused))), None),
            Access::Unreachable(_)
        ));
        assert!(
            matches!(access_of(Err(kube::Error::Service(Box::new(tls))), None), Access::Refused(why) if why.contains("not trusted"))
        );
        assert!(
            matches!(access_of(api(500), None), Access::Unreachable(_)),
            "a server error may pass"
        );
    }

    #[test]
    fn a_lease_duration_is_whole_seconds_of_at_least_one() {
        assert_eq!(lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(lease_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0s", "500ms", "1500ms", "soon"] {
            assert!(lease_duration(bad).is_err(), "{bad}");
        }
    }
}
