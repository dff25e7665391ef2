//! The routing table: one immutable snapshot of routes, split policies, backends and metric
//! handles, compiled from a validated config and published whole. No I/O here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::config::{ProxyConfig, RouteConfig};
use crate::failfast::FailFast;
use crate::metrics::{ProxyMetrics, RouteMetrics};
use crate::mirror::Mirror;
use crate::route::RouteIndex;
use crate::split::{Reason, Side, SplitPolicy, VariantWeight, Variants};
use crate::upstream::discovery::Discovery;
use crate::upstream::tls::TlsSettings;
use crate::upstream::{self, Backend};

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
    backends: BTreeMap<String, Arc<Backend>>,
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
    /// An N-way route's variants, in config order: backend and side header value.
    variants: Vec<(Arc<Backend>, HeaderValue)>,
    /// The response header or trailer that reports a score, if the route judges one.
    pub score: Option<HeaderName>,
    /// Time allowed for the response headers.
    pub timeout: Duration,
    /// Prebuilt metric handles, shared with the route's mirrored copies.
    pub metrics: Arc<RouteMetrics>,
    /// Fail-fast state, if the route has it. Shared with the next table while the candidate
    /// (its backend name and revision) and the policy stay the same, so a reload (a weight
    /// change, an endpoint list that churns) does not clear a trip.
    pub fail_fast: Option<Arc<FailFast>>,
    /// Mirror policy, if the route mirrors to its candidate.
    pub mirror: Option<Mirror>,
}

impl Route {
    /// Decides the side of a request. The flag is set when the request would have gone to
    /// the candidate but fail-fast sent it to stable.
    pub fn decide(&self, headers: &HeaderMap) -> (Side, Reason, bool) {
        let (side, reason, user) = self
            .split
            .decide_user(headers, || self.sequence.fetch_add(1, Ordering::Relaxed));
        let (side, diverted) =
            if side == Side::Candidate && self.fail_fast.as_ref().is_some_and(|f| f.tripped().is_some()) {
                (Side::Stable, true)
            } else {
                (side, false)
            };
        if let Some(user) = user {
            self.metrics.side(side).user(user);
        }
        (side, reason, diverted)
    }

    /// Records a candidate outcome for fail-fast (`failure`: an error, or a client that gave
    /// up); trips the route (logged and counted once) when the window crosses its limit.
    pub fn record_candidate(&self, failure: bool) {
        let Some(fail_fast) = &self.fail_fast else { return };
        if let Some(trip) = fail_fast.record(failure) {
            self.metrics.fail_fast_trip();
            tracing::warn!(
                route = %self.name,
                requests = trip.requests,
                errors = trip.errors,
                limit = trip.error_ratio_limit,
                window = %trip.window,
                "fail-fast tripped: the candidate gets no more traffic"
            );
        }
    }

    /// The candidate's backend, for mirrored copies.
    pub fn candidate_backend(&self) -> Option<&Arc<Backend>> {
        self.candidate.as_ref()
    }

    /// The backend of a side. A candidate decision on a route without a candidate (or a
    /// variant it does not have) cannot come from a validated config, but falls back to
    /// stable rather than failing the request.
    pub fn backend(&self, side: Side) -> (&Backend, Side) {
        match (side, &self.candidate) {
            (Side::Candidate, Some(candidate)) => (candidate, Side::Candidate),
            (Side::Variant(i), _) if usize::from(i) < self.variants.len() => (&self.variants[usize::from(i)].0, side),
            _ => (&self.stable, Side::Stable),
        }
    }

    /// The side header's value for a side: `stable`, `candidate`, or the variant's name.
    pub fn side_value(&self, side: Side) -> HeaderValue {
        match side {
            Side::Variant(i) => self
                .variants
                .get(usize::from(i))
                .map_or_else(|| side_value(Side::Stable), |(_, value)| value.clone()),
            side => side_value(side),
        }
    }

    /// The name of a side, for logs and errors.
    pub fn side_name(&self, side: Side) -> String {
        self.side_value(side).to_str().unwrap_or("variant").to_owned()
    }
}

