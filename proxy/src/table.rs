//! The routing table: one immutable snapshot of routes, split policies, backends and metric
//! handles, compiled from a validated config and published whole. No I/O here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::config::ProxyConfig;
use crate::metrics::{ProxyMetrics, RouteMetrics};
use crate::route::RouteIndex;
use crate::split::{Reason, Side, SplitPolicy};
use crate::upstream::Backend;

/// A compiled config, ready to serve.
#[derive(Debug)]
pub struct Table {
    /// Increases by one with every config accepted.
    pub version: u64,
    /// The config this table was compiled from.
    pub config: Arc<ProxyConfig>,
    /// Header naming the serving side, if on.
    pub side_header: Option<HeaderName>,
    index: RouteIndex<usize>,
    routes: Vec<Arc<Route>>,
}

/// One route of a table.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// How requests are split.
    pub split: SplitPolicy,
    /// Draws the sequence numbers of weight-decided requests. Shared with the same route in the
    /// next table, so a reload does not restart the weight pattern.
    sequence: Arc<AtomicU64>,
    stable: Arc<Backend>,
    candidate: Option<Arc<Backend>>,
    /// Time allowed for the response headers.
    pub timeout: Duration,
    /// Prebuilt metric handles.
    pub metrics: RouteMetrics,
}

impl Route {
    /// Decides the side of a request.
    pub fn decide(&self, headers: &HeaderMap) -> (Side, Reason) {
        self.split
            .decide(headers, || self.sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// The backend of a side. A candidate decision on a route without a candidate cannot come
    /// from a validated config, but falls back to stable rather than failing the request.
    pub fn backend(&self, side: Side) -> (&Backend, Side) {
        match (side, &self.candidate) {
            (Side::Candidate, Some(candidate)) => (candidate, Side::Candidate),
            _ => (&self.stable, Side::Stable),
        }
    }
}

impl Table {
    /// Compiles `config`. Metric handles come from `metrics`; weight sequences carry over
    /// from `previous` for routes of the same name.
    pub fn compile(
        config: Arc<ProxyConfig>,
        version: u64,
        metrics: &ProxyMetrics,
        previous: Option<&Table>,
    ) -> Table {
        let backends: BTreeMap<&str, Arc<Backend>> = config
            .backends
            .iter()
            .map(|(name, b)| {
                (
                    name.as_str(),
                    Arc::new(Backend::new(name.clone(), b.endpoints.clone())),
                )
            })
            .collect();
        let backend = |name: &str| {
            Arc::clone(
                backends
                    .get(name)
                    .expect("validation checks backend references"),
            )
        };
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .map(|r| {
                let sequence = previous.and_then(|t| t.route(&r.name)).map_or_else(
                    || Arc::new(AtomicU64::new(0)),
                    |old| Arc::clone(&old.sequence),
                );
                let route_metrics = metrics.route(&r.name);
                route_metrics.set_weight(r.candidate_weight.basis_points());
                Arc::new(Route {
                    name: r.name.clone(),
                    split: SplitPolicy {
                        route: r.name.clone(),
                        weight: r.candidate_weight,
                        overrides: r.overrides.clone(),
                        sticky: r.sticky.clone(),
                    },
                    sequence,
                    stable: backend(&r.stable),
                    candidate: r.candidate.as_deref().map(backend),
                    timeout: r.timeout,
                    metrics: route_metrics,
                })
            })
            .collect();
        let index = RouteIndex::new(
            config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.host.clone(), r.path_prefix.clone(), i)),
        );
        Table {
            version,
            side_header: config.side_header.clone(),
            config,
            index,
            routes,
        }
    }

    /// The route of a request.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.index.find(host, path).map(|i| &self.routes[i])
    }

    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// The value of the side header for a side.
pub fn side_value(side: Side) -> HeaderValue {
    HeaderValue::from_static(side.as_str())
}
