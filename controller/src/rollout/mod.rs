//! The `Rollout` custom resource (`weir.dev/v1alpha1`): spec as users write it, status as the
//! controller writes it. Plain data; validation is in [`validate`]. No I/O here.

mod experiment;
pub mod proxy_route;
mod route;
pub mod validate;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::status::RolloutStatus;
pub use experiment::{CONTROL, Experiment, ExperimentDecide, Metric, VariantSpec};
pub use route::{FailFastSpec, KeySpec, MirrorSpec, OverrideSpec, RouteMatch, RouteSpec, TlsSpec};

/// What to roll out and how: the proxy route this Rollout owns, the two sides, the strategy and
/// how to judge the candidate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "ro",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","description":"candidate weight in basis points","jsonPath":".status.candidateWeight"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The proxy fleet that serves the route: proxies watching ConfigMaps labelled
    /// `weir.dev/gateway=<gateway>`.
    #[serde(default = "default_gateway")]
    pub gateway: String,
    /// The proxy route this Rollout owns; the controller writes it, with its two backends, into
    /// the ConfigMap `weir-rollout-<name>`.
    pub route: RouteSpec,
    /// The version serving today.
    pub stable: SideSpec,
    /// The version under rollout (absent in an experiment, whose variants replace it).
    #[serde(default, skip_serializing_if = "SideSpec::is_unset")]
    pub candidate: SideSpec,
    /// Canary steps, blue-green, or an experiment.
    pub strategy: Strategy,
    /// How the candidate is judged against stable.
    #[serde(default)]
    pub analysis: Analysis,
    /// Limits on the fleet's size during a rollout.
    #[serde(default, skip_serializing_if = "Scaling::is_default")]
    pub scaling: Scaling,
}

/// One side of the rollout: its Deployment, and where the proxy sends its traffic (the
/// Service's ready endpoints, or static endpoints).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SideSpec {
    /// The Deployment, in the Rollout's namespace.
    pub deployment: String,
    /// The Service whose EndpointSlices the proxy follows, in the Rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Service port (its number), with `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Static `host:port` endpoints instead of `service` and `port` (out of cluster, tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// How the proxy talks to the endpoints: `h1` (default), `h2` (TLS) or `h2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// TLS to the endpoints, as the proxy's backends take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

impl SideSpec {
    fn is_unset(&self) -> bool {
        *self == SideSpec::default()
    }
}

/// Limits on the fleet during a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Most replicas the fleet may run beyond stable's own (a GPU budget); unlimited when
    /// unset. Stable is scaled down to make room as the candidate grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
}

impl Scaling {
    fn is_default(&self) -> bool {
        *self == Scaling::default()
    }
}

/// Exactly one of `canary`, `blueGreen` or `experiment`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Move the weight through steps, judging at each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Preview the candidate by header, then switch all traffic at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// Split users between control (stable) and variants by fixed weights, judge them with
    /// anytime-valid intervals, and report (or promote) the winner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

/// Canary steps, in ascending weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Each step sets a weight and holds it while the analysis passes.
    pub steps: Vec<Step>,
}

/// One canary step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percent of traffic for the candidate, 0.01 to 100, in steps of 0.01.
    pub weight: f64,
    /// How long to hold this weight, like `60s`; the step ends once it has passed and the
    /// analysis has passed.
    pub hold: String,
}

/// Blue-green: the candidate takes only preview traffic (requests carrying the preview
/// header), then all traffic, while stable is kept for a quick switch back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    /// Requests with this header set to `previewValue` reach the candidate during preview.
    /// A header of its own, never one the proxy writes on responses (`x-weir-side`).
    #[serde(default = "default_preview_header")]
    pub preview_header: String,
    /// The value of `previewHeader` that reaches the candidate.
    #[serde(default = "default_preview_value")]
    pub preview_value: String,
    /// How long to preview (with analysis of preview traffic) before switching.
    #[serde(default = "default_hold_before_switch")]
    pub hold_before_switch: String,
    /// How long the candidate serves all traffic, with stable kept for switching back,
    /// before promotion.
    #[serde(default = "default_keep_old_for")]
    pub keep_old_for: String,
}

/// How and how often the candidate is judged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Time between analyses, like `15s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Candidate requests an analysis window needs; fewer is inconclusive, never a pass.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Consecutive failed checks that abort the rollout.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// Bound on the chance of aborting a candidate that is as good as stable.
    #[serde(default = "default_false_abort_rate")]
    pub false_abort_rate: f64,
    /// After each weight change, how long traffic is observed and shown but not judged, like
    /// `15s`; `0s` judges from the change. Default: one interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<String>,
    /// The regressions a passing step must have had enough traffic to catch.
    #[serde(default)]
    pub detect: Detect,
    /// A step with no conclusive analysis for this long is paused with a condition saying
    /// why, like `10m`.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: String,
    /// What to check; empty means: compare error ratio and p99 latency with stable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Where metrics come from.
    #[serde(default)]
    pub source: MetricsSource,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: default_interval(),
            min_requests: default_min_requests(),
            failure_limit: default_failure_limit(),
            false_abort_rate: default_false_abort_rate(),
            warmup: None,
            detect: Detect::default(),
            progress_deadline: default_progress_deadline(),
            checks: Vec::new(),
            source: MetricsSource::default(),
        }
    }
}

