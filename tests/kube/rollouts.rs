//! `weir controller` against the real control plane (tests/cluster), with a real `weir-proxy`
//! process watching the route ConfigMaps and model servers in processes of their own
//! (`weir-test-model-server`) over loopback. Traffic goes only to loopback: the Rollouts name
//! their sides by static endpoints.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use weir::demo::backend::Behavior;
use weir::rollout::Rollout;
use weir::status::Phase;
use weir_tests::fixture::{
    Load, ModelServer, apply_crd, deployment, get_json, get_with, loopback_proxy_config, model, wait_http,
};
use weir_tests::process::{Process, free_port, workspace_binary};
use weir_tests::{Check, TestNamespace, eventually};

mod experiment;

/// Generous: a debug-build controller on a 2-core machine shared with other tests.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

/// The route every test's Rollout owns (each test has its own gateway and proxy).
const ROUTE: &str = "model";

/// One test's world: its namespace (whose name is also its gateway), the two Deployments, two
/// model server processes, a proxy and a controller.
struct World {
    ns: TestNamespace,
    kubeconfig: std::path::PathBuf,
    stable: ModelServer,
    candidate: ModelServer,
    proxy_listen: SocketAddr,
    proxy_admin: SocketAddr,
    _proxy: Process,
    controller: Process,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(test: &str, candidate: Behavior) -> Result<World> {
        World::start_crashing(test, candidate, None).await
    }

    /// As [`World::start`], with a controller that stops dead at `crash_after`.
    async fn start_crashing(test: &str, candidate: Behavior, crash_after: Option<&str>) -> Result<World> {
        World::start_serving(test, model("v1", 0.0), candidate, crash_after).await
    }

    /// As [`World::start_crashing`], with stable's model server behaving as `stable`.
    async fn start_serving(
        test: &str,
        stable: Behavior,
        candidate: Behavior,
        crash_after: Option<&str>,
    ) -> Result<World> {
        let ns = TestNamespace::create(test).await?;
        let kubeconfig = weir_tests::shared()?.cluster.kubeconfig.clone();
        apply_crd(&ns.client).await?;
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let post = PostParams::default();
        deployments
            .create(&post, &deployment("m-v1", "registry.invalid/m:1", 2)?)
            .await?;
        deployments
            .create(&post, &deployment("m-v2", "registry.invalid/m:1", 0)?)
            .await?;

        let dir = tempfile::tempdir()?;
        let stable = ModelServer::start(stable, 1, dir.path()).await?;
        let candidate = ModelServer::start(candidate, 2, dir.path()).await?;

        let (config, proxy_listen, proxy_admin) = loopback_proxy_config(dir.path())?;
        let kubeconfig_text = kubeconfig.display().to_string();
        let proxy = Process::start(
            &workspace_binary("weir-proxy")?,
            &[
                "--config".into(),
                config.display().to_string(),
                "--kube-routes".into(),
                format!("weir.dev/gateway={}", ns.name),
                "--namespace".into(),
                ns.name.clone(),
            ],
            &[("KUBECONFIG", &kubeconfig_text), ("RUST_LOG", "info")],
            dir.path().join("proxy.log"),
        )?;
        wait_http(proxy_admin, "/readyz")
            .await
            .with_context(|| proxy.tail(30))?;
        let controller = start_controller(
            &ns.name,
            &kubeconfig,
            proxy_admin,
            dir.path(),
            "controller",
            crash_after,
        )?;
        Ok(World {
            ns,
            kubeconfig,
            stable,
            candidate,
            proxy_listen,
            proxy_admin,
            _proxy: proxy,
            controller,
            dir,
        })
    }

    /// Replaces the controller with a fresh one named `name`, reaching the API server by
    /// `kubeconfig` and the proxy's metrics at `proxy_admin` (the world's own when `None`).
    fn restart_controller(
        &mut self,
        name: &str,
        kubeconfig: Option<&std::path::Path>,
        proxy_admin: Option<SocketAddr>,
    ) -> Result<()> {
        self.controller.kill();
        self.controller = start_controller(
            &self.ns.name,
            kubeconfig.unwrap_or(&self.kubeconfig),
            proxy_admin.unwrap_or(self.proxy_admin),
            self.dir.path(),
            name,
            None,
        )?;
        Ok(())
    }

    fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    /// A canary Rollout of m-v1 to m-v2 over the two model servers.
    async fn create_rollout(&self, strategy: serde_json::Value) -> Result<()> {
        let checks = json!([
            { "metric": "error-ratio", "max": 0.1 },
            { "metric": "latency-p99", "maxMs": 2000 }
        ]);
        self.create_rollout_checking(strategy, checks).await
    }

    /// As [`World::create_rollout`], with these analysis checks.
    async fn create_rollout_checking(&self, strategy: serde_json::Value, checks: serde_json::Value) -> Result<()> {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": { "name": "sentiment" },
            "spec": {
                "gateway": self.ns.name,
                "route": { "name": ROUTE, "sticky": { "header": "x-user-id" }, "timeout": "5s" },
                "stable": { "deployment": "m-v1", "endpoints": [self.stable.addr.to_string()] },
                "candidate": { "deployment": "m-v2", "endpoints": [self.candidate.addr.to_string()] },
                "strategy": strategy,
                "analysis": {
                    "interval": "1s",
                    "warmup": "0s",
                    "minRequests": 20,
                    "failureLimit": 2,
                    "detect": { "errorRatio": 5.0, "errorRateFloor": 0.02 },
                    "progressDeadline": "2m",
                    "checks": checks
                }
            }
        }))?;
        self.rollouts().create(&PostParams::default(), &rollout).await?;
        Ok(())
    }

    /// Pushes a new image to the candidate, as a developer's deploy would.
    async fn push_candidate(&self, image: &str) -> Result<()> {
        let patch =
            json!({ "spec": { "template": { "spec": { "containers": [{ "name": "server", "image": image }] } } } });
        self.deployments()
            .patch("m-v2", &PatchParams::default(), &Patch::Strategic(&patch))
            .await?;
        Ok(())
    }

    /// Waits until the Rollout's status satisfies `done`, showing the last status on timeout.
    async fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&weir::status::RolloutStatus) -> bool,
    ) -> Result<weir::status::RolloutStatus> {
        let api = self.rollouts();
        let result = eventually(what, ROLLOUT_TIMEOUT, || async {
            let status = api.get("sentiment").await?.status.unwrap_or_default();
            Ok(if done(&status) {
                Check::Done(status)
            } else {
                Check::Waiting(format!(
                    "{:?} step {} weight {}: {}",
                    status.phase, status.step, status.candidate_weight, status.message
                ))
            })
        })
        .await;
        result.with_context(|| format!("controller log:\n{}", self.controller.tail(40)))
    }

    /// The route as the proxy serves it (its `/config`), `null` while it has none.
    async fn proxy_route(&self) -> Result<serde_json::Value> {
        let config = get_json(self.proxy_admin, "/config").await?;
        Ok(config["config"]["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["name"] == ROUTE).cloned())
            .unwrap_or_default())
    }

    /// The route's candidate weight as the proxy serves it.
    async fn proxy_weight(&self) -> Result<Option<u64>> {
        Ok(self.proxy_route().await?["candidateWeight"].as_u64())
    }

    /// The image of the stable Deployment's (first) container.
    async fn stable_image(&self) -> Result<Option<String>> {
        let stable = self.deployments().get("m-v1").await?;
        Ok(stable
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.image))
    }

    /// Waits until the proxy serves the route at `weight` basis points.
    async fn wait_proxy_weight(&self, weight: u64) -> Result<()> {
        eventually(
            &format!("the proxy at weight {weight}"),
            Duration::from_secs(30),
            || async {
                Ok(match self.proxy_weight().await? {
                    Some(w) if w == weight => Check::Done(()),
                    other => Check::Waiting(format!("weight {other:?}")),
                })
            },
        )
        .await
    }

    /// Waits until the candidate Deployment asks for `replicas`.
    async fn wait_candidate_replicas(&self, replicas: i32) -> Result<()> {
        eventually(
            &format!("the candidate at {replicas} replicas"),
            Duration::from_secs(30),
            || async {
                let now = self.deployments().get("m-v2").await?.spec.and_then(|s| s.replicas);
                Ok(if now == Some(replicas) {
                    Check::Done(())
                } else {
                    Check::Waiting(format!("{now:?}"))
                })
            },
        )
        .await
    }

    /// Pushes the candidate's new image under load and waits for the rollout's first step.
    async fn start_rollout_under_load(&self) -> Result<Load> {
        let load = Load::start(self.proxy_listen);
        self.push_candidate("registry.invalid/m:2").await?;
        self.wait_status("the first step", |s| {
            s.phase == Phase::Progressing && s.candidate_weight > 0
        })
        .await?;
        Ok(load)
    }

    /// Events on the Rollout once one with `reason` is among them: a decision's Events are
    /// posted after its status is written, so a test that saw the status waits for them.
    async fn events_after(&self, reason: &str) -> Result<Vec<String>> {
        eventually(&format!("the {reason} Event"), Duration::from_secs(30), || async {
            let events = self.events().await?;
            Ok(if count(&events, reason) > 0 {
                Check::Done(events)
            } else {
                Check::Waiting(format!("{events:?}"))
            })
        })
        .await
    }

    /// Events on the Rollout, as `reason: note` lines in time order.
    async fn events(&self) -> Result<Vec<String>> {
        let events: Api<Event> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let mut list = events.list(&ListParams::default()).await?.items;
        list.retain(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Rollout"));
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        Ok(list
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                )
            })
            .collect())
    }
}

