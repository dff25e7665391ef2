//! The proxy's configuration: typed, validated, and parsed from YAML or JSON.
//!
//! `parse` turns text into a [`ProxyConfig`] or into [`ConfigErrors`] listing every bad field
//! with its path. No I/O here: sources (file, in-process handle) read the text and call in.

mod partial;
mod raw;
mod validate;

pub use partial::{Layer, LayerId, Merged, Outcome, PartialConfig, WHOLE_ONLY, merge, parse_partial};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use serde::{Serialize, Serializer};

use crate::route::HostMatch;
use crate::split::{KeySource, Override, Side, Weight};

/// Default data-plane listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listen address: loopback, so metrics and config are not exposed by accident.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// Default bound on a route's mirrored requests in flight at once.
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: u32 = 100;
/// Default bound on a mirrored request body held in memory at once.
pub const DEFAULT_MIRROR_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default response header naming the side that served a request.
pub const DEFAULT_SIDE_HEADER: &str = "x-weir-side";

/// A whole, valid proxy configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Data-plane listen address. Read at startup only.
    pub listen: SocketAddr,
    /// Admin listen address. Read at startup only.
    pub admin: SocketAddr,
    /// How long in-flight requests may run after SIGTERM. Read at startup only.
    pub drain_timeout: Duration,
    /// TLS on the data-plane listener. Read at startup; the files are watched and reloaded.
    pub tls: Option<ListenTls>,
    /// Bounds on the data listener's client connections. Read at startup only.
    pub limits: ConnectionLimits,
    /// Bind `listen` with `SO_REUSEPORT`, so that a second proxy can bind the same port and
    /// take over from this one without a moment of refused connections. Read at startup only.
    pub reuse_port: bool,
    /// Response header naming the side that served the request; `None` turns it off.
    pub side_header: Option<HeaderName>,
    /// Peers (proxies in front, such as a cloud load balancer) whose `x-forwarded-*` and
    /// `forwarded` headers are kept and extended; everyone else's are replaced.
    pub trust_forwarded_from: Vec<ipnet::IpNet>,
    /// Routes in config order.
    pub routes: Vec<RouteConfig>,
    /// Backends by name.
    pub backends: BTreeMap<String, BackendConfig>,
}

/// One route: which requests it takes and how it splits them.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Unique name; the `route` label of its metrics.
    pub name: String,
    /// Host the route answers for.
    pub host: HostMatch,
    /// Path prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Backend name of the stable side; on an N-way route, the first variant's (the one a
    /// request goes to when nothing else decides).
    pub stable: String,
    /// Backend name of the candidate side, if a candidate exists.
    pub candidate: Option<String>,
    /// The candidate's revision as the controller names it (opaque here). A fail-fast trip
    /// holds until the candidate's backend name or revision changes, not when its endpoints
    /// churn (as a crash-looping candidate's do).
    pub candidate_revision: Option<String>,
    /// Candidate share of weight- and sticky-decided requests.
    pub candidate_weight: Weight,
    /// Header and cookie rules, first match wins.
    pub overrides: Vec<Override>,
    /// Key for sticky assignment.
    pub sticky: Option<KeySource>,
    /// Names the period whose distinct sticky users `weir_sticky_users` counts (an
    /// experiment's start, written by the controller): a new value starts the count from 0.
    /// Only with `sticky`.
    pub users_epoch: Option<String>,
    /// Time allowed from sending the request upstream to receiving the response headers.
    pub timeout: Duration,
    /// Stop sending the candidate traffic at once when it fails too often.
    pub fail_fast: Option<FailFastConfig>,
    /// Copy a share of stable's requests to the candidate.
    pub mirror: Option<MirrorConfig>,
    /// The variants of an N-way route (2 to 8, weights summing to 10000) instead of stable
    /// and candidate; empty on a stable/candidate route.
    pub variants: Vec<VariantConfig>,
    /// A numeric response header or trailer the backends report a quality score in, summed
    /// per side so a mean can be judged.
    pub score: Option<HeaderName>,
}

