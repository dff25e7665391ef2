//! The demo's stand-ins for a cluster: two "Deployments" backed by in-process model servers,
//! the in-process proxy, and its metrics over HTTP. They implement the same ports as the
//! Kubernetes edges, so the demo runs the real `decide` and `judge` through the real proxy.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use weir_proxy::split::{KeySource, Override, Side};
use weir_proxy::{Proxy, ProxyConfig, Weight};

use super::backend::{Behavior, DemoBackend};
use crate::decide::WorkloadState;
use crate::judge::Counters;
use crate::ports::{Metrics, PortError, Traffic, Workloads};
use crate::scrape;

/// How long a demo pod takes to become ready (the model loading).
const POD_STARTUP: Duration = Duration::from_millis(600);
/// How long stable's rolling update to a new template takes.
const ROLLING_UPDATE: Duration = Duration::from_millis(1500);

/// One simulated Deployment.
#[derive(Debug)]
struct Deployment {
    /// The template it runs once rolled out.
    template: Behavior,
    replicas: u32,
    /// When its pods (or its rolling update) become ready.
    ready_at: Instant,
}

/// The demo's two Deployments, each in front of its backend.
pub struct DemoWorkloads {
    stable: Mutex<Deployment>,
    candidate: Mutex<Deployment>,
    stable_backend: DemoBackend,
    candidate_backend: DemoBackend,
}

impl DemoWorkloads {
    /// Stable starts ready with `stable_replicas`; the candidate starts with none.
    pub fn new(
        stable_backend: DemoBackend,
        candidate_backend: DemoBackend,
        stable: Behavior,
        candidate: Behavior,
        stable_replicas: u32,
    ) -> Self {
        let now = Instant::now();
        DemoWorkloads {
            stable: Mutex::new(Deployment {
                template: stable,
                replicas: stable_replicas,
                ready_at: now,
            }),
            candidate: Mutex::new(Deployment {
                template: candidate,
                replicas: 0,
                ready_at: now,
            }),
            stable_backend,
            candidate_backend,
        }
    }

    fn state(d: &Deployment, now: Instant) -> WorkloadState {
        let rolled_out = now >= d.ready_at;
        WorkloadState {
            exists: true,
            template_hash: d.template.template_hash(),
            replicas: d.replicas,
            ready_replicas: if rolled_out { d.replicas } else { 0 },
            rolled_out,
        }
    }
}

fn lock(d: &Mutex<Deployment>) -> std::sync::MutexGuard<'_, Deployment> {
    d.lock().expect("no panics while holding a deployment lock")
}

impl Workloads for DemoWorkloads {
    async fn observe(&self) -> Result<(WorkloadState, WorkloadState), PortError> {
        let now = Instant::now();
        let stable = lock(&self.stable);
        // A finished rolling update means stable's pods now run the new template.
        if now >= stable.ready_at {
            self.stable_backend.set_behavior(stable.template);
        }
        Ok((Self::state(&stable, now), Self::state(&lock(&self.candidate), now)))
    }

    async fn scale_candidate(&self, replicas: u32) -> Result<(), PortError> {
        let mut candidate = lock(&self.candidate);
        if candidate.replicas == 0 && replicas > 0 {
            candidate.ready_at = Instant::now() + POD_STARTUP;
            self.candidate_backend.set_behavior(candidate.template);
        }
        candidate.replicas = replicas;
        Ok(())
    }

    async fn promote_template(&self) -> Result<(), PortError> {
        let template = lock(&self.candidate).template;
        let mut stable = lock(&self.stable);
        if stable.template != template {
            stable.template = template;
            stable.ready_at = Instant::now() + ROLLING_UPDATE;
        }
        Ok(())
    }
}

/// The in-process proxy's route.
pub struct DemoTraffic<'a> {
    proxy: &'a Proxy,
    route: String,
    preview_header: http::HeaderName,
    config: Mutex<ProxyConfig>,
}

impl<'a> DemoTraffic<'a> {
    /// Drives `route` of `proxy`, whose config is `config`.
    pub fn new(proxy: &'a Proxy, config: ProxyConfig, route: &str, preview_header: http::HeaderName) -> Self {
        DemoTraffic {
            proxy,
            route: route.to_owned(),
            preview_header,
            config: Mutex::new(config),
        }
    }
}

impl Traffic for DemoTraffic<'_> {
    async fn set_traffic(&self, weight: u16, preview: bool) -> Result<(), PortError> {
        let error = |message: String| PortError {
            operation: "set traffic",
            message,
        };
        let mut config = self.config.lock().expect("no panics while holding the config lock");
        let mut next = config.clone();
        let route = next
            .route_mut(&self.route)
            .ok_or_else(|| error(format!("no route {:?}", self.route)))?;
        route.candidate_weight = Weight::new(weight).ok_or_else(|| error(format!("weight {weight} is over 10000")))?;
        let preview_rule = Override {
            key: KeySource::Header(self.preview_header.clone()),
            equals: "candidate".into(),
            side: Side::Candidate,
        };
        route.overrides.retain(|o| *o != preview_rule);
        if preview {
            route.overrides.insert(0, preview_rule);
        }
        if next != *config {
            self.proxy.apply(next.clone()).map_err(|e| error(e.to_string()))?;
            *config = next;
        }
        Ok(())
    }
}

/// Scrapes the proxy's admin `/metrics` over HTTP, as the cluster mode scrapes proxy pods.
pub struct ScrapedMetrics {
    client: Client<HttpConnector, Empty<bytes::Bytes>>,
    url: String,
    route: String,
}

impl ScrapedMetrics {
    /// Scrapes `admin`'s metrics for `route`.
    pub fn new(admin: SocketAddr, route: &str) -> Self {
        ScrapedMetrics {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: format!("http://{admin}/metrics"),
            route: route.to_owned(),
        }
    }
}

impl Metrics for ScrapedMetrics {
    async fn counters(&self) -> Result<Counters, String> {
        let uri: http::Uri = self.url.parse().map_err(|e| format!("bad metrics URL: {e}"))?;
        let fetch = async {
            let rsp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("scraping {}: {e}", self.url))?;
            if !rsp.status().is_success() {
                return Err(format!("scraping {}: status {}", self.url, rsp.status()));
            }
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading {}: {e}", self.url))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| format!("{} is not UTF-8", self.url))
        };
        let text = tokio::time::timeout(Duration::from_secs(2), fetch)
            .await
            .map_err(|_| format!("scraping {} timed out", self.url))??;
        scrape::route_counters(&text, &self.route).map_err(|e| e.to_string())
    }
}