fn start_controller(
    gateway: &str,
    kubeconfig: &std::path::Path,
    proxy_admin: SocketAddr,
    dir: &std::path::Path,
    name: &str,
    crash_after: Option<&str>,
) -> Result<Process> {
    start_controller_leasing(gateway, kubeconfig, proxy_admin, dir, name, crash_after, "3s")
}

/// As [`start_controller`], with a Lease of `lease`.
fn start_controller_leasing(
    gateway: &str,
    kubeconfig: &std::path::Path,
    proxy_admin: SocketAddr,
    dir: &std::path::Path,
    name: &str,
    crash_after: Option<&str>,
    lease: &str,
) -> Result<Process> {
    let mut envs = vec![("WEIR_LOG", "info,weir::reconcile=debug,kube=warn")];
    if let Some(point) = crash_after {
        envs.push(("WEIR_CRASH_AFTER", point));
    }
    Process::start(
        &workspace_binary("weir")?,
        &[
            "controller".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--namespace".into(),
            gateway.into(),
            "--gateway".into(),
            gateway.into(),
            "--lease-namespace".into(),
            gateway.into(),
            "--lease-duration".into(),
            lease.into(),
            "--proxy-admin-url".into(),
            format!("http://{proxy_admin}"),
            "--admin".into(),
            "127.0.0.1:0".into(),
        ],
        &envs,
        dir.join(format!("{name}.log")),
    )
}

fn canary(weights: &[f64]) -> serde_json::Value {
    json!({ "canary": { "steps": weights.iter().map(|w| json!({ "weight": w, "hold": "2s" })).collect::<Vec<_>>() } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_walks_its_steps_and_is_promoted() -> Result<()> {
    let healthy = model("v2", 0.0);
    let world = World::start("a_healthy_candidate_is_promoted", healthy).await?;
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    world
        .wait_status("the Rollout to be idle", |s| {
            s.phase == Phase::Idle && s.message.contains("matches stable")
        })
        .await?;
    world.wait_proxy_weight(0).await?;
    let load = Load::start(world.proxy_listen);
    let pushed = Instant::now();
    world.push_candidate("registry.invalid/m:2").await?;

    // The split follows the first step: about a fifth of the answers come from the candidate
    // (sticky users, so not exactly).
    world
        .wait_status("step 1 at 20%", |s| {
            s.phase == Phase::Progressing && s.candidate_weight == 2000
        })
        .await?;
    world.wait_proxy_weight(2000).await?;
    let before = load.sides();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = load.sides();
    let (stable, candidate) = (after.0 - before.0, after.1 - before.1);
    let share = candidate as f64 / (stable + candidate).max(1) as f64;
    let status = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
    if status.candidate_weight == 2000 {
        assert!(
            (0.1..0.3).contains(&share),
            "at 20% the candidate answered {candidate} of {}",
            stable + candidate
        );
    }

    let done = world
        .wait_status("the rollout to succeed", |s| s.phase == Phase::Succeeded)
        .await?;
    eprintln!(
        "promoted {:.1}s after the candidate was pushed",
        pushed.elapsed().as_secs_f64()
    );
    drop(load);
    assert_eq!(done.candidate_weight, 0);
    let stable = world.deployments().get("m-v1").await?;
    let image = stable
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].image.clone());
    assert_eq!(
        image.flatten().as_deref(),
        Some("registry.invalid/m:2"),
        "stable runs the analysed template"
    );
    let labels = stable
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    assert_eq!(
        labels.unwrap_or_default().get("app").map(String::as_str),
        Some("m-v1"),
        "with its own selector labels"
    );
    world.wait_candidate_replicas(0).await?;
    let events = world.events_after("RolloutSucceeded").await?;
    for reason in ["RolloutStarted", "StepAdvanced", "RolloutPromoting", "RolloutSucceeded"] {
        assert_eq!(count(&events, reason), 1, "{reason} once in {events:#?}");
    }
    let cm: Api<ConfigMap> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let route = cm.get("weir-rollout-sentiment").await?;
    let owner = route.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.kind.as_str()),
        Some("Rollout"),
        "owned by its Rollout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_a_fifth_of_its_answers_failing_is_aborted() -> Result<()> {
    let failing = model("v2", 0.2);
    let world = World::start("a_failing_candidate_is_aborted", failing).await?;
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    world
        .wait_status("the Rollout to be idle", |s| {
            s.phase == Phase::Idle && s.message.contains("matches stable")
        })
        .await?;
    let _load = world.start_rollout_under_load().await?;
    let step_started = Instant::now();
    let aborted = world.wait_status("the abort", |s| s.phase == Phase::Aborted).await?;
    let to_zero = step_started.elapsed();
    eprintln!(
        "weight 0 written {:.1}s after the bad step began",
        to_zero.as_secs_f64()
    );
    assert_eq!(aborted.candidate_weight, 0);
    world.wait_proxy_weight(0).await?;
    world.wait_candidate_replicas(0).await?;
    let events = world.events_after("RolloutAborted").await?;
    let abort = events
        .iter()
        .find(|e| e.starts_with("RolloutAborted:"))
        .with_context(|| format!("no RolloutAborted Event in {events:#?}"))?;
    assert!(abort.contains("error"), "the Event says why, with numbers: {abort}");
    assert!(abort.chars().any(|c| c.is_ascii_digit()), "{abort}");
    let ready = aborted.conditions.iter().find(|c| c.type_ == "Ready");
    assert!(
        ready.is_some_and(|c| c.status == "False" && !c.message.is_empty()),
        "a condition says why: {:?}",
        aborted.conditions
    );
    Ok(())
}

