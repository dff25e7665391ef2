//! The proxy's Prometheus metrics: names and labels as DESIGN.md fixes them, with handles
//! prebuilt per route and side so the request path never builds a label set.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::mirror::SkipReason;
use crate::split::Side;

/// Upper bounds of the latency histograms, in seconds. Dense from 1 ms to 1 s, where p99s of
/// model servers live, so that a 1.2x latency ratio moves a p99 across a bucket boundary.
pub const LATENCY_BUCKETS: [f64; 24] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 10.0, 30.0, 60.0,
];

/// The `side` label: which version served, or the mirror copy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SideLabel {
    /// The stable version.
    stable,
    /// The candidate version.
    candidate,
    /// A mirrored copy sent to the candidate.
    mirror,
}

impl From<Side> for SideLabel {
    fn from(side: Side) -> Self {
        match side {
            Side::Stable => SideLabel::stable,
            Side::Candidate => SideLabel::candidate,
        }
    }
}

/// The `code` label: the status class of a response, or `error` when no response came.
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
    /// No response: the upstream could not be reached, timed out or reset.
    Error,
}

impl EncodeLabelValue for CodeClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl CodeClass {
    const ALL: [CodeClass; 7] = [
        CodeClass::Informational,
        CodeClass::Success,
        CodeClass::Redirection,
        CodeClass::ClientError,
        CodeClass::ServerError,
        CodeClass::GrpcError,
        CodeClass::Error,
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
        }
    }

    /// Whether this outcome counts as an error of the side that produced it.
    pub fn is_error(self) -> bool {
        matches!(self, CodeClass::ServerError | CodeClass::GrpcError | CodeClass::Error)
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

/// The `kind` label of a client connection closed before any request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ListenerErrorKind {
    /// The TLS handshake failed on a TLS listener (for example, plain text sent to it).
    tls_handshake,
    /// A client opened a TLS handshake on a plain-text listener.
    tls_on_plain,
}

impl ListenerErrorKind {
    const ALL: [ListenerErrorKind; 2] = [ListenerErrorKind::tls_handshake, ListenerErrorKind::tls_on_plain];
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
    side: SideLabel,
    code: CodeClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteSideLabels {
    route: String,
    side: SideLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    side: SideLabel,
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

/// Every metric family of the proxy. Cheap to clone: families share their storage.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RouteSideLabels>,
    first_byte: HistogramFamily<RouteSideLabels>,
    weight: Family<RouteLabels, Gauge>,
    fail_fast_trips: Family<RouteLabels, Counter>,
    mirror_skipped: Family<MirrorSkipLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    listener_errors: Family<ListenerErrorLabels, Counter>,
}

impl ProxyMetrics {
    /// Registers the proxy's families under the `weir_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ProxyMetrics {
            requests: Family::default(),
            duration: HistogramFamily::new_with_constructor(latency_histogram),
            first_byte: HistogramFamily::new_with_constructor(latency_histogram),
            weight: Family::default(),
            fail_fast_trips: Family::default(),
            mirror_skipped: Family::default(),
            upstream_errors: Family::default(),
            reloads: Family::default(),
            listener_errors: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("weir");
        registry.register(
            "requests",
            "Requests answered, by route, side and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the end of its response body",
            metrics.duration.clone(),
        );
        registry.register(
            "response_first_byte_seconds",
            "Time from receiving a request to the first byte of its response body",
            metrics.first_byte.clone(),
        );
        registry.register(
            "candidate_weight_basis_points",
            "Share of traffic for the candidate, in basis points",
            metrics.weight.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that got no response from the upstream, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "fail_fast_trips",
            "Times a route stopped sending its candidate traffic because it failed too often",
            metrics.fail_fast_trips.clone(),
        );
        registry.register(
            "mirror_skipped",
            "Mirrored requests abandoned, by reason; the primary request is unaffected",
            metrics.mirror_skipped.clone(),
        );
        registry.register(
            "config_reloads",
            "Config loads, by source and result",
            metrics.reloads.clone(),
        );
        registry.register(
            "listener_errors",
            "Client connections closed before any request, by kind",
            metrics.listener_errors.clone(),
        );
        // Both series exist from the start, so a scrape shows 0 rather than nothing.
        for kind in ListenerErrorKind::ALL {
            drop(metrics.listener_errors.get_or_create(&ListenerErrorLabels { kind }));
        }
        metrics
    }

    /// Prebuilt handles for one route. Call when a routing table is built, never per request.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let side = |side: SideLabel| SideMetrics {
            codes: CodeClass::ALL.map(|code| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.to_owned(),
                        side,
                        code,
                    })
                    .clone()
            }),
            duration: self
                .duration
                .get_or_create(&RouteSideLabels {
                    route: route.to_owned(),
                    side,
                })
                .clone(),
            first_byte: self
                .first_byte
                .get_or_create(&RouteSideLabels {
                    route: route.to_owned(),
                    side,
                })
                .clone(),
            upstream_errors: UpstreamErrorKind::ALL.map(|kind| {
                self.upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        route: route.to_owned(),
                        side,
                        kind,
                    })
                    .clone()
            }),
        };
        RouteMetrics {
            stable: side(SideLabel::stable),
            candidate: side(SideLabel::candidate),
            mirror: side(SideLabel::mirror),
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

/// Handles for one route's two sides.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    stable: SideMetrics,
    candidate: SideMetrics,
    mirror: SideMetrics,
    mirror_skipped: [Counter; 3],
    weight: Gauge,
    fail_fast_trips: Counter,
}

impl RouteMetrics {
    /// The handles of one side.
    pub fn side(&self, side: Side) -> &SideMetrics {
        match side {
            Side::Stable => &self.stable,
            Side::Candidate => &self.candidate,
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
    codes: [Counter; 7],
    duration: Histogram,
    first_byte: Histogram,
    upstream_errors: [Counter; 4],
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
}
