//! The proxy's Prometheus metrics: names and labels as DESIGN.md fixes them, with handles
//! prebuilt per route and side so the request path never builds a label set.
//!
//! [`names`] and the label types' `as_str` are the contract with the controller, which reads
//! these metrics back: it imports them rather than retyping the strings.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::split::Side;
use crate::users::DistinctUsers;

/// The names of the metrics and labels the controller reads, as they appear in the exposition.
pub mod names {
    /// Requests by how they ended: counter, labels route, side, code.
    pub const REQUESTS: &str = "weir_requests_total";
    /// Whole-request durations: histogram, labels route, side.
    pub const REQUEST_DURATION: &str = "weir_request_duration_seconds";
    /// Time to the first response body byte: histogram, labels route, side.
    pub const FIRST_BYTE: &str = "weir_response_first_byte_seconds";
    /// The candidate weight in basis points: gauge, label route.
    pub const CANDIDATE_WEIGHT: &str = "weir_candidate_weight_basis_points";
    /// Fail-fast trips: counter, label route.
    pub const FAIL_FAST_TRIPS: &str = "weir_fail_fast_trips_total";
    /// Upstream failures: counter, labels route, side, kind.
    pub const UPSTREAM_ERRORS: &str = "weir_upstream_errors_total";
    /// Config loads: counter, labels source, result.
    pub const CONFIG_RELOADS: &str = "weir_config_reloads_total";
    /// Client connections closed before any request: counter, label kind.
    pub const LISTENER_ERRORS: &str = "weir_listener_errors_total";
    /// Abandoned mirrors: counter, labels route, reason.
    pub const MIRROR_SKIPPED: &str = "weir_mirror_skipped_total";
    /// Gaps between the body frames of a response: histogram, labels route, side. For a
    /// model server streaming tokens, the inter-token latency.
    pub const STREAM_GAP: &str = "weir_stream_gap_seconds";
    /// Body frames per response: histogram, labels route, side.
    pub const STREAM_FRAMES: &str = "weir_stream_frames";
    /// Sum of the scores responses reported (the route's `score` header or trailer): a gauge
    /// that only grows (scores are non-negative), labels route, side.
    pub const SCORE_SUM: &str = "weir_score_sum";
    /// Sum of the squares of those scores: gauge that only grows, labels route, side.
    pub const SCORE_SQUARES_SUM: &str = "weir_score_squares_sum";
    /// Responses that reported a score: gauge that only grows, labels route, side.
    pub const SCORE_COUNT: &str = "weir_score_count";
    /// Distinct sticky keys seen per side, a HyperLogLog estimate: gauge, labels route, side.
    pub const STICKY_USERS: &str = "weir_sticky_users";
    /// When this proxy process started, in seconds since the Unix epoch: gauge. A scraper that
    /// sees it change knows every counter of this instance started again from zero.
    pub const START_TIME: &str = "weir_proxy_start_time_seconds";

    /// The suffix of a histogram's cumulative bucket series.
    pub const BUCKET_SUFFIX: &str = "_bucket";

    /// Label names.
    pub mod label {
        /// The route's name.
        pub const ROUTE: &str = "route";
        /// `stable`, `candidate` or `mirror`, or a variant's name on an N-way route.
        pub const SIDE: &str = "side";
        /// How a request ended: see [`super::super::CodeClass`].
        pub const CODE: &str = "code";
        /// A histogram bucket's upper bound.
        pub const LE: &str = "le";
        /// The route's `usersEpoch` a distinct-users count belongs to (empty: none).
        pub const EPOCH: &str = "epoch";
    }

    /// A metric's name as registered: the exposition name without the `weir_` prefix the
    /// registry adds and the `_total` suffix it adds to counters.
    pub(crate) fn registered(name: &'static str) -> &'static str {
        let name = name
            .strip_prefix("weir_")
            .expect("every weir metric name starts with weir_");
        name.strip_suffix("_total").unwrap_or(name)
    }
}

/// Upper bounds of the latency histograms, in seconds. Dense from 1 ms to 1 s, where p99s of
/// model servers live, so that a 1.2x latency ratio moves a p99 across a bucket boundary.
pub const LATENCY_BUCKETS: [f64; 24] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds of the frames-per-response histogram: powers of two from 1 to 16384.
pub const FRAME_BUCKETS: [f64; 15] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// The `side` label of a stable/candidate route: which version served, or the mirror copy.
/// (An N-way route's sides are labelled with its variants' names.)
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum SideLabel {
    /// The stable version.
    stable,
    /// The candidate version.
    candidate,
    /// A mirrored copy sent to the candidate.
    mirror,
}

impl SideLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SideLabel::stable => "stable",
            SideLabel::candidate => "candidate",
            SideLabel::mirror => "mirror",
        }
    }
}