/// One variant of an N-way route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantConfig {
    /// Its name: the `side` label of its metrics and the value of the side header.
    pub name: String,
    /// The backend serving it.
    pub backend: String,
    /// Its share of weight- and sticky-decided requests.
    pub weight: Weight,
}

impl RouteConfig {
    /// The name of a side of this route, as labels and headers spell it.
    pub fn side_name(&self, side: Side) -> &str {
        match side {
            Side::Variant(i) => self.variants.get(usize::from(i)).map_or("variant", |v| v.name.as_str()),
            side => side.as_str(),
        }
    }
}

/// Bounds on client connections, so that a slow, idle or hostile client holds a connection
/// (and the memory and upstream capacity behind it) for a bounded time, and too many clients
/// are refused at the door instead of exhausting file descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open client connections at most; past it new ones are closed at once. `None`: half
    /// the open-file limit at startup (each client connection may need an upstream one).
    pub max_connections: Option<u32>,
    /// Time a client has to send a request's headers once it has connected or finished its
    /// previous request (HTTP/1.1), or to open its first stream (HTTP/2).
    pub header_timeout: Duration,
    /// Time a connection that has served a request may stay open with none in flight.
    pub idle_timeout: Duration,
    /// Time a client may leave response data unread before its connection is closed.
    pub send_timeout: Duration,
}

impl ConnectionLimits {
    /// The default `idleTimeout`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Shadow traffic: copies of requests sent to the candidate, their answers dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Share of stable-bound requests copied, in basis points.
    pub weight: Weight,
    /// Copies in flight at most; past it the copy is skipped and counted (a slow candidate
    /// must not pile up tasks and connections).
    pub max_in_flight: u32,
    /// Largest request body copied; a longer body skips the mirror (the primary is unaffected).
    pub max_body_bytes: u64,
}

/// When the proxy stops a failing candidate by itself, without waiting for the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailFastConfig {
    /// Candidate error ratio (0..=1) over the window at which the route trips.
    pub error_ratio: f64,
    /// The sliding window.
    pub window: Duration,
    /// Candidate requests the window needs before it can trip.
    pub min_requests: u64,
}

/// A set of interchangeable endpoints of one version of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// `host:port` of each endpoint; requests are balanced over them. Empty when `service` is
    /// set.
    pub endpoints: Vec<Authority>,
    /// A Kubernetes Service whose ready endpoints the backend follows instead (route
    /// ConfigMaps only).
    pub service: Option<ServiceRef>,
    /// How the proxy talks to the endpoints.
    pub protocol: Protocol,
    /// TLS to the endpoints (`h2` always has it; `h1` may).
    pub tls: Option<UpstreamTls>,
}

/// A Service port, whose EndpointSlices give a backend its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// The Service's namespace: its route ConfigMap's (empty until the ConfigMap is merged).
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port (mapped to the EndpointSlice port of the same name).
    pub port: u16,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// The protocol spoken to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, pooled keep-alive connections.
    #[default]
    H1,
    /// HTTP/2 over TLS, negotiated by ALPN; requests multiplexed over few connections.
    H2,
    /// HTTP/2 without TLS, by prior knowledge.
    H2c,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::H2c => "h2c",
        }
    }
}

/// Certificate and key of the data-plane listener, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenTls {
    /// Certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// Private key.
    pub key: std::path::PathBuf,
}

/// How to verify a backend's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA certificates (PEM) the backend's certificate must chain to.
    pub ca: std::path::PathBuf,
    /// Name to send as SNI and to verify; default: the endpoint's host.
    pub sni: Option<String>,
}

/// One invalid field: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Path of the field, e.g. `routes[2].candidateWeight`; empty for the document itself.
    pub path: String,
    /// What is wrong, e.g. `10001 is over 10000`.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a rejected config, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Checks a config built or changed in code (parsed configs pass by construction) for what