/// Runs `weir ARGS -n NS --kubeconfig K`: (exit code, stdout, stderr).
fn weir_cli(world: &World, args: &[&str]) -> Result<(i32, String, String)> {
    let out = std::process::Command::new(workspace_binary("weir")?)
        .args(args)
        .args(["-n", &world.ns.name, "--kubeconfig"])
        .arg(&world.kubeconfig)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_and_drives_a_rollout() -> Result<()> {
    let healthy = model("v2", 0.0);
    let world = World::start("the_cli_shows_and_drives_a_rollout", healthy).await?;
    // Long holds: the rollout stays in its first step while the CLI drives it.
    world
        .create_rollout(
            json!({ "canary": { "steps": [ { "weight": 20, "hold": "10m" }, { "weight": 50, "hold": "10m" } ] } }),
        )
        .await?;
    let _load = world.start_rollout_under_load().await?;

    let (code, table, _) = weir_cli(&world, &["status"])?;
    assert_eq!(code, 0);
    assert!(
        table.starts_with("NAME") && table.contains("sentiment") && table.contains("Progressing"),
        "{table}"
    );
    let (code, detail, _) = weir_cli(&world, &["status", "sentiment"])?;
    assert_eq!(code, 0);
    assert!(
        detail.contains(&format!("Rollout {}/sentiment", world.ns.name)) && detail.contains("Events:"),
        "{detail}"
    );
    let (code, json_text, _) = weir_cli(&world, &["status", "sentiment", "-o", "json"])?;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&json_text)?;
    assert_eq!(status["phase"], "Progressing", "{json_text}");
    let (code, list, _) = weir_cli(&world, &["status", "-o", "json"])?;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list)?["items"][0]["name"],
        "sentiment"
    );

    let asked = Instant::now();
    let (code, said, _) = weir_cli(&world, &["pause", "sentiment"])?;
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("pause requested"), "{said}");
    world.wait_status("paused", |s| s.phase == Phase::Paused).await?;
    eprintln!(
        "reconcile latency: `weir pause` to status Paused in {} ms",
        asked.elapsed().as_millis()
    );
    let (code, _, why) = weir_cli(&world, &["pause", "sentiment"])?;
    assert_eq!(code, 1, "pause does not apply to a paused rollout");
    assert!(why.contains("Paused"), "{why}");
    let (code, _, _) = weir_cli(&world, &["resume", "sentiment"])?;
    assert_eq!(code, 0);
    world.wait_status("resumed", |s| s.phase == Phase::Progressing).await?;
    let (code, _, _) = weir_cli(&world, &["abort", "sentiment"])?;
    assert_eq!(code, 0);
    world
        .wait_status("aborted", |s| s.phase == Phase::Aborted && s.candidate_weight == 0)
        .await?;
    let (code, _, _) = weir_cli(&world, &["retry", "sentiment"])?;
    assert_eq!(code, 0);
    world
        .wait_status("started again", |s| s.phase == Phase::Progressing)
        .await?;
    let (code, _, _) = weir_cli(&world, &["promote", "sentiment"])?;
    assert_eq!(code, 0);
    world.wait_status("promoted", |s| s.phase == Phase::Succeeded).await?;

    for verb in ["status", "promote", "abort", "pause", "resume", "retry"] {
        let (code, _, why) = weir_cli(&world, &[verb, "no-such-rollout"])?;
        assert_eq!(code, 1, "{verb} on a missing Rollout");
        assert!(
            why.contains("no-such-rollout") && why.contains("not found"),
            "{verb}: {why}"
        );
    }
    Ok(())
}