/// What a passing step must have been able to catch: a step passes only once the candidate
/// has had the requests that give the sequential tests 80 % power against these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Detect {
    /// A candidate with this many times stable's error rate.
    #[serde(default = "default_detect_error_ratio")]
    pub error_ratio: f64,
    /// A candidate this many times slower than stable at every request.
    #[serde(default = "default_detect_latency_ratio")]
    pub latency_ratio: f64,
    /// Stable's error rate is taken as at least this when sizing the sample: a ratio of
    /// stable's zero errors means nothing, and a perfect candidate must still pass.
    #[serde(default = "default_error_rate_floor")]
    pub error_rate_floor: f64,
}

impl Default for Detect {
    fn default() -> Self {
        Detect {
            error_ratio: default_detect_error_ratio(),
            latency_ratio: default_detect_latency_ratio(),
            error_rate_floor: default_error_rate_floor(),
        }
    }
}

/// One check: a built-in metric compared with stable and with fixed limits, or a PromQL
/// query compared with a fixed limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// A built-in metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<CheckMetric>,
    /// A PromQL query returning one number (needs `source: { prometheus: ... }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<String>,
    /// Upper limit of the candidate's value (error ratio, or the query's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Upper limit of candidate minus stable (error ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_over_stable: Option<f64>,
    /// Upper limit of the candidate's p99, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Upper limit of candidate p99 over stable p99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<f64>,
}

/// Built-in metrics, read from weir-proxy's own metrics.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckMetric {
    /// Share of requests answered 5xx, a gRPC error, or not at all.
    ErrorRatio,
    /// 99th percentile of the whole request duration.
    LatencyP99,
    /// 99th percentile of the time to the first response byte.
    FirstByteP99,
}

impl CheckMetric {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckMetric::ErrorRatio => "error-ratio",
            CheckMetric::LatencyP99 => "latency-p99",
            CheckMetric::FirstByteP99 => "first-byte-p99",
        }
    }
}

/// Where analysis metrics come from: weir-proxy's own `/metrics` (every proxy pod scraped and
/// summed) unless `prometheus` is set. A struct rather than an enum of a string and an
/// object, because Kubernetes structural schemas cannot say "a string or an object".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSource {
    /// Query this Prometheus server instead of scraping the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
}

/// A Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL, like `http://prometheus.monitoring:9090`.
    pub url: String,
}

fn default_gateway() -> String {
    "weir".to_owned()
}

fn default_preview_header() -> String {
    "x-weir-preview".to_owned()
}

fn default_preview_value() -> String {
    "candidate".to_owned()
}

fn default_progress_deadline() -> String {
    "10m".to_owned()
}

fn default_detect_error_ratio() -> f64 {
    2.0
}

fn default_detect_latency_ratio() -> f64 {
    1.5
}

fn default_error_rate_floor() -> f64 {
    0.001
}

fn default_hold_before_switch() -> String {
    "120s".to_owned()
}

fn default_keep_old_for() -> String {
    "300s".to_owned()
}

fn default_interval() -> String {
    "15s".to_owned()
}

fn default_min_requests() -> u64 {
    100
}

fn default_failure_limit() -> u32 {
    2
}

fn default_false_abort_rate() -> f64 {
    0.01
}

/// The Rollout CRD to install: the derived one, less the integer formats Kubernetes does not
/// know (`uint64`, `uint32`, ...), which the API server answers with a warning on every apply.
/// Their `minimum: 0` stays, and says the same.
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut value = serde_json::to_value(Rollout::crd()).expect("the CRD is plain data");
    drop_unknown_formats(&mut value);
    serde_json::from_value(value).expect("dropping formats keeps a CRD a CRD")
}

/// Removes every `format` Kubernetes's OpenAPI validation does not recognise.
fn drop_unknown_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unknown_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unknown_formats),
        _ => {}
    }
}

/// The CRD as YAML, for `weir crd`.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&crd()).expect("the CRD is plain data and always serialises")
}

/// A spec for tests: route `r` over Deployments `v1` and `v2` at static loopback endpoints.
#[cfg(test)]
pub(crate) fn example(strategy: Strategy, analysis: Analysis) -> RolloutSpec {
    let side = |deployment: &str, endpoint: &str| SideSpec {
        deployment: deployment.into(),
        endpoints: vec![endpoint.into()],
        ..SideSpec::default()
    };
    RolloutSpec {
        gateway: default_gateway(),
        route: RouteSpec {
            name: Some("r".into()),
            ..RouteSpec::default()
        },
        stable: side("v1", "127.0.0.1:9001"),
        candidate: side("v2", "127.0.0.1:9002"),
        strategy,
        analysis,
        scaling: Scaling::default(),
    }
}

#[cfg(test)]
mod crd_tests {
    #[test]
    fn the_crd_names_only_formats_kubernetes_knows_and_keeps_their_bounds() {
        let yaml = super::crd_yaml();
        let formats: std::collections::BTreeSet<&str> =
            yaml.lines().filter_map(|l| l.trim().strip_prefix("format: ")).collect();
        assert!(
            formats
                .iter()
                .all(|f| ["double", "int32", "int64", "date-time"].contains(f)),
            "{formats:?}"
        );
        assert!(yaml.contains("minimum: 0"), "unsigned fields keep their lower bound");
    }
}