/// [`parse`] would have refused and a table cannot serve: routes naming undefined backends,
/// candidate traffic without a candidate, duplicate route names or matches.
pub fn check_built(cfg: &ProxyConfig) -> Result<(), ConfigErrors> {
    validate::check_built(cfg)
}

/// Parses and validates a config written in YAML or JSON (JSON is detected by a leading `{`).
pub fn parse(text: &str) -> Result<ProxyConfig, ConfigErrors> {
    let config = validate_document(read_document(text)?)?;
    // A Service is named relative to its route ConfigMap's namespace; a whole config has none.
    let errors: Vec<ConfigError> = config
        .backends
        .iter()
        .filter(|(_, b)| b.service.is_some())
        .map(|(name, _)| ConfigError {
            path: format!("backends.{name}.service"),
            message:
                "is only for route ConfigMaps (--kube-routes), where the Service is in the ConfigMap's namespace; \
                      name endpoints here"
                    .into(),
        })
        .collect();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Most YAML nodes (maps, sequences, scalars) and parser events a config may hold. The YAML
/// parser's defaults (250,000 nodes) refused any config of more than about 7,000 routes; these
/// allow some 150,000, while a document that tries to exhaust memory is still cut off.
const YAML_MAX_NODES: usize = 5_000_000;
const YAML_MAX_EVENTS: usize = 20_000_000;

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = YAML_MAX_NODES;
    budget.max_events = YAML_MAX_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// The text as a JSON value: YAML, or JSON when it starts with `{`. Empty text is an error.
fn read_document(text: &str) -> Result<serde_json::Value, ConfigErrors> {
    let document: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigErrors::one("", format!("invalid JSON: {e}")))?
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| ConfigErrors::one("", format!("invalid YAML: {e}")))?
    };
    if document.is_null() {
        return Err(ConfigErrors::one("", "the config is empty"));
    }
    Ok(document)
}

/// Shapes and validates a whole config document, listing every bad field.
fn validate_document(document: serde_json::Value) -> Result<ProxyConfig, ConfigErrors> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        unknown.push(ConfigError {
            path: ignored_path(&path),
            message: "unknown field".into(),
        })
    };
    let shaped = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(document, &mut on_unknown));
    match shaped {
        Ok(raw) => {
            let checked = validate::validate(raw);
            match (checked, unknown.is_empty()) {
                (Ok(config), true) => Ok(config),
                (Ok(_), false) => Err(ConfigErrors(unknown)),
                (Err(ConfigErrors(mut errors)), _) => {
                    unknown.append(&mut errors);
                    Err(ConfigErrors(unknown))
                }
            }
        }
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            unknown.push(ConfigError {
                path: if path == "." { String::new() } else { path },
                message,
            });
            Err(ConfigErrors(unknown))
        }
    }
}

/// Renders a path from `serde_ignored` in the same form as `serde_path_to_error`: `a.b[2].c`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

impl ProxyConfig {
    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The route with this name, for changing it (as the controller does with weights).
    pub fn route_mut(&mut self, name: &str) -> Option<&mut RouteConfig> {
        self.routes.iter_mut().find(|r| r.name == name)
    }

    /// The config in its written JSON form, which [`parse`] reads back to an equal config.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises: it is plain data")
    }
}

impl Serialize for ProxyConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        raw::RawConfig::from(self).serialize(serializer)
    }
}

