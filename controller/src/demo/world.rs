//! The demo's stand-ins for a cluster: two "Deployments" backed by in-process model servers,
//! and the in-process proxy's route. They implement the same ports as the Kubernetes edges, so
//! the demo runs the real reconcile loop through the real proxy; its metrics come from the
//! proxy's own `/metrics` or a local Prometheus ([`crate::source`]).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use weir_proxy::config::PartialConfig;
use weir_proxy::{Proxy, ProxyConfig};

use super::backend::{Behavior, DemoBackend};
use crate::decide::{TrafficIntent, WorkloadState};
use crate::ports::{TrafficError, WorkloadError, Workloads};
use crate::route_layer::route_layer;

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
    /// Its ready pods until then.
    ready_before: u32,
}

/// The demo's two Deployments, each in front of its backend.
pub struct DemoWorkloads {
    stable: Mutex<Deployment>,
    candidate: Mutex<Deployment>,
    stable_backend: DemoBackend,
    candidate_backend: DemoBackend,
    /// An experiment's variants: Deployment name, Deployment, backend.
    variants: Vec<(String, Mutex<Deployment>, DemoBackend)>,
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
                ready_before: 0,
            }),
            candidate: Mutex::new(Deployment {
                template: candidate,
                replicas: 0,
                ready_at: now,
                ready_before: 0,
            }),
            stable_backend,
            candidate_backend,
            variants: Vec::new(),
        }
    }

    /// Adds an experiment's variant Deployment `name`, ready at once with `replicas`.
    pub fn with_variant(mut self, name: &str, backend: DemoBackend, template: Behavior, replicas: u32) -> Self {
        backend.set_behavior(template);
        let deployment = Deployment {
            template,
            replicas,
            ready_at: Instant::now(),
            ready_before: 0,
        };
        self.variants.push((name.to_owned(), Mutex::new(deployment), backend));
        self
    }

    fn variant(&self, name: &str) -> Result<&Mutex<Deployment>, WorkloadError> {
        self.variants
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, d, _)| d)
            .ok_or_else(|| WorkloadError::Observe {
                name: name.to_owned(),
                source: "no such Deployment in the demo".into(),
            })
    }

    fn state(d: &Deployment, now: Instant) -> WorkloadState {
        let rolled_out = now >= d.ready_at;
        WorkloadState {
            exists: true,
            template_hash: d.template.template_hash(),
            replicas: d.replicas,
            ready_replicas: if rolled_out {
                d.replicas
            } else {
                d.ready_before.min(d.replicas)
            },
            pods: d.replicas,
            rolled_out,
            autoscaler: None,
        }
    }
}

fn lock(d: &Mutex<Deployment>) -> std::sync::MutexGuard<'_, Deployment> {
    d.lock().expect("no panics while holding a deployment lock")
}

impl Workloads for DemoWorkloads {
    async fn observe(&self) -> Result<(WorkloadState, WorkloadState), WorkloadError> {
        let now = Instant::now();
        let stable = lock(&self.stable);
        // A finished rolling update means stable's pods now run the new template.
        if now >= stable.ready_at {
            self.stable_backend.set_behavior(stable.template);
        }
        Ok((Self::state(&stable, now), Self::state(&lock(&self.candidate), now)))
    }

    async fn scale_candidate(&self, replicas: u32) -> Result<(), WorkloadError> {
        let mut candidate = lock(&self.candidate);
        if candidate.replicas == 0 && replicas > 0 {
            candidate.ready_at = Instant::now() + POD_STARTUP;
            self.candidate_backend.set_behavior(candidate.template);
        }
        candidate.replicas = replicas;
        Ok(())
    }

    async fn scale_stable(&self, replicas: u32) -> Result<(), WorkloadError> {
        let now = Instant::now();
        let mut stable = lock(&self.stable);
        if replicas > stable.replicas && now >= stable.ready_at {
            // The pods it has stay ready; the new ones load their model first.
            stable.ready_before = stable.replicas;
            stable.ready_at = now + POD_STARTUP;
        }
        stable.replicas = replicas;
        Ok(())
    }

    async fn promote_template(&self, revision: &str) -> Result<(), WorkloadError> {
        let template = lock(&self.candidate).template;
        self.promote(template, revision)
    }