/// The `code` label: how a request ended. The status class of a response whose body ended
/// cleanly; `error` when no response came or its body failed or went silent; `cancelled` when
/// the client went away (or its own gRPC deadline passed) before the response ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CodeClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// A gRPC status that counts as an error.
    GrpcError,
    /// No response (the upstream could not be reached, timed out or reset), or a response
    /// whose body failed part way (a model server dying mid-stream).
    Error,
    /// The client went away, or its own gRPC deadline passed, before the response ended.
    Cancelled,
}

impl EncodeLabelValue for CodeClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl CodeClass {
    /// Every class, in label order.
    pub const ALL: [CodeClass; 8] = [
        CodeClass::Informational,
        CodeClass::Success,
        CodeClass::Redirection,
        CodeClass::ClientError,
        CodeClass::ServerError,
        CodeClass::GrpcError,
        CodeClass::Error,
        CodeClass::Cancelled,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeClass::Informational => "1xx",
            CodeClass::Success => "2xx",
            CodeClass::Redirection => "3xx",
            CodeClass::ClientError => "4xx",
            CodeClass::ServerError => "5xx",
            CodeClass::GrpcError => "grpc_error",
            CodeClass::Error => "error",
            CodeClass::Cancelled => "cancelled",
        }
    }

    /// The class a label value names.
    pub fn from_label(label: &str) -> Option<CodeClass> {
        CodeClass::ALL.into_iter().find(|c| c.as_str() == label)
    }

    /// Whether this outcome counts as an error of the side that produced it.
    pub fn is_error(self) -> bool {
        matches!(self, CodeClass::ServerError | CodeClass::GrpcError | CodeClass::Error)
    }

    /// Whether fail-fast counts this outcome against the candidate: an error, or a client
    /// that gave up waiting (a hung candidate whose clients time out first looks like this).
    pub fn is_failure(self) -> bool {
        self.is_error() || self == CodeClass::Cancelled
    }

    /// The class of an HTTP status.
    pub fn of_status(status: http::StatusCode) -> CodeClass {
        match status.as_u16() {
            100..=199 => CodeClass::Informational,
            200..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirection,
            400..=499 => CodeClass::ClientError,
            _ => CodeClass::ServerError,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a mirror was abandoned: the `reason` label of `weir_mirror_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SkipReason {
    /// The body was longer than `maxBodyBytes`.
    body_too_large,
    /// The candidate read the copy more slowly than the primary read the original.
    mirror_slow,
    /// The client's body failed, so the copy is incomplete.
    client_error,
    /// The candidate has no ready endpoint to send the copy to.
    no_endpoint,
    /// The route already had `maxInFlight` copies in flight.
    max_in_flight,
    /// The primary request ended before its body did (its client went away, or its upstream
    /// failed), so the copy is incomplete.
    primary_aborted,
}

impl SkipReason {
    /// Every reason, in label order.
    pub const ALL: [SkipReason; 6] = [
        SkipReason::body_too_large,
        SkipReason::mirror_slow,
        SkipReason::client_error,
        SkipReason::no_endpoint,
        SkipReason::max_in_flight,
        SkipReason::primary_aborted,
    ];
}

/// The `kind` label of an upstream failure.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamErrorKind {
    /// The connection could not be made.
    connect,
    /// No response headers within the route's timeout.
    timeout,
    /// The connection failed after the request was sent.
    reset,
    /// The TLS handshake with the upstream failed.
    tls,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::connect,
        UpstreamErrorKind::timeout,
        UpstreamErrorKind::reset,
        UpstreamErrorKind::tls,
    ];
}

/// The `kind` label of a client connection the listener refused or closed for the client's
/// fault.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ListenerErrorKind {
    /// The TLS handshake failed on a TLS listener (for example, plain text sent to it).
    tls_handshake,
    /// A client opened a TLS handshake on a plain-text listener.
    tls_on_plain,
    /// The open-connection cap (`limits.maxConnections`) was reached; the connection was
    /// closed on accept.
    connection_limit,
    /// No complete request head within `limits.headerTimeout` on a connection that had not
    /// yet sent one (slow headers, or a client that connects and says nothing).
    header_timeout,
    /// The client left response data unread for `limits.sendTimeout`.
    send_timeout,
    /// An HTTP/1.1 request that does not parse (bad framing, method, target or version),
    /// answered 400 and closed.
    bad_request,
    /// An HTTP/1.1 request head over the size or count limit, answered 431 and closed.
    headers_too_large,
    /// An HTTP/2 connection error: a broken frame, or a flood (resets, pings, settings,
    /// continuations) the server ended with GOAWAY.
    h2_protocol,
}

impl ListenerErrorKind {
    const ALL: [ListenerErrorKind; 8] = [
        ListenerErrorKind::tls_handshake,
        ListenerErrorKind::tls_on_plain,
        ListenerErrorKind::connection_limit,
        ListenerErrorKind::header_timeout,
        ListenerErrorKind::send_timeout,
        ListenerErrorKind::bad_request,
        ListenerErrorKind::headers_too_large,
        ListenerErrorKind::h2_protocol,
    ];
}

/// The `source` label of a config reload: where the config, or the certificate, came from.
pub mod reload_source {
    /// The config file.
    pub const FILE: &str = "file";
    /// A route ConfigMap.
    pub const KUBERNETES: &str = "kubernetes";
    /// The listener's certificate files.
    pub const TLS: &str = "tls";
    /// The CA files that upstream TLS backends are verified against.
    pub const UPSTREAM_CA: &str = "upstream_ca";
    /// Every source, each exported from 0.
    pub const ALL: [&str; 3] = [FILE, KUBERNETES, TLS];
}

/// The `result` label of a config reload.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    /// The config was valid and is now serving.
    ok,
    /// The config was rejected; the previous one keeps serving.
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    side: String,
    code: CodeClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteSideLabels {
    route: String,
    side: String,
}

/// A side's distinct users are counted per users epoch (the route's `usersEpoch`, empty when
/// it has none), so a reader can tell this experiment's count from the last one's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsersLabels {
    route: String,
    side: String,
    epoch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    side: String,
    kind: UpstreamErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorSkipLabels {
    route: String,
    reason: SkipReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerErrorLabels {
    kind: ListenerErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    source: String,
    result: ReloadResult,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn frames_histogram() -> Histogram {
    Histogram::new(FRAME_BUCKETS)
}

/// A float sum that only grows, exported as a gauge so that its name can end in `_sum`
/// (a counter's must end in `_total`).
type Total = Gauge<f64, AtomicU64>;

/// The families whose series a side creates on first use: most routes never stream, score
/// or stick, and a 10,000-route table should not carry 160,000 idle series for them.
#[derive(Clone, Debug)]
struct OnDemandFamilies {
    stream_gap: HistogramFamily<RouteSideLabels>,
    stream_frames: HistogramFamily<RouteSideLabels>,
    score_sum: Family<RouteSideLabels, Total>,
    score_squares: Family<RouteSideLabels, Total>,
    score_count: Family<RouteSideLabels, Gauge>,
    sticky_users: Family<UsersLabels, Gauge>,
}

/// Every metric family of the proxy. Cheap to clone: families and the route cache share
/// their storage.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Each route's handles, by route name, as [`ProxyMetrics::route`] last built them.
    /// Series are never removed (but for a distinct-users series whose epoch has passed, which
    /// its side swaps for the new one itself), so the handles stay valid; a reload then takes
    /// one lookup per route instead of one per series (48 label sets, each hashed under its family's lock,
    /// were 40 % of compiling a 10,000-route table).
    routes: Arc<Mutex<HashMap<String, RouteMetrics>>>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RouteSideLabels>,
    first_byte: HistogramFamily<RouteSideLabels>,
    weight: Family<RouteLabels, Gauge>,
    fail_fast_trips: Family<RouteLabels, Counter>,
    mirror_skipped: Family<MirrorSkipLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    listener_errors: Family<ListenerErrorLabels, Counter>,
    on_demand: OnDemandFamilies,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ProxyMetrics {
    /// Registers the proxy's families under the `weir_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ProxyMetrics {
            routes: Arc::default(),
            requests: Family::default(),
            duration: HistogramFamily::new_with_constructor(latency_histogram),
            first_byte: HistogramFamily::new_with_constructor(latency_histogram),
            weight: Family::default(),
            fail_fast_trips: Family::default(),
            mirror_skipped: Family::default(),
            upstream_errors: Family::default(),
            reloads: Family::default(),
            listener_errors: Family::default(),
            on_demand: OnDemandFamilies {
                stream_gap: HistogramFamily::new_with_constructor(latency_histogram),
                stream_frames: HistogramFamily::new_with_constructor(frames_histogram),
                score_sum: Family::default(),
                score_squares: Family::default(),
                score_count: Family::default(),
                sticky_users: Family::default(),
            },
            start_time: Gauge::default(),
        };
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics.start_time.set(started);
        // Every reload series from 0: a first rejection, even one before the first scrape, is
        // then an increase() that alerts see, not a series appearing at 1.
        for source in reload_source::ALL {
            for result in [ReloadResult::ok, ReloadResult::error] {
                let _ = metrics.reloads.get_or_create(&ReloadLabels {
                    source: source.to_owned(),
                    result,
                });
            }
        }
        let registry = registry.sub_registry_with_prefix("weir");
        use names::registered;
        registry.register(
            registered(names::START_TIME),
            "When this proxy process started, in seconds since the Unix epoch",
            metrics.start_time.clone(),
        );
        registry.register(
            registered(names::REQUESTS),
            "Requests by how they ended: route, side and status class, error or cancelled",
            metrics.requests.clone(),
        );
        registry.register(
            registered(names::REQUEST_DURATION),
            "Time from receiving a request to the end of its response body",
            metrics.duration.clone(),
        );
        registry.register(
            registered(names::FIRST_BYTE),
            "Time from receiving a request to the first byte of its response body",
            metrics.first_byte.clone(),
        );
        registry.register(
            registered(names::CANDIDATE_WEIGHT),
            "Share of traffic for the candidate, in basis points",
            metrics.weight.clone(),
        );
        registry.register(
            registered(names::UPSTREAM_ERRORS),
            "Requests that got no response from the upstream, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            registered(names::FAIL_FAST_TRIPS),
            "Times a route stopped sending its candidate traffic because it failed too often",
            metrics.fail_fast_trips.clone(),
        );
        registry.register(
            registered(names::MIRROR_SKIPPED),
            "Mirrored requests abandoned, by reason; the primary request is unaffected",
            metrics.mirror_skipped.clone(),
        );
        registry.register(
            registered(names::CONFIG_RELOADS),
            "Config loads, by source and result",
            metrics.reloads.clone(),
        );
        registry.register(
            registered(names::LISTENER_ERRORS),
            "Client connections closed before any request, by kind",
            metrics.listener_errors.clone(),
        );
        let on_demand = &metrics.on_demand;
        registry.register(
            registered(names::STREAM_GAP),
            "Gaps between the body frames of a response: inter-token latency of a streamed answer",
            on_demand.stream_gap.clone(),
        );
        registry.register(
            registered(names::STREAM_FRAMES),
            "Body frames per response",
            on_demand.stream_frames.clone(),
        );
        registry.register(
            registered(names::SCORE_SUM),
            "Sum of the scores responses reported in the route's score header or trailer (only grows)",
            on_demand.score_sum.clone(),
        );
        registry.register(
            registered(names::SCORE_SQUARES_SUM),
            "Sum of the squares of the scores responses reported (only grows)",
            on_demand.score_squares.clone(),
        );
        registry.register(
            registered(names::SCORE_COUNT),
            "Responses that reported a score (only grows)",
            on_demand.score_count.clone(),
        );
        registry.register(
            registered(names::STICKY_USERS),
            "Distinct sticky keys seen since the route's usersEpoch began, a HyperLogLog estimate (about 1.6 % standard error)",
            on_demand.sticky_users.clone(),
        );
        // Both series exist from the start, so a scrape shows 0 rather than nothing.
        for kind in ListenerErrorKind::ALL {
            drop(metrics.listener_errors.get_or_create(&ListenerErrorLabels { kind }));
        }
        metrics
    }

    /// Prebuilt handles for one stable/candidate route. Call when a routing table is built,
    /// never per request.
    pub fn route(&self, route: &str) -> RouteMetrics {
        self.route_with_variants(route, &[])
    }

    /// Prebuilt handles for a route, with one set per variant when it splits N ways.
    pub fn route_with_variants(&self, route: &str, variants: &[&str]) -> RouteMetrics {
        // A poisoned cache only means a panic mid-insert; its entries are still valid handles.
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handles) = routes.get(route)
            && handles
                .variants
                .iter()
                .map(|v| v.extra.labels.side.as_str())
                .eq(variants.iter().copied())
        {
            return handles.clone();
        }
        let handles = self.build_route(route, variants);
        routes.insert(route.to_owned(), handles.clone());
        handles
    }

    fn build_route(&self, route: &str, variants: &[&str]) -> RouteMetrics {
        let side = |side: &str| SideMetrics {
            codes: CodeClass::ALL.map(|code| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.to_owned(),
                        side: side.to_owned(),
                        code,
                    })
                    .clone()
            }),
            duration: self
                .duration
                .get_or_create(&RouteSideLabels {
                    route: route.to_owned(),
                    side: side.to_owned(),
                })
                .clone(),
            first_byte: self
                .first_byte
                .get_or_create(&RouteSideLabels {
                    route: route.to_owned(),
                    side: side.to_owned(),
                })
                .clone(),
            upstream_errors: UpstreamErrorKind::ALL.map(|kind| {
                self.upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        route: route.to_owned(),
                        side: side.to_owned(),
                        kind,
                    })
                    .clone()
            }),
            extra: Arc::new(OnDemand {
                labels: RouteSideLabels {
                    route: route.to_owned(),
                    side: side.to_owned(),
                },
                families: self.on_demand.clone(),
                stream: OnceLock::new(),
                score: OnceLock::new(),
                users: OnceLock::new(),
            }),
        };
        RouteMetrics {
            stable: side(SideLabel::stable.as_str()),
            candidate: side(SideLabel::candidate.as_str()),
            mirror: side(SideLabel::mirror.as_str()),
            variants: variants.iter().map(|name| side(name)).collect(),
            mirror_skipped: SkipReason::ALL.map(|reason| {
                self.mirror_skipped
                    .get_or_create(&MirrorSkipLabels {
                        route: route.to_owned(),
                        reason,
                    })
                    .clone()
            }),
            fail_fast_trips: self
                .fail_fast_trips
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .clone(),
            weight: self
                .weight
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .clone(),
        }
    }

    /// Counts one config load from `source` (`file`, `configmap`, `api`).
    pub fn record_reload(&self, source: &str, result: ReloadResult) {
        self.reloads
            .get_or_create(&ReloadLabels {
                source: source.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a client connection closed before any request. Not on the request path, so
    /// the label lookup is fine here.
    pub fn listener_error(&self, kind: ListenerErrorKind) {
        self.listener_errors.get_or_create(&ListenerErrorLabels { kind }).inc();
    }
}

/// Handles for one route's sides.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    stable: SideMetrics,
    candidate: SideMetrics,
    mirror: SideMetrics,
    /// An N-way route's variants, in config order.
    variants: Vec<SideMetrics>,
    mirror_skipped: [Counter; SkipReason::ALL.len()],
    weight: Gauge,
    fail_fast_trips: Counter,
}

impl RouteMetrics {
    /// The handles of one side.
    pub fn side(&self, side: Side) -> &SideMetrics {
        match side {
            Side::Stable => &self.stable,
            Side::Candidate => &self.candidate,
            // A variant the route does not have cannot come from a validated config.
            Side::Variant(i) => self.variants.get(usize::from(i)).unwrap_or(&self.stable),
        }
    }

    /// The handles of every side requests can go to: stable and candidate, or the variants.
    pub fn serving_sides(&self) -> Vec<&SideMetrics> {
        if self.variants.is_empty() {
            vec![&self.stable, &self.candidate]
        } else {
            self.variants.iter().collect()
        }
    }

    /// Publishes the route's current candidate weight.
    pub fn set_weight(&self, basis_points: u16) {
        self.weight.set(i64::from(basis_points));
    }

    /// The handles of mirrored requests.
    pub fn mirror(&self) -> &SideMetrics {
        &self.mirror
    }

    /// Counts an abandoned mirror.
    pub fn mirror_skipped(&self, reason: SkipReason) {
        self.mirror_skipped[reason as usize].inc();
    }

    /// Counts a fail-fast trip.
    pub fn fail_fast_trip(&self) {
        self.fail_fast_trips.inc();
    }
}

/// Handles for one route and side.
#[derive(Clone, Debug)]
pub struct SideMetrics {
    codes: [Counter; 8],
    duration: Histogram,
    first_byte: Histogram,
    upstream_errors: [Counter; 4],
    /// Shared by every table's copy of these handles, so the distinct-user sketch survives
    /// reloads.
    extra: Arc<OnDemand>,
}

/// A side's series that exist once used (or once the config asks for them).
#[derive(Debug)]
struct OnDemand {
    labels: RouteSideLabels,
    families: OnDemandFamilies,
    stream: OnceLock<(Histogram, Histogram)>,
    score: OnceLock<(Total, Total, Gauge)>,
    users: OnceLock<ArcSwap<EpochSketch>>,
}

/// A side's distinct sticky users since the route's users epoch began: one sketch, and one
/// series labelled with the epoch. A new epoch swaps in an empty sketch and a new series and
/// removes the old one, so a count still landing in the old sketch shows nowhere.
#[derive(Debug)]
struct EpochSketch {
    /// The route's `usersEpoch` it counts for (empty: none given).
    epoch: String,
    users: DistinctUsers,
    gauge: Gauge,
}

impl EpochSketch {
    fn count(&self, key_hash: u64) {
        if self.users.insert(key_hash) {
            self.gauge.set(self.users.estimate() as i64);
        }
    }
}

impl OnDemand {
    fn stream(&self) -> &(Histogram, Histogram) {
        self.stream.get_or_init(|| {
            let f = &self.families;
            (
                f.stream_gap.get_or_create(&self.labels).clone(),
                f.stream_frames.get_or_create(&self.labels).clone(),
            )
        })
    }

    fn score(&self) -> &(Total, Total, Gauge) {
        self.score.get_or_init(|| {
            let f = &self.families;
            (
                f.score_sum.get_or_create(&self.labels).clone(),
                f.score_squares.get_or_create(&self.labels).clone(),
                f.score_count.get_or_create(&self.labels).clone(),
            )
        })
    }

    fn users(&self) -> &ArcSwap<EpochSketch> {
        self.users
            .get_or_init(|| ArcSwap::from_pointee(self.sketch_for(String::new())))
    }

    fn users_labels(&self, epoch: String) -> UsersLabels {
        UsersLabels {
            route: self.labels.route.clone(),
            side: self.labels.side.clone(),
            epoch,
        }
    }

    fn sketch_for(&self, epoch: String) -> EpochSketch {
        EpochSketch {
            gauge: self
                .families
                .sticky_users
                .get_or_create(&self.users_labels(epoch.clone()))
                .clone(),
            epoch,
            users: DistinctUsers::default(),
        }
    }

    /// Counts the users of `epoch` from now on, unless they are being counted already.
    fn begin_users(&self, epoch: &str) {
        // A side's first epoch is its first series: no empty-epoch series comes and goes.
        let users = self
            .users
            .get_or_init(|| ArcSwap::from_pointee(self.sketch_for(epoch.to_owned())));
        let old = users.load_full();
        if old.epoch != epoch {
            users.store(Arc::new(self.sketch_for(epoch.to_owned())));
            self.families.sticky_users.remove(&self.users_labels(old.epoch.clone()));
        }
    }
}

impl SideMetrics {
    /// Counts one answered request.
    pub fn count(&self, code: CodeClass) {
        self.codes[code.index()].inc();
    }

    /// Records how long a request took, headers to end of body.
    pub fn observe_duration(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// Records how long a request waited for the first byte of its response body: what an
    /// LLM user feels as time to first token.
    pub fn observe_first_byte(&self, seconds: f64) {
        self.first_byte.observe(seconds);
    }

    /// Counts one upstream failure.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Records the gap between two body frames of one response.
    pub fn observe_stream_gap(&self, seconds: f64) {
        self.extra.stream().0.observe(seconds);
    }

    /// Records how many body frames one response had.
    pub fn observe_stream_frames(&self, frames: u64) {
        self.extra.stream().1.observe(frames as f64);
    }

    /// Adds one response's score. Scores are finite and non-negative (the caller checks), so
    /// the sums only grow.
    pub fn score(&self, value: f64) {
        let (sum, squares, count) = self.extra.score();
        sum.inc_by(value);
        squares.inc_by(value * value);
        count.inc();
    }

    /// Counts a sticky key (its hash) among this side's distinct users.
    pub fn user(&self, key_hash: u64) {
        self.extra.users().load().count(key_hash);
    }

    /// Exports the score series from 0 now, before any response reports a score, so a
    /// reader sees `0` for a side whose responses carry none rather than no series at all.
    pub fn export_score(&self) {
        self.extra.score();
    }

    /// Exports the distinct-users series now, for a route with a sticky key, counting the
    /// users of `epoch` (the route's `usersEpoch`, empty when it has none): a new epoch
    /// starts from 0, the same one (a reload) keeps its count.
    pub fn export_users(&self, epoch: &str) {
        self.extra.begin_users(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload builds a route's handles again (from the cache): they count into the same
    /// series as the old table's, which requests still in flight on it keep using.
    #[test]
    fn a_route_built_again_counts_into_the_same_series() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        let old = metrics.route("r");
        let new = metrics.clone().route("r");
        old.side(Side::Candidate).count(CodeClass::Success);
        new.side(Side::Candidate).count(CodeClass::Success);
        metrics.route("other").side(Side::Candidate).count(CodeClass::Success);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let series = |route: &str| {
            format!(
                "{}{{route=\"{route}\",side=\"candidate\",code=\"2xx\"}}",
                names::REQUESTS
            )
        };
        assert!(text.lines().any(|l| l == format!("{} 2", series("r"))), "{text}");
        assert!(text.lines().any(|l| l == format!("{} 1", series("other"))), "{text}");
    }

    #[test]
    fn every_reload_series_is_exported_from_zero_before_any_reload() {
        let mut registry = Registry::default();
        let _metrics = ProxyMetrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for source in reload_source::ALL {
            for result in ["ok", "error"] {
                let series = format!("weir_config_reloads_total{{source=\"{source}\",result=\"{result}\"}} 0");
                assert!(text.lines().any(|l| l == series), "no {series} in\n{text}");
            }
        }
    }

    /// The exported names are the ones a scrape shows, so the controller can rely on them.
    #[test]
    fn the_exported_names_are_the_exposed_ones() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        let route = metrics.route("r");
        route.side(Side::Candidate).count(CodeClass::Cancelled);
        route.side(Side::Candidate).observe_duration(0.1);
        route.side(Side::Candidate).observe_first_byte(0.1);
        metrics.record_reload("file", ReloadResult::ok);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for name in [
            names::REQUESTS,
            names::CANDIDATE_WEIGHT,
            names::FAIL_FAST_TRIPS,
            names::UPSTREAM_ERRORS,
            names::CONFIG_RELOADS,
            names::LISTENER_ERRORS,
            names::MIRROR_SKIPPED,
            names::START_TIME,
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
                "{name} missing from\n{text}"
            );
        }
        for histogram in [names::REQUEST_DURATION, names::FIRST_BYTE] {
            let bucket = format!("{histogram}{}{{", names::BUCKET_SUFFIX);
            assert!(text.contains(&bucket), "{bucket} missing");
        }
        let series = format!(
            "{}{{{}=\"r\",{}=\"candidate\",{}=\"{}\"}} 1",
            names::REQUESTS,
            names::label::ROUTE,
            names::label::SIDE,
            names::label::CODE,
            CodeClass::Cancelled.as_str()
        );
        assert!(text.contains(&series), "{series} missing");
    }

    #[test]
    fn code_labels_round_trip() {
        for code in CodeClass::ALL {
            assert_eq!(CodeClass::from_label(code.as_str()), Some(code));
        }
        assert_eq!(CodeClass::from_label("6xx"), None);
        assert!(CodeClass::Cancelled.is_failure() && !CodeClass::Cancelled.is_error());
    }
}