impl Table {
    /// Compiles `config`. Metric handles come from `metrics`; weight sequences carry over
    /// from `previous` for routes of the same name.
    /// `tls` holds the loaded client settings of the backends that speak TLS.
    pub fn compile(
        config: Arc<ProxyConfig>,
        version: u64,
        metrics: &ProxyMetrics,
        previous: Option<&Table>,
        tls: &BTreeMap<String, TlsSettings>,
        discovery: &Discovery,
    ) -> Table {
        let backends: BTreeMap<&str, Arc<Backend>> = config
            .backends
            .iter()
            .map(|(name, b)| {
                // An unchanged backend is carried over whole, with its TLS pool and its turn.
                let same = previous
                    .filter(|p| p.config.backends.get(name) == Some(b))
                    .and_then(|p| p.backends.get(name).cloned());
                let backend = same.unwrap_or_else(|| {
                    let endpoints = match &b.service {
                        Some(service) => discovery.cell(service),
                        None => upstream::fixed(b.endpoints.clone()),
                    };
                    Arc::new(Backend::new(name.clone(), endpoints, b.protocol, tls.get(name)))
                });
                (name.as_str(), backend)
            })
            .collect();
        let backend = |name: &str| Arc::clone(backends.get(name).expect("validation checks backend references"));
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .map(|r| {
                let sequence = previous
                    .and_then(|t| t.route(&r.name))
                    .map_or_else(|| Arc::new(AtomicU64::new(0)), |old| Arc::clone(&old.sequence));
                let variant_names: Vec<&str> = r.variants.iter().map(|v| v.name.as_str()).collect();
                let route_metrics = metrics.route_with_variants(&r.name, &variant_names);
                for side in route_metrics.serving_sides() {
                    if r.score.is_some() {
                        side.export_score();
                    }
                    if r.sticky.is_some() {
                        side.export_users(r.users_epoch.as_deref().unwrap_or_default());
                    }
                }
                let fail_fast = r.fail_fast.map(|policy| {
                    previous
                        .filter(|p| same_candidate(&p.config, r))
                        .and_then(|p| p.route(&r.name))
                        .and_then(|old| old.fail_fast.clone())
                        .map(|old| {
                            // New limits start a new window, but never undo a trip of the
                            // same candidate.
                            if *old.policy() == policy {
                                old
                            } else {
                                Arc::new(old.with_policy(policy))
                            }
                        })
                        .unwrap_or_else(|| Arc::new(FailFast::new(policy)))
                });
                route_metrics.set_weight(r.candidate_weight.basis_points());
                Arc::new(Route {
                    name: r.name.clone(),
                    split: SplitPolicy {
                        route: r.name.clone(),
                        weight: r.candidate_weight,
                        overrides: r.overrides.clone(),
                        sticky: r.sticky.clone(),
                        variants: (!r.variants.is_empty()).then(|| {
                            Variants::new(
                                r.variants
                                    .iter()
                                    .map(|v| VariantWeight {
                                        name: v.name.clone(),
                                        weight: v.weight,
                                    })
                                    .collect(),
                            )
                        }),
                    },
                    sequence,
                    stable: backend(&r.stable),
                    candidate: r.candidate.as_deref().map(backend),
                    variants: r
                        .variants
                        .iter()
                        .map(|v| {
                            // Validation keeps names to letters, digits, '-', '_' and '.'.
                            let value = HeaderValue::from_str(&v.name).expect("variant names are header-safe");
                            (backend(&v.backend), value)
                        })
                        .collect(),
                    score: r.score.clone(),
                    timeout: r.timeout,
                    metrics: Arc::new(route_metrics),
                    fail_fast,
                    mirror: r.mirror.map(|config| {
                        let previous = previous
                            .and_then(|t| t.route(&r.name))
                            .and_then(|old| old.mirror.as_ref());
                        Mirror::new(config, previous)
                    }),
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
        let backends = backends.into_iter().map(|(name, b)| (name.to_owned(), b)).collect();
        Table {
            version,
            side_header: config.side_header.clone(),
            config,
            index,
            routes,
            backends,
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

/// Whether route `r` has the same candidate (backend name and revision) as the route of the
/// same name in `old`. The backend's endpoints do not count: a crash-looping candidate's pods
/// come and go, and that must not clear the trip that its failures caused. A new version is a
/// new revision (the controller always writes one) or a new backend name.
fn same_candidate(old: &ProxyConfig, r: &RouteConfig) -> bool {
    old.route(&r.name).is_some_and(|o| {
        r.candidate.is_some() && o.candidate == r.candidate && o.candidate_revision == r.candidate_revision
    })
}

impl Table {
    /// (backend name, TLS settings) of every backend that speaks TLS.
    pub fn tls_backends(&self) -> impl Iterator<Item = (&str, &TlsSettings)> {
        self.backends
            .iter()
            .filter_map(|(name, b)| Some((name.as_str(), b.tls()?)))
    }

    /// (route, fail-fast state) of every route with fail-fast, for `/config`.
    pub fn fail_fast(&self) -> impl Iterator<Item = (&str, &FailFast)> {
        self.routes
            .iter()
            .filter_map(|r| r.fail_fast.as_deref().map(|f| (r.name.as_str(), f)))
    }
}

/// The value of the side header for a side.
pub fn side_value(side: Side) -> HeaderValue {
    HeaderValue::from_static(side.as_str())
}