impl From<&ProxyConfig> for raw::RawConfig {
    fn from(cfg: &ProxyConfig) -> Self {
        raw::RawConfig {
            listen: cfg.listen.to_string(),
            admin: cfg.admin.to_string(),
            drain_timeout: humantime::format_duration(cfg.drain_timeout).to_string(),
            tls: cfg.tls.as_ref().map(|t| raw::RawListenTls {
                cert: t.cert.display().to_string(),
                key: t.key.display().to_string(),
            }),
            limits: raw::RawLimits {
                max_connections: cfg.limits.max_connections.map(i64::from),
                header_timeout: humantime::format_duration(cfg.limits.header_timeout).to_string(),
                idle_timeout: humantime::format_duration(cfg.limits.idle_timeout).to_string(),
                send_timeout: humantime::format_duration(cfg.limits.send_timeout).to_string(),
            },
            side_header: cfg.side_header.as_ref().map(ToString::to_string),
            trust_forwarded_from: cfg.trust_forwarded_from.iter().map(ToString::to_string).collect(),
            reuse_port: cfg.reuse_port,
            routes: cfg.routes.iter().map(raw_route).collect(),
            backends: raw_backends(&cfg.backends),
        }
    }
}

fn raw_key(source: &KeySource) -> raw::RawKey {
    match source {
        KeySource::Header(name) => raw::RawKey {
            header: Some(name.to_string()),
            cookie: None,
        },
        KeySource::Cookie(name) => raw::RawKey {
            header: None,
            cookie: Some(name.clone()),
        },
    }
}

fn raw_route(r: &RouteConfig) -> raw::RawRoute {
    raw::RawRoute {
        name: r.name.clone(),
        matches: raw::RawMatch {
            host: match &r.host {
                HostMatch::Any => None,
                HostMatch::Exact(h) => Some(h.clone()),
                HostMatch::Suffix(s) => Some(format!("*{s}")),
            },
            path_prefix: r.path_prefix.clone(),
        },
        stable: r.variants.is_empty().then(|| raw::RawTarget {
            backend: r.stable.clone(),
            revision: None,
        }),
        variants: r
            .variants
            .iter()
            .map(|v| raw::RawVariant {
                name: v.name.clone(),
                backend: v.backend.clone(),
                weight: i64::from(v.weight.basis_points()),
            })
            .collect(),
        score: r.score.as_ref().map(|h| raw::RawScore { header: h.to_string() }),
        candidate: r.candidate.as_ref().map(|b| raw::RawTarget {
            backend: b.clone(),
            revision: r.candidate_revision.clone(),
        }),
        candidate_weight: i64::from(r.candidate_weight.basis_points()),
        overrides: r
            .overrides
            .iter()
            .map(|o| {
                let k = raw_key(&o.key);
                raw::RawOverride {
                    header: k.header,
                    cookie: k.cookie,
                    equals: o.equals.clone(),
                    side: r.side_name(o.side).to_owned(),
                }
            })
            .collect(),
        sticky: r.sticky.as_ref().map(raw_key),
        users_epoch: r.users_epoch.clone(),
        timeout: humantime::format_duration(r.timeout).to_string(),
        mirror: r.mirror.map(|m| raw::RawMirror {
            weight: i64::from(m.weight.basis_points()),
            max_body_bytes: m.max_body_bytes,
            max_in_flight: m.max_in_flight.into(),
        }),
        fail_fast: r.fail_fast.map(|f| raw::RawFailFast {
            error_ratio: f.error_ratio,
            window: humantime::format_duration(f.window).to_string(),
            min_requests: f.min_requests,
        }),
    }
}

fn raw_backends(backends: &BTreeMap<String, BackendConfig>) -> BTreeMap<String, raw::RawBackend> {
    backends
        .iter()
        .map(|(name, b)| {
            let backend = raw::RawBackend {
                endpoints: b.endpoints.iter().map(ToString::to_string).collect(),
                service: b.service.as_ref().map(|s| s.name.clone()),
                port: b.service.as_ref().map(|s| i64::from(s.port)),
                protocol: b.protocol.as_str().to_owned(),
                tls: b.tls.as_ref().map(|t| raw::RawUpstreamTls {
                    ca: t.ca.display().to_string(),
                    sni: t.sni.clone(),
                }),
            };
            (name.clone(), backend)
        })
        .collect()
}

impl Side {
    fn parse(text: &str) -> Option<Side> {
        match text {
            "stable" => Some(Side::Stable),
            "candidate" => Some(Side::Candidate),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