/// The Lease's holder, if any.
async fn lease_holder(world: &World) -> Result<Option<String>> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(world.ns.client.clone(), &world.ns.name);
    Ok(leases
        .get_opt("weir-controller")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controllers_only_the_lease_holder_acts_and_the_other_takes_over() -> Result<()> {
    let healthy = model("v2", 0.0);
    let mut world = World::start("two_controllers_one_leader", healthy).await?;
    let first = world.controller.id();
    let holder = eventually("a Lease holder", Duration::from_secs(30), || async {
        Ok(match lease_holder(&world).await? {
            Some(h) => Check::Done(h),
            None => Check::Waiting("no Lease yet".into()),
        })
    })
    .await?;
    assert!(
        holder.ends_with(&format!("-{first}")),
        "the first controller leads: {holder}"
    );
    let mut second = start_controller(
        &world.ns.name,
        &world.kubeconfig,
        world.proxy_admin,
        world.dir.path(),
        "second-controller",
        None,
    )?;
    world
        .create_rollout(json!({ "canary": { "steps": [ { "weight": 20, "hold": "10m" } ] } }))
        .await?;
    let _load = world.start_rollout_under_load().await?;
    assert_eq!(lease_holder(&world).await?, Some(holder.clone()), "still the first");
    let second_log = std::fs::read_to_string(&second.log)?;
    assert!(
        !second_log.contains("leading"),
        "the second controller never led while the first renewed:\n{second_log}"
    );

    world.controller.kill();
    let killed = Instant::now();
    let taken = eventually(
        "the second controller to take the Lease",
        Duration::from_secs(60),
        || async {
            Ok(match lease_holder(&world).await? {
                Some(h) if h.ends_with(&format!("-{}", second.id())) => Check::Done(h),
                other => Check::Waiting(format!("holder {other:?}")),
            })
        },
    )
    .await?;
    eprintln!(
        "{taken} took over {:.1}s after the leader was killed (lease 3s)",
        killed.elapsed().as_secs_f64()
    );
    // The new leader acts: it obeys a request.
    let (code, said, why) = weir_cli(&world, &["pause", "sentiment"])?;
    assert_eq!(code, 0, "{said}{why}");
    world
        .wait_status("paused by the new leader", |s| s.phase == Phase::Paused)
        .await?;
    assert!(second.running());
    Ok(())
}

/// A controller stopped with SIGTERM (a rolling update) releases the Lease: the other replica
/// takes over at its next try, long before the Lease would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_stopped_with_sigterm_releases_the_lease_and_the_other_takes_over_at_its_next_try() -> Result<()> {
    let mut world = World::start("sigterm_releases_the_lease", model("v2", 0.0)).await?;
    let start = |world: &World, name: &str| {
        start_controller_leasing(
            &world.ns.name,
            &world.kubeconfig,
            world.proxy_admin,
            world.dir.path(),
            name,
            None,
            "60s",
        )
    };
    // The world's own controller (a 3 s Lease) goes, so that the two here, with 60 s, decide.
    world.controller.kill();
    let mut first = start(&world, "first-60s")?;
    let first_id = format!("-{}", first.id());
    eventually("the first to lead", Duration::from_secs(60), || async {
        Ok(match lease_holder(&world).await? {
            Some(h) if h.ends_with(&first_id) => Check::Done(()),
            other => Check::Waiting(format!("holder {other:?}")),
        })
    })
    .await?;
    let second = start(&world, "second-60s")?;
    let second_id = format!("-{}", second.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()?;
    assert!(sent.success());
    let stopped = Instant::now();
    while first.running() {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM:\n{}",
            first.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Within 20 s of a 60 s Lease: released, not expired.
    eventually("the second to take the Lease", Duration::from_secs(20), || async {
        Ok(match lease_holder(&world).await? {
            Some(h) if h.ends_with(&second_id) => Check::Done(()),
            other => Check::Waiting(format!("holder {other:?}")),
        })
    })
    .await?;
    eprintln!(
        "taken over {:.1}s after SIGTERM (lease 60s)",
        stopped.elapsed().as_secs_f64()
    );
    assert!(first.tail(20).contains("released the Lease"), "{}", first.tail(20));
    Ok(())
}

/// Counts of each Event reason on the Rollout.
fn count(events: &[String], reason: &str) -> usize {
    events.iter().filter(|e| e.starts_with(&format!("{reason}:"))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_between_two_acts_is_finished_by_a_fresh_one_with_no_step_repeated() -> Result<()> {
    // After the first step's weight is written, before the status write that advances to the
    // second step, and after the template is copied into stable during promotion.
    for point in ["weight=2000", "before-status-step=2", "promote"] {
        let test = format!("crash_{}", point.replace(['=', '-'], "_"));
        let mut world = World::start_crashing(&test, model("v2", 0.0), Some(point)).await?;
        world.create_rollout(canary(&[20.0, 50.0])).await?;
        let load = Load::start(world.proxy_listen);
        world.push_candidate("registry.invalid/m:2").await?;
        let log = world.controller.log.clone();
        eventually(&format!("the controller to reach {point}"), ROLLOUT_TIMEOUT, || async {
            let text = std::fs::read_to_string(&log)?;
            if text.contains("WEIR_CRASH_AFTER is ignored") {
                bail!("the weir binary was built without the fault-injection feature: run cargo test --workspace");
            }
            Ok(if text.contains("stopped at crash point") {
                Check::Done(())
            } else {
                Check::Waiting(text.lines().last().unwrap_or_default().to_owned())
            })
        })
        .await?;
        world.controller.kill();
        let at_crash = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
        world.restart_controller("fresh-controller", None, None)?;
        let done = world
            .wait_status(&format!("the rollout to succeed after a crash at {point}"), |s| {
                s.phase == Phase::Succeeded
            })
            .await?;
        drop(load);
        eprintln!(
            "{point}: killed at {:?} step {} weight {}; the fresh controller finished it",
            at_crash.phase, at_crash.step, at_crash.candidate_weight
        );
        assert_eq!(done.candidate_weight, 0, "{point}");
        assert_eq!(
            world.stable_image().await?.as_deref(),
            Some("registry.invalid/m:2"),
            "{point}: stable runs the analysed template"
        );
        world.wait_candidate_replicas(0).await?;
        let events = world.events().await?;
        for (reason, times) in [
            ("RolloutStarted", 1),
            ("StepAdvanced", 1),
            ("RolloutPromoting", 1),
            ("RolloutSucceeded", 1),
        ] {
            assert_eq!(count(&events, reason), times, "{point}: {reason} in {events:#?}");
        }
    }
    Ok(())
}

/// The side that answered a request through the proxy with these header lines.
async fn side_for(world: &World, headers: &str) -> Result<String> {
    let (status, head, _) = get_with(world.proxy_listen, "/v1/generate", headers).await?;
    if status != 200 {
        bail!("the proxy answered {status}: {head}");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("x-weir-side: ").map(str::to_owned))
        .with_context(|| format!("no x-weir-side in {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_by_header_switches_after_its_hold_and_is_judged_after_the_switch() -> Result<()> {
    let world = World::start("blue_green_previews_then_switches", model("v2", 0.0)).await?;
    world
        .create_rollout(
            json!({ "blueGreen": { "previewHeader": "x-weir-preview", "holdBeforeSwitch": "3s", "keepOldFor": "4s" } }),
        )
        .await?;
    world
        .wait_status("the Rollout to be idle", |s| {
            s.phase == Phase::Idle && s.message.contains("matches stable")
        })
        .await?;
    let _load = Load::with_preview(world.proxy_listen, 0.1);
    world.push_candidate("registry.invalid/m:2").await?;
    world
        .wait_status("the preview", |s| {
            s.phase == Phase::Progressing && s.step == 0 && s.preview
        })
        .await?;
    eventually(
        "the proxy to route previews to the candidate",
        Duration::from_secs(30),
        || async {
            let preview = side_for(&world, "x-weir-preview: candidate\r\n").await?;
            Ok(if preview == "candidate" {
                Check::Done(())
            } else {
                Check::Waiting(preview)
            })
        },
    )
    .await?;
    // Weight 0 during the preview: everyone else, with the header or a user id of their own,
    // stays on stable.
    for user in 0..20 {
        assert_eq!(side_for(&world, &format!("x-user-id: u{user}\r\n")).await?, "stable");
    }
    let switched = world
        .wait_status("the switch, judged against stable's numbers from before", |s| {
            s.step == 1
                && s.candidate_weight == 10_000
                && s.last_analysis
                    .as_ref()
                    .is_some_and(|a| a.judged && a.values.against_reference)
        })
        .await?;
    assert_eq!(switched.phase, Phase::Progressing);
    world.wait_proxy_weight(10_000).await?;
    world
        .wait_status("the rollout to succeed", |s| s.phase == Phase::Succeeded)
        .await?;
    world.wait_proxy_weight(0).await?;
    world.wait_candidate_replicas(0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_stable_is_scaled_mid_rollout_as_an_hpa_would_the_candidate_follows() -> Result<()> {
    let world = World::start("stable_scaled_candidate_follows", model("v2", 0.0)).await?;
    world
        .create_rollout(json!({ "canary": { "steps": [ { "weight": 20, "hold": "10m" } ] } }))
        .await?;
    let _load = world.start_rollout_under_load().await?;
    // Stable 2 at 20%: ceil(2 x 0.2 / 0.8) = 1 candidate replica.
    world.wait_candidate_replicas(1).await?;
    // The test cluster runs no HPA controller: scale stable as one would.
    let scale = json!({ "spec": { "replicas": 8 } });
    world
        .deployments()
        .patch("m-v1", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    // Stable 8 at 20%: ceil(8 x 0.2 / 0.8) = 2.
    world.wait_candidate_replicas(2).await?;
    let status = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
    assert_eq!(status.phase, Phase::Progressing, "{}", status.message);
    assert_eq!(
        world.deployments().get("m-v1").await?.spec.and_then(|s| s.replicas),
        Some(8),
        "the controller never writes stable's replicas outside a maxSurge rollout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_source_judges_a_rollout_from_a_real_prometheus_scraping_the_proxy() -> Result<()> {
    let world = World::start("prometheus_source_judges", model("v2", 0.0)).await?;
    let prometheus = weir::demo::prometheus::LocalPrometheus::start(&[world.proxy_admin]).await?;
    let rollouts = world.rollouts();
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    let source = json!({ "spec": { "analysis": { "source": { "prometheus": { "url": prometheus.url } } } } });
    rollouts
        .patch("sentiment", &PatchParams::default(), &Patch::Merge(&source))
        .await?;
    let _load = world.start_rollout_under_load().await?;
    let done = world
        .wait_status("the rollout to succeed", |s| s.phase == Phase::Succeeded)
        .await?;
    let analysed = done.last_analysis.context("an analysis")?;
    assert!(analysed.values.candidate.requests > 0, "{analysed:?}");
    Ok(())
}

/// The resident memory of a process, in KiB, from /proc.
fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rollouts_are_each_reconciled_and_each_gets_its_route() -> Result<()> {
    const ROLLOUTS: usize = 100;
    let world = World::start("a_hundred_rollouts", model("v2", 0.0)).await?;
    eventually("the controller to lead", Duration::from_secs(30), || async {
        Ok(match lease_holder(&world).await? {
            Some(_) => Check::Done(()),
            None => Check::Waiting("no Lease yet".into()),
        })
    })
    .await?;
    let idle_kib = resident_kib(world.controller.id())?;
    let rollouts = world.rollouts();
    for i in 0..ROLLOUTS {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": { "name": format!("model-{i}") },
            "spec": {
                "gateway": world.ns.name,
                "route": { "match": { "host": format!("model-{i}.test") } },
                "stable": { "deployment": "m-v1", "endpoints": [world.stable.addr.to_string()] },
                "candidate": { "deployment": "m-v2", "endpoints": [world.candidate.addr.to_string()] },
                "strategy": canary(&[50.0]),
            }
        }))?;
        rollouts.create(&PostParams::default(), &rollout).await?;
    }
    eventually("every Rollout reconciled", ROLLOUT_TIMEOUT, || async {
        let list = rollouts.list(&ListParams::default()).await?.items;
        let idle = list
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.message.contains("matches stable")))
            .count();
        Ok(if idle == ROLLOUTS {
            Check::Done(())
        } else {
            Check::Waiting(format!("{idle} of {ROLLOUTS} idle"))
        })
    })
    .await?;
    eventually("the proxy serving every route", Duration::from_secs(60), || async {
        let config = get_json(world.proxy_admin, "/config").await?;
        let routes = config["config"]["routes"].as_array().map_or(0, Vec::len);
        Ok(if routes == ROLLOUTS {
            Check::Done(())
        } else {
            Check::Waiting(format!("{routes} routes"))
        })
    })
    .await?;
    let busy_kib = resident_kib(world.controller.id())?;
    eprintln!(
        "controller resident memory: {:.1} MiB with no Rollouts, {:.1} MiB with {ROLLOUTS} (debug build)",
        idle_kib as f64 / 1024.0,
        busy_kib as f64 / 1024.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_naming_a_missing_service_or_deployment_says_so_and_nothing_is_written() -> Result<()> {
    let world = World::start("a_rollout_naming_what_is_missing", model("v2", 0.0)).await?;
    let rollouts = world.rollouts();
    for (name, candidate) in [
        (
            "no-service",
            json!({ "deployment": "m-v2", "service": "nope", "port": 8000 }),
        ),
        (
            "no-deployment",
            json!({ "deployment": "m-v9", "endpoints": [world.candidate.addr.to_string()] }),
        ),
    ] {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": { "name": name },
            "spec": {
                "gateway": world.ns.name,
                "route": { "match": { "host": format!("{name}.test") } },
                "stable": { "deployment": "m-v1", "endpoints": [world.stable.addr.to_string()] },
                "candidate": candidate,
                "strategy": canary(&[50.0]),
            }
        }))?;
        rollouts.create(&PostParams::default(), &rollout).await?;
    }
    let condition = |name: &'static str, type_: &'static str| {
        let rollouts = rollouts.clone();
        async move {
            eventually(&format!("{name}: condition {type_}=False"), ROLLOUT_TIMEOUT, || async {
                let status = rollouts.get(name).await?.status.unwrap_or_default();
                Ok(
                    match status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == type_ && c.status == "False")
                    {
                        Some(c) => Check::Done(c.message.clone()),
                        None => Check::Waiting(format!("{:?}", status.conditions)),
                    },
                )
            })
            .await
        }
    };
    let why = condition("no-service", "Reconciled").await?;
    assert!(
        why.contains("Service nope (spec.candidate.service) does not exist"),
        "{why}"
    );
    let cm: Api<ConfigMap> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    assert!(
        cm.get_opt("weir-rollout-no-service").await?.is_none(),
        "no route written for a missing Service"
    );
    let why = condition("no-deployment", "Workloads").await?;
    assert!(why.contains("m-v9 (spec.candidate.deployment) does not exist"), "{why}");
    assert!(
        world.deployments().get_opt("m-v9").await?.is_none(),
        "nothing created or scaled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_proxy_targets_outside_scrape_allow_are_refused_and_the_rollout_holds() -> Result<()> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut world = World::start("discovered_targets_outside_scrape_allow", model("v2", 0.0)).await?;
    world.controller.kill();
    // The proxies' admin Service, with one endpoint at an address no test may send to: it must
    // be listed and refused, never fetched.
    let services: Api<Service> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "weir-proxy-admin" },
        "spec": { "ports": [ { "name": "admin", "port": 9901 } ] }
    }))?;
    services.create(&PostParams::default(), &service).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": { "name": "weir-proxy-admin-a", "labels": { "kubernetes.io/service-name": "weir-proxy-admin" } },
        "addressType": "IPv4",
        "ports": [ { "name": "admin", "port": 9901 } ],
        "endpoints": [ { "addresses": ["10.0.0.9"], "conditions": { "ready": true } } ]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    world.controller = Process::start(
        &workspace_binary("weir")?,
        &[
            "controller".into(),
            "--kubeconfig".into(),
            world.kubeconfig.display().to_string(),
            "--namespace".into(),
            world.ns.name.clone(),
            "--gateway".into(),
            world.ns.name.clone(),
            "--lease-namespace".into(),
            world.ns.name.clone(),
            "--lease-duration".into(),
            "3s".into(),
            "--proxy-admin-service".into(),
            format!("{}/weir-proxy-admin", world.ns.name),
            "--admin".into(),
            admin.to_string(),
        ],
        &[("WEIR_LOG", "info,kube=warn")],
        world.dir.path().join("scrape-allow-controller.log"),
    )?;
    let targets = eventually("the refused target listed", Duration::from_secs(60), || async {
        Ok(match get_json(admin, "/targets").await {
            Ok(t) if t.as_array().is_some_and(|a| !a.is_empty()) => Check::Done(t),
            Ok(t) => Check::Waiting(t.to_string()),
            Err(e) => Check::Waiting(e.to_string()),
        })
    })
    .await?;
    assert_eq!(targets[0]["url"], "http://10.0.0.9:9901", "{targets}");
    assert_eq!(targets[0]["refused"], "10.0.0.9 is outside --scrape-allow", "{targets}");

    world.create_rollout(canary(&[20.0, 50.0])).await?;
    let _load = world.start_rollout_under_load().await?;
    let held = world
        .wait_status("the analysis to say why it holds", |s| {
            s.last_analysis
                .as_ref()
                .is_some_and(|a| a.reason.contains("outside --scrape-allow"))
        })
        .await?;
    assert_eq!(held.phase, Phase::Progressing, "{}", held.message);
    assert_eq!(held.step, 0, "inconclusive never advances: {}", held.message);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_service_vanishes_mid_rollout_is_still_aborted() -> Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let world = World::start("a_candidate_whose_service_vanishes", model("v2", 0.0)).await?;
    // The candidate follows a Service with no endpoints: every request it gets is a 503
    // `no-endpoint` from the proxy itself, so no address outside loopback is ever contacted.
    let services: Api<Service> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "m-v2" },
        "spec": { "ports": [ { "name": "http", "port": 8000 } ] }
    }))?;
    services.create(&PostParams::default(), &service).await?;
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    // A warm-up long enough that the Service is gone before anything is judged.
    let patch = json!({ "spec": {
        "candidate": { "deployment": "m-v2", "service": "m-v2", "port": 8000, "endpoints": null },
        "analysis": { "warmup": "4s" }
    } });
    world
        .rollouts()
        .patch("sentiment", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let _load = world.start_rollout_under_load().await?;
    services.delete("m-v2", &Default::default()).await?;
    let aborted = world.wait_status("the abort", |s| s.phase == Phase::Aborted).await?;
    assert_eq!(aborted.candidate_weight, 0, "{}", aborted.message);
    world.wait_proxy_weight(0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_route_another_config_map_owns_says_so_and_writes_nothing() -> Result<()> {
    let world = World::start("a_rollout_whose_route_is_owned", model("v2", 0.0)).await?;
    let yaml = format!(
        "routes:\n  - name: {ROUTE}\n    match: {{ host: owned.test }}\n    stable: {{ backend: owned }}\n\
         backends:\n  owned: {{ endpoints: [\"{}\"] }}\n",
        world.stable.addr
    );
    let owned: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "team-routes", "labels": { "weir.dev/gateway": world.ns.name } },
        "data": { "config.yaml": yaml }
    }))?;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    config_maps.create(&PostParams::default(), &owned).await?;
    world.create_rollout(canary(&[20.0])).await?;
    let why = eventually("the clash in a condition", ROLLOUT_TIMEOUT, || async {
        let status = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
        Ok(
            match status
                .conditions
                .iter()
                .find(|c| c.type_ == "Reconciled" && c.status == "False")
            {
                Some(c) => Check::Done(c.message.clone()),
                None => Check::Waiting(format!("{:?}", status.conditions)),
            },
        )
    })
    .await?;
    assert!(
        why.contains(&format!(
            "route \"{ROUTE}\" is already defined by ConfigMap {}/team-routes",
            world.ns.name
        )),
        "{why}"
    );
    assert!(
        config_maps.get_opt("weir-rollout-sentiment").await?.is_none(),
        "nothing written"
    );
    let candidate = world.deployments().get("m-v2").await?;
    assert_eq!(candidate.spec.and_then(|s| s.replicas), Some(0), "nothing scaled");
    Ok(())
}

