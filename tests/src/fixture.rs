//! What the end-to-end tests build their worlds from: the Rollout CRD, Deployments, model
//! server processes (`weir-test-model-server`), load through a proxy, and plain HTTP/1.1 GETs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::{Value, json};
use tokio::sync::watch;
use weir::demo::backend::Behavior;
use weir::demo::load::{self, ClientTally};

use crate::process::{Process, free_port, workspace_binary};
use crate::wait::{Check, eventually};

/// Requests a second through the proxy while a rollout runs.
pub const RATE: u32 = 300;

/// Applies weir's Rollout CRD and waits until it is established.
pub async fn apply_crd(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = weir::rollout::crd();
    let name = crd.metadata.name.clone().context("the CRD has a name")?;
    crds.patch(&name, &PatchParams::apply("weir-tests").force(), &Patch::Apply(&crd))
        .await
        .context("apply the Rollout CRD")?;
    wait_established(&crds, &name).await
}

/// Waits until the CRD `name` is Established: its kind can be served.
pub async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    eventually(&format!("{name} established"), Duration::from_secs(60), || async {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(if established {
            Check::Done(())
        } else {
            Check::Waiting("not established".into())
        })
    })
    .await
}

/// The API for `object`'s kind, in `object`'s namespace when the kind is namespaced.
pub async fn api_for(client: &kube::Client, object: &Value) -> Result<Api<DynamicObject>> {
    let api_version = object["apiVersion"].as_str().context("apiVersion")?;
    let kind = object["kind"].as_str().context("kind")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the API server knows no {api_version} {kind}"))?;
    Ok(match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .with_context(|| format!("{kind} {} has no namespace", object["metadata"]["name"]))?;
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
    })
}

/// Applies `objects` (server-side apply, forced: the test owns them) with admin rights.
pub async fn apply_all(client: &kube::Client, objects: &[Value]) -> Result<()> {
    for object in objects {
        let name = object["metadata"]["name"].as_str().context("an object has a name")?;
        api_for(client, object)
            .await?
            .patch(name, &PatchParams::apply("weir-tests").force(), &Patch::Apply(object))
            .await
            .with_context(|| format!("apply {} {name}", object["kind"]))?;
    }
    Ok(())
}

/// A Deployment `name` of `replicas` pods of `image`, ready on `/ready`.
pub fn deployment(name: &str, image: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "model": "sentiment" } },
                "spec": { "containers": [{
                    "name": "server",
                    "image": image,
                    "ports": [{ "containerPort": 8000 }],
                    "readinessProbe": { "httpGet": { "path": "/ready", "port": 8000 } }
                }] }
            }
        }
    }))?)
}

/// A model server answering every request in about 20 ms; `error_rate` of them fail. 20 ms,
/// not less: a few milliseconds of scheduling delay on a loaded 2-core machine must not make one
/// side look slower than the other to the latency test.
pub fn model(version: &'static str, error_rate: f64) -> Behavior {
    Behavior {
        version,
        error_rate,
        latency_ms: 20.0,
        score: None,
        token_gap_ms: 2.0,
    }
}

/// A model server process (the demo's backend behind `weir-test-model-server`).
pub struct ModelServer {
    /// Where it listens.
    pub addr: SocketAddr,
    _process: Process,
}

impl ModelServer {
    /// Starts one behaving as `behavior`, and waits until it answers.
    pub async fn start(behavior: Behavior, seed: u64, dir: &std::path::Path) -> Result<ModelServer> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut args: Vec<String> = vec![
            "--listen".into(),
            addr.to_string(),
            "--version".into(),
            behavior.version.into(),
            "--error-rate".into(),
            behavior.error_rate.to_string(),
            "--latency-ms".into(),
            behavior.latency_ms.to_string(),
            "--seed".into(),
            seed.to_string(),
        ];
        if let Some(score) = behavior.score {
            args.extend(["--score".into(), score.to_string()]);
        }
        let process = Process::start(
            &workspace_binary("weir-test-model-server")?,
            &args,
            &[],
            dir.join(format!("model-{}.log", behavior.version)),
        )?;
        eventually("the model server to listen", Duration::from_secs(30), || async {
            Ok(match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => Check::Done(()),
                Err(e) => Check::Waiting(e.to_string()),
            })
        })
        .await
        .with_context(|| process.tail(20))?;
        Ok(ModelServer {
            addr,
            _process: process,
        })
    }
}

/// A proxy config file in `dir` listening on two free loopback ports: the file, the listen
/// address and the admin address. Routes come from elsewhere (route ConfigMaps).
pub fn loopback_proxy_config(dir: &Path) -> Result<(PathBuf, SocketAddr, SocketAddr)> {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let file = dir.join("proxy.yaml");
    std::fs::write(&file, format!("listen: {listen}\nadmin: {admin}\ndrainTimeout: 1s\n"))?;
    Ok((file, listen, admin))
}

/// GET `path`: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let (status, _, body) = get_with(addr, path, "").await?;
    Ok((status, body))
}

/// GET `path` with extra header lines (`"name: value\r\n"...`): status, head and body.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Result<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// GET `path`: its body; an error unless it answers 200.
pub async fn get_ok(addr: SocketAddr, path: &str) -> Result<String> {
    let (status, body) = get(addr, path).await?;
    if status != 200 {
        bail!("{path} answered {status}: {body}");
    }
    Ok(body)
}

/// GET `path` as JSON; an error unless it answers 200.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&get_ok(addr, path).await?)?)
}

/// Waits until `path` answers 200.
pub async fn wait_http(addr: SocketAddr, path: &str) -> Result<()> {
    eventually(
        &format!("{addr}{path} to answer 200"),
        Duration::from_secs(60),
        || async {
            Ok(match get(addr, path).await {
                Ok((200, _)) => Check::Done(()),
                Ok((status, body)) => Check::Waiting(format!("{status}: {body}")),
                Err(e) => Check::Waiting(e.to_string()),
            })
        },
    )
    .await
}

/// Load through the proxy until dropped.
pub struct Load {
    /// What the clients got.
    pub tally: Arc<ClientTally>,
    stop: watch::Sender<bool>,
}

impl Load {
    pub fn start(proxy: SocketAddr) -> Load {
        Load::with_preview(proxy, 0.0)
    }

    /// Load of which `preview` (a share) carries the blue-green preview header.
    pub fn with_preview(proxy: SocketAddr, preview: f64) -> Load {
        let tally = Arc::new(ClientTally::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(load::run(proxy, RATE, preview, 7, Arc::clone(&tally), stopped));
        Load { tally, stop }
    }

    /// (stable, candidate) answers so far.
    pub fn sides(&self) -> (u64, u64) {
        (
            self.tally.stable.load(Ordering::Relaxed),
            self.tally.candidate.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
