//! The config as written: the serde shape of the file, before validation. Fields that can be
//! wrong in more than one way (durations, addresses, weights, sides) stay loose here so that
//! validation can report every bad one at once instead of stopping at the first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin")]
    pub admin: String,
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawListenTls>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_port: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_forwarded_from: Vec<String>,
    /// `null` turns the response header off.
    #[serde(default = "default_side_header")]
    pub side_header: Option<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    /// Absent on an N-way route, which names `variants` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RawTarget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<RawVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<RawTarget>,
    #[serde(default)]
    pub candidate_weight: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RawOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<RawKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_epoch: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<RawFailFast>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RawMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<RawScore>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawVariant {
    pub name: String,
    pub backend: String,
    pub weight: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawScore {
    pub header: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawMirror {
    pub weight: i64,
    #[serde(default = "default_mirror_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_mirror_max_in_flight")]
    pub max_in_flight: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawFailFast {
    pub error_ratio: f64,
    #[serde(default = "default_fail_fast_window")]
    pub window: String,
    #[serde(default = "default_fail_fast_min_requests")]
    pub min_requests: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
}

impl Default for RawMatch {
    fn default() -> Self {
        RawMatch {
            host: None,
            path_prefix: default_path_prefix(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawTarget {
    pub backend: String,
    /// Opaque to the proxy: which version the backend serves. A fail-fast trip holds until
    /// the candidate's backend or revision changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    pub equals: String,
    pub side: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawBackend {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// A Kubernetes Service in the route ConfigMap's namespace, instead of `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Service port, with `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
}

/// Bounds on each client connection of the data listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawLimits {
    /// Unset: sized to the open-file limit when the proxy starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "default_send_timeout")]
    pub send_timeout: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: None,
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            send_timeout: default_send_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawListenTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawUpstreamTls {
    pub ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

fn default_protocol() -> String {
    "h1".to_owned()
}

fn default_listen() -> String {
    super::DEFAULT_LISTEN.to_owned()
}

fn default_admin() -> String {
    super::DEFAULT_ADMIN.to_owned()
}

fn default_drain_timeout() -> String {
    "30s".to_owned()
}

fn default_header_timeout() -> String {
    "30s".to_owned()
}

fn default_idle_timeout() -> String {
    "60s".to_owned()
}

fn default_send_timeout() -> String {
    "60s".to_owned()
}

fn default_side_header() -> Option<String> {
    Some(super::DEFAULT_SIDE_HEADER.to_owned())
}

fn default_timeout() -> String {
    "30s".to_owned()
}

fn default_mirror_max_body_bytes() -> u64 {
    super::DEFAULT_MIRROR_MAX_BODY_BYTES
}

fn default_mirror_max_in_flight() -> i64 {
    super::DEFAULT_MIRROR_MAX_IN_FLIGHT.into()
}

fn default_fail_fast_window() -> String {
    "10s".to_owned()
}

fn default_fail_fast_min_requests() -> u64 {
    20
}

fn default_path_prefix() -> String {
    "/".to_owned()
}