/// What a watch of both Deployments saw: the most replicas the fleet asked for and ran at once,
/// and the fewest stable asked for.
#[derive(Debug, Default)]
struct FleetSeen {
    /// (desired, running) per Deployment, as last seen.
    now: std::collections::BTreeMap<String, (i32, i32)>,
    most_desired: i32,
    most_running: i32,
    least_stable: Option<i32>,
    /// Every change, for a failure's message.
    log: Vec<String>,
}

impl FleetSeen {
    fn see(&mut self, d: &Deployment) {
        let name = d.metadata.name.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let running = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if name == "m-v1" {
            self.least_stable = Some(self.least_stable.map_or(desired, |l| l.min(desired)));
        }
        if self.now.get(&name) != Some(&(desired, running)) {
            self.log.push(format!("{name} desired {desired} running {running}"));
        }
        self.now.insert(name, (desired, running));
        let (desired, running) = self
            .now
            .values()
            .fold((0, 0), |(d, r), (desired, running)| (d + desired, r + running));
        self.most_desired = self.most_desired.max(desired);
        self.most_running = self.most_running.max(running);
    }
}

/// Follows every change of the namespace's Deployments, in the API server's order, into `seen`.
fn watch_fleet(world: &World) -> (Arc<std::sync::Mutex<FleetSeen>>, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let seen = Arc::new(std::sync::Mutex::new(FleetSeen::default()));
    let stream = watcher(world.deployments(), watcher::Config::default());
    let into = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                into.lock().expect("no panics under the lock").see(&d);
            }
        }
    });
    (seen, task)
}

