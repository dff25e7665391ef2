//! The route a Rollout owns, as users write it in `spec.route`. The fields mean what they mean
//! in weir-proxy's config (the same names, units and defaults), because the controller writes
//! them into the proxy's partial config unchanged; the proxy's own validation checks them
//! ([`super::validate`]). Plain data.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The proxy route: which requests it takes and how they are split, besides the weight, which
/// the controller sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The route's name, unique per gateway; the `route` label of the proxy's metrics. Default:
    /// the Rollout's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which requests the route takes.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Pins each user to one side by this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<KeySpec>,
    /// Header and cookie rules, first match wins, before stickiness and weight. Rules that send
    /// requests to the candidate are on only while the candidate is under rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideSpec>,
    /// Stop sending the candidate traffic at once when it fails too often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<FailFastSpec>,
    /// Copy a share of stable's requests to the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    /// Time from sending a request upstream to its response headers, like `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Host and path prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Exact host, or `*.suffix`; any host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// A request header or a cookie.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// One override rule: requests whose header or cookie equals `equals` go to `side`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct OverrideSpec {
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The value that matches.
    pub equals: String,
    /// `stable` or `candidate`.
    pub side: String,
}

/// The proxy's fail-fast.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailFastSpec {
    /// Candidate error ratio (0 to 1) over the window at which the route trips.
    pub error_ratio: f64,
    /// The sliding window, like `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Candidate requests the window needs before it can trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

/// Shadow traffic to the candidate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSpec {
    /// Share of stable-bound requests copied, in basis points (0 to 10000).
    pub weight: i64,
    /// Largest request body copied, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// TLS to a side's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// CA certificates (PEM file on the proxy) the endpoints' certificates must chain to.
    pub ca: String,
    /// Name to send as SNI and to verify; default: the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}