    async fn observe_variants(&self, deployments: &[String]) -> Result<Vec<WorkloadState>, WorkloadError> {
        let now = Instant::now();
        deployments
            .iter()
            .map(|name| Ok(Self::state(&lock(self.variant(name)?), now)))
            .collect()
    }

    async fn promote_variant(&self, from: &str, revision: &str) -> Result<(), WorkloadError> {
        let template = lock(self.variant(from)?).template;
        self.promote(template, revision)
    }
}

impl DemoWorkloads {
    /// Copies `template` into stable, as a promotion does, refusing one that is not the
    /// judged `revision`.
    fn promote(&self, template: Behavior, revision: &str) -> Result<(), WorkloadError> {
        if template.template_hash() != revision {
            return Err(WorkloadError::RevisionMismatch {
                analysed: revision.to_owned(),
                current: template.template_hash(),
            });
        }
        let mut stable = lock(&self.stable);
        if stable.template != template {
            stable.template = template;
            stable.ready_at = Instant::now() + ROLLING_UPDATE;
            stable.ready_before = 0;
        }
        Ok(())
    }

    /// Pushes a new template to the candidate Deployment, as a developer's deploy would.
    pub fn push_candidate(&self, template: Behavior) {
        let mut candidate = lock(&self.candidate);
        candidate.template = template;
        candidate.ready_at = Instant::now() + POD_STARTUP;
        candidate.ready_before = 0;
        self.candidate_backend.set_behavior(template);
    }
}

/// The in-process proxy's route: the listener's config with the Rollout's route layer.
pub struct DemoTraffic<'a> {
    proxy: &'a Proxy,
    route: String,
    /// The proxy's own settings, with no routes.
    base: ProxyConfig,
    /// The route as the spec writes it; every intent is applied to this.
    template: PartialConfig,
    applied: Mutex<Option<ProxyConfig>>,
}

impl<'a> DemoTraffic<'a> {
    /// Drives `route` of `proxy`, whose own settings are `base`, from the spec's `template`.
    pub fn new(proxy: &'a Proxy, base: ProxyConfig, template: PartialConfig, route: &str) -> Self {
        DemoTraffic {
            proxy,
            route: route.to_owned(),
            base,
            template,
            applied: Mutex::new(None),
        }
    }
}

/// `base` serving `layer`'s routes and backends.
pub fn with_layer(base: &ProxyConfig, layer: PartialConfig) -> ProxyConfig {
    ProxyConfig {
        routes: layer.routes,
        backends: layer.backends,
        ..base.clone()
    }
}

impl crate::ports::Traffic for DemoTraffic<'_> {
    async fn set_traffic(&self, intent: &TrafficIntent) -> Result<(), TrafficError> {
        let next = with_layer(&self.base, route_layer(&self.template, &self.route, intent)?);
        let mut applied = self.applied.lock().expect("no panics while holding the config lock");
        if applied.as_ref() != Some(&next) {
            self.proxy.apply(next.clone()).map_err(|e| TrafficError::Write {
                route: self.route.clone(),
                source: Box::new(e),
            })?;
            *applied = Some(next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn promotion_copies_only_the_analysed_revision() {
        use crate::ports::Workloads as _;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let behavior = |version| Behavior {
            version,
            error_rate: 0.0,
            latency_ms: 1.0,
            score: None,
            token_gap_ms: 1.0,
        };
        let backend = |b| DemoBackend::start(b, 1, stopped.clone());
        let (stable, candidate) = (behavior("v1"), behavior("v2"));
        let workloads = DemoWorkloads::new(
            backend(stable).await.expect("backend"),
            backend(candidate).await.expect("backend"),
            stable,
            candidate,
            4,
        );
        let analysed = candidate.template_hash();
        // A developer pushes v3 before the promotion is carried out.
        let pushed = behavior("v3");
        workloads.push_candidate(pushed);
        let refused = workloads
            .promote_template(&analysed)
            .await
            .expect_err("v3 was never analysed");
        assert!(
            matches!(&refused, WorkloadError::RevisionMismatch { analysed: a, current } if *a == analysed && *current == pushed.template_hash()),
            "{refused}"
        );
        let (stable_now, _) = workloads.observe().await.expect("observe");
        assert_eq!(
            stable_now.template_hash,
            stable.template_hash(),
            "stable keeps its template"
        );
        workloads
            .promote_template(&pushed.template_hash())
            .await
            .expect("the candidate's own revision is copied");
    }
}