/// A world whose stable runs 3 pods, and whose Deployments replace pods without surging
/// themselves, as a hard GPU budget needs.
async fn surge_world(test: &str) -> Result<World> {
    let world = World::start(test, model("v2", 0.0)).await?;
    let no_surge = json!({ "spec": { "replicas": 3, "strategy": { "type": "RollingUpdate",
        "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 } } } });
    for name in ["m-v1", "m-v2"] {
        let mut patch = no_surge.clone();
        if name == "m-v2" {
            patch["spec"]["replicas"] = json!(0);
        }
        world
            .deployments()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    eventually("stable at 3 ready replicas", Duration::from_secs(60), || async {
        let ready = world
            .deployments()
            .get("m-v1")
            .await?
            .status
            .and_then(|s| s.ready_replicas);
        Ok(if ready == Some(3) {
            Check::Done(())
        } else {
            Check::Waiting(format!("{ready:?} ready"))
        })
    })
    .await?;
    Ok(world)
}

impl World {
    /// A Rollout of m-v1 to m-v2 under `maxSurge: 1`.
    async fn create_surge_rollout(&self, strategy: serde_json::Value) -> Result<()> {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": { "name": "sentiment", "namespace": self.ns.name },
            "spec": {
                "gateway": self.ns.name,
                "route": { "name": ROUTE, "timeout": "5s" },
                "stable": { "deployment": "m-v1", "endpoints": [self.stable.addr.to_string()] },
                "candidate": { "deployment": "m-v2", "endpoints": [self.candidate.addr.to_string()] },
                "scaling": { "maxSurge": 1 },
                "strategy": strategy,
                "analysis": { "interval": "1s", "warmup": "0s", "minRequests": 20,
                    "detect": { "errorRatio": 5.0, "errorRateFloor": 0.02 }, "progressDeadline": "2m",
                    "checks": [
                        { "metric": "error-ratio", "max": 0.1 },
                        { "metric": "latency-p99", "maxMs": 2000 }
                    ] }
            }
        }))?;
        self.rollouts().create(&PostParams::default(), &rollout).await?;
        Ok(())
    }

    /// Stable's desired replicas.
    async fn stable_replicas(&self) -> Result<Option<i32>> {
        Ok(self.deployments().get("m-v1").await?.spec.and_then(|s| s.replicas))
    }
}

/// Deleting a Rollout mid-walk would leave stable short of pods; its finalizer restores them
/// before the Rollout goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_deleted_mid_walk_under_max_surge_gives_stable_its_pods_back_first() -> Result<()> {
    let world = surge_world("max_surge_rollout_deleted_mid_walk").await?;
    world
        .create_surge_rollout(json!({ "canary": { "steps": [ { "weight": 80, "hold": "10m" } ] } }))
        .await?;
    let _load = world.start_rollout_under_load().await?;
    eventually("stable scaled down", Duration::from_secs(60), || async {
        Ok(match world.stable_replicas().await? {
            Some(n) if n < 3 => Check::Done(()),
            other => Check::Waiting(format!("{other:?}")),
        })
    })
    .await?;
    let rollout = world.rollouts().get("sentiment").await?;
    assert!(
        rollout.finalizers().contains(&"weir.dev/restore-stable".to_owned()),
        "{:?}",
        rollout.finalizers()
    );
    world.rollouts().delete("sentiment", &Default::default()).await?;
    eventually("the Rollout gone", Duration::from_secs(30), || async {
        Ok(match world.rollouts().get_opt("sentiment").await? {
            None => Check::Done(()),
            Some(r) => Check::Waiting(format!("finalizers {:?}", r.finalizers())),
        })
    })
    .await
    .with_context(|| world.controller.tail(30))?;
    assert_eq!(
        world.stable_replicas().await?,
        Some(3),
        "stable restored before the Rollout went"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_max_surge_one_the_fleet_never_passes_stable_plus_one_through_three_steps_and_promotion() -> Result<()> {
    let world = surge_world("max_surge_keeps_the_fleet_within_budget").await?;

    // An autoscaler on stable: maxSurge is refused, with a condition naming it.
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let hpa = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": "m-v1" },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "m-v1" },
            "minReplicas": 3, "maxReplicas": 6,
            "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                "target": { "type": "Utilization", "averageUtilization": 80 } } }]
        }
    }))?;
    hpas.create(&PostParams::default(), &hpa).await?;
    let steps = json!({ "canary": { "steps": [
        { "weight": 20, "hold": "2s" }, { "weight": 50, "hold": "2s" }, { "weight": 80, "hold": "2s" }
    ] } });
    world.create_surge_rollout(steps).await?;
    let (seen, watch) = watch_fleet(&world);
    let load = Load::start(world.proxy_listen);
    world.push_candidate("registry.invalid/m:2").await?;
    let refused = world
        .wait_status("maxSurge refused beside an autoscaler", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Workloads" && c.status == "False" && c.reason == "SurgeWithAutoscaler")
        })
        .await?;
    assert_eq!(refused.phase, Phase::Idle, "{}", refused.message);
    assert!(
        refused.message.contains("HorizontalPodAutoscaler m-v1"),
        "{}",
        refused.message
    );

    // Without it, the rollout walks its three steps inside the budget and is promoted.
    hpas.delete("m-v1", &Default::default()).await?;
    let started = Instant::now();
    let done = world
        .wait_status("the rollout to succeed", |s| s.phase == Phase::Succeeded)
        .await?;
    eprintln!("promoted under maxSurge 1 in {:.1}s", started.elapsed().as_secs_f64());
    drop(load);
    assert_eq!(done.max_surge, None, "stable is weir's no more");
    eventually("the finalizer gone with the surge", Duration::from_secs(30), || async {
        let finalizers = world.rollouts().get("sentiment").await?.finalizers().to_vec();
        Ok(if finalizers.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("{finalizers:?}"))
        })
    })
    .await?;
    eventually(
        "stable back at 3 and the candidate at 0",
        Duration::from_secs(30),
        || async {
            let seen = seen.lock().expect("no panics under the lock");
            Ok(match (seen.now.get("m-v1"), seen.now.get("m-v2")) {
                (Some((3, 3)), Some((0, 0))) => Check::Done(()),
                other => Check::Waiting(format!("{other:?}")),
            })
        },
    )
    .await?;
    watch.abort();
    let seen = std::mem::take(&mut *seen.lock().expect("no panics under the lock"));
    eprintln!(
        "fleet under maxSurge 1: most asked {}, most running {}, stable down to {:?}",
        seen.most_desired, seen.most_running, seen.least_stable
    );
    let log = seen.log.join("\n");
    assert!(
        seen.most_desired <= 4,
        "the fleet asked for {} replicas:\n{log}",
        seen.most_desired
    );
    assert!(
        seen.most_running <= 4,
        "the fleet ran {} replicas:\n{log}\n{}",
        seen.most_running,
        world.controller.tail(300)
    );
    assert_eq!(seen.most_desired, 4, "the surge was used");
    assert_eq!(
        seen.least_stable,
        Some(1),
        "stable gave up pods down to the one that carries 20% at 80%"
    );
    let events = world.events_after("RolloutSucceeded").await?;
    assert_eq!(count(&events, "RolloutSucceeded"), 1, "{events:#?}");
    Ok(())
}

/// Every phase the Rollout passes through until `until` holds or the timeout passes, polled
/// every 100 ms: a phase held for less than that can be missed, so the tests that use this
/// also check the Events, which record every step.
async fn phases_until(
    world: &World,
    until: impl Fn(&weir::status::RolloutStatus) -> bool,
    timeout: Duration,
) -> Result<(Vec<Phase>, weir::status::RolloutStatus)> {
    let started = Instant::now();
    let mut seen: Vec<Phase> = Vec::new();
    loop {
        let status = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
        if seen.last() != Some(&status.phase) {
            seen.push(status.phase);
        }
        if until(&status) {
            return Ok((seen, status));
        }
        if started.elapsed() > timeout {
            bail!(
                "timed out; phases {seen:?}, last status {:?} step {} weight {}: {}\ncontroller log:\n{}",
                status.phase,
                status.step,
                status.candidate_weight,
                status.message,
                world.controller.tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_gone_for_thirty_seconds_mid_rollout_is_ridden_out_with_no_act_repeated() -> Result<()> {
    let mut world = World::start("api_server_gone", model("v2", 0.0)).await?;
    // The controller reaches the API server through a relay the test cuts; the proxy and the
    // test do not, so they see the cluster as it is.
    let relayed = world.dir.path().join("relayed-kubeconfig");
    let relay = weir_tests::relay::relayed_kubeconfig(&world.kubeconfig, &relayed).await?;
    world.restart_controller("relayed-controller", Some(&relayed), None)?;
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    let load = world.start_rollout_under_load().await?;
    // The start's Event follows its status: cut only once it is posted, since an Event the
    // API server cannot take is logged and dropped, not retried (the status holds the truth).
    world.events_after("RolloutStarted").await?;

    relay.cut();
    let at_cut = world.proxy_weight().await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        world.controller.running(),
        "the controller rode out the outage:\n{}",
        world.controller.tail(20)
    );
    assert_eq!(
        world.proxy_weight().await?,
        at_cut,
        "nothing moved while the controller was cut off"
    );
    relay.restore();

    let done = world
        .wait_status("the rollout to succeed after the outage", |s| {
            s.phase == Phase::Succeeded
        })
        .await?;
    drop(load);
    assert_eq!(done.candidate_weight, 0);
    let events = world.events_after("RolloutSucceeded").await?;
    for (reason, times) in [
        ("RolloutStarted", 1),
        ("StepAdvanced", 1),
        ("RolloutPromoting", 1),
        ("RolloutSucceeded", 1),
    ] {
        assert_eq!(count(&events, reason), times, "{reason} in {events:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_that_go_away_hold_the_rollout_and_flapping_ones_never_promote_a_bad_candidate() -> Result<()> {
    // A healthy candidate whose metrics vanish after the first step: the rollout holds where
    // it is, and goes on once they are back.
    let mut world = World::start("metrics_gone", model("v2", 0.0)).await?;
    let relay = weir_tests::relay::Relay::start(world.proxy_admin).await?;
    world.restart_controller("controller-via-relay", None, Some(relay.addr))?;
    world.create_rollout(canary(&[20.0, 50.0])).await?;
    let load = world.start_rollout_under_load().await?;
    relay.cut();
    let at_cut = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
    let watched = Instant::now();
    let mut seen = Vec::new();
    while watched.elapsed() < Duration::from_secs(12) {
        let now = world.rollouts().get("sentiment").await?.status.unwrap_or_default();
        seen.push((now.phase, now.step));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() > 50, "watched: {seen:?}");
    assert!(
        seen.iter().all(|s| *s == (Phase::Progressing, at_cut.step)),
        "held at step {} without metrics, never promoted: {seen:?}",
        at_cut.step
    );
    relay.restore();
    world
        .wait_status("the rollout to finish once the metrics are back", |s| {
            s.phase == Phase::Succeeded
        })
        .await?;
    drop(load);
    drop(world);

    // A bad candidate whose metrics flap: it is aborted, and never promoted on the way.
    let mut world = World::start("metrics_flap", model("v2", 0.3)).await?;
    let relay = Arc::new(weir_tests::relay::Relay::start(world.proxy_admin).await?);
    world.restart_controller("controller-via-flapping-relay", None, Some(relay.addr))?;
    let flapping = {
        let relay = Arc::clone(&relay);
        tokio::spawn(async move {
            loop {
                relay.cut();
                tokio::time::sleep(Duration::from_millis(700)).await;
                relay.restore();
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
        })
    };
    world.create_rollout(canary(&[20.0, 50.0, 80.0])).await?;
    let load = Load::start(world.proxy_listen);
    world.push_candidate("registry.invalid/m:2").await?;
    let (phases, aborted) = phases_until(&world, |s| s.phase == Phase::Aborted, ROLLOUT_TIMEOUT).await?;
    flapping.abort();
    drop(load);
    assert!(
        !phases.iter().any(|p| matches!(p, Phase::Promoting | Phase::Succeeded)),
        "never promoted: {phases:?}"
    );
    assert_eq!(aborted.candidate_weight, 0);
    world.wait_proxy_weight(0).await?;
    let events = world.events().await?;
    assert_eq!(count(&events, "RolloutPromoting"), 0, "{events:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_config_map_edited_by_hand_is_restored_and_the_edit_reported() -> Result<()> {
    let world = World::start("route_edited_by_hand", model("v2", 0.0)).await?;
    // A long first step, so the edit lands while the rollout stands still.
    world
        .create_rollout(json!({ "canary": { "steps": [{ "weight": 20.0, "hold": "5m" }] } }))
        .await?;
    let load = world.start_rollout_under_load().await?;
    world.wait_proxy_weight(2000).await?;

    // Someone sets the candidate's weight to everything, as `kubectl edit` would.
    let config_maps: Api<ConfigMap> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let name = "weir-rollout-sentiment";
    let mut cm = config_maps.get(name).await?;
    let data = cm.data.get_or_insert_with(Default::default);
    let text = data.get("config.yaml").cloned().unwrap_or_default();
    assert!(text.contains("candidateWeight: 2000"), "{text}");
    data.insert(
        "config.yaml".into(),
        text.replace("candidateWeight: 2000", "candidateWeight: 10000"),
    );
    let edit = PostParams {
        field_manager: Some("kubectl-edit".into()),
        ..PostParams::default()
    };
    config_maps.replace(name, &edit, &cm).await?;

    eventually("the route to be restored", Duration::from_secs(30), || async {
        let text = config_maps
            .get(name)
            .await?
            .data
            .and_then(|mut d| d.remove("config.yaml"))
            .unwrap_or_default();
        Ok(if text.contains("candidateWeight: 2000") {
            Check::Done(())
        } else {
            Check::Waiting(text)
        })
    })
    .await
    .with_context(|| world.controller.tail(30))?;
    world.wait_proxy_weight(2000).await?;
    eventually("the RouteRestored Event", Duration::from_secs(30), || async {
        let events = world.events().await?;
        Ok(match events.iter().find(|e| e.starts_with("RouteRestored:")) {
            Some(event) => Check::Done(event.clone()),
            None => Check::Waiting(format!("{events:?}")),
        })
    })
    .await
    .map(|event| assert!(event.contains("kubectl-edit"), "{event}"))?;
    drop(load);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_a_wrong_or_expired_kubeconfig_says_so_and_exits_1() -> Result<()> {
    let shared = weir_tests::shared()?.cluster.kubeconfig.clone();
    let dir = tempfile::tempdir()?;
    // The real API server, with a token it never issued.
    let text = std::fs::read_to_string(&shared)?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("the cluster's server")?;
    let ca = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .context("the cluster's CA")?;
    let expired = dir.path().join("expired");
    std::fs::write(
        &expired,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: u\n  user:\n    token: expired-or-never-issued\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u }}\ncurrent-context: x\n"
        ),
    )?;
    let malformed = dir.path().join("malformed");
    std::fs::write(&malformed, "apiVersion: v1\nkind: Config\nclusters: [ {\n")?;
    for (kubeconfig, says) in [
        (dir.path().join("missing"), "reading kubeconfig"),
        (malformed, "reading kubeconfig"),
        (expired, "401 Unauthorized"),
    ] {
        let mut controller = start_controller("default", &kubeconfig, "127.0.0.1:9".parse()?, dir.path(), "c", None)?;
        let started = Instant::now();
        let code = loop {
            if let Some(code) = controller.exit_code() {
                break code;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} did not end the controller: {}",
                    kubeconfig.display(),
                    controller.tail(10)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let log = std::fs::read_to_string(&controller.log)?;
        assert_eq!(code, 1, "{}: {log}", kubeconfig.display());
        assert!(log.contains(says), "{}: {log}", kubeconfig.display());
        for trace in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(!log.contains(trace), "{}: {log}", kubeconfig.display());
        }
    }
    Ok(())
}
