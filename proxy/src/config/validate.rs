//! Raw config to typed config, collecting every error with its path. Pure: no I/O.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;

use super::raw::{RawConfig, RawKey, RawLimits, RawRoute};
use super::{
    BackendConfig, ConfigError, ConfigErrors, ConnectionLimits, FailFastConfig, ListenTls, MirrorConfig, Protocol,
    ProxyConfig, RouteConfig, ServiceRef, UpstreamTls, VariantConfig,
};
use crate::route::HostMatch;
use crate::split::{BASIS_POINTS, KeySource, MAX_VARIANTS, Override, Side, Weight};

/// Longest route name: it becomes a metric label, so keep it short and plain.
const MAX_NAME_LEN: usize = 63;

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Runs a check, recording its error at `path`; returns the value if it passed.
    fn check<T>(&mut self, path: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.add(path, message)).ok()
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<ProxyConfig, ConfigErrors> {
    let mut errors = Errors::default();
    let listen = errors.check("listen", address(&raw.listen));
    let admin = errors.check("admin", address(&raw.admin));
    let drain_timeout = errors.check("drainTimeout", duration(&raw.drain_timeout));
    let tls = raw.tls.as_ref().map(|t| {
        for (field, value) in [("cert", &t.cert), ("key", &t.key)] {
            if value.is_empty() {
                errors.add(format!("tls.{field}"), "is empty");
            }
        }
        ListenTls {
            cert: t.cert.clone().into(),
            key: t.key.clone().into(),
        }
    });
    let limits = validate_limits(&raw.limits, &mut errors);
    let trust_forwarded_from: Vec<ipnet::IpNet> = raw
        .trust_forwarded_from
        .iter()
        .enumerate()
        .filter_map(|(i, text)| errors.check(format!("trustForwardedFrom[{i}]"), network(text)))
        .collect();
    let side_header = match &raw.side_header {
        None => Some(None),
        Some(name) => errors.check("sideHeader", side_header_name(name)).map(Some),
    };

    let mut backends = BTreeMap::new();
    for (name, backend) in &raw.backends {
        let path = format!("backends.{name}");
        if let Err(message) = plain_name(name) {
            errors.add(&path, message);
        }
        let service = match (&backend.service, backend.port, backend.endpoints.is_empty()) {
            (None, None, true) => {
                errors.add(
                    format!("{path}.endpoints"),
                    "needs at least one endpoint, or service and port",
                );
                None
            }
            (None, None, false) => None,
            (None, Some(_), _) => {
                errors.add(format!("{path}.port"), "is set without service");
                None
            }
            (Some(_), _, false) => {
                errors.add(path.clone(), "sets both service and endpoints; name one");
                None
            }
            (Some(_), None, true) => {
                errors.add(format!("{path}.port"), "is needed with service");
                None
            }
            (Some(service), Some(port), true) => {
                if let Err(message) = dns_label(service) {
                    errors.add(format!("{path}.service"), message);
                }
                match u16::try_from(port) {
                    Ok(port) if port > 0 => Some(ServiceRef {
                        namespace: String::new(),
                        name: service.clone(),
                        port,
                    }),
                    _ => {
                        errors.add(format!("{path}.port"), format!("{port} is not a port (1 to 65535)"));
                        None
                    }
                }
            }
        };
        let endpoints: Vec<_> = backend
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| errors.check(format!("{path}.endpoints[{i}]"), endpoint(e)))
            .collect();
        let protocol = match backend.protocol.as_str() {
            "h1" => Some(Protocol::H1),
            "h2" => Some(Protocol::H2),
            "h2c" => Some(Protocol::H2c),
            other => {
                errors.add(format!("{path}.protocol"), format!("{other:?} is not h1, h2 or h2c"));
                None
            }
        };
        let tls = backend.tls.as_ref().map(|t| {
            if t.ca.is_empty() {
                errors.add(format!("{path}.tls.ca"), "is empty");
            }
            if let Some(sni) = &t.sni
                && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err()
            {
                errors.add(format!("{path}.tls.sni"), format!("{sni:?} is not a server name"));
            }
            UpstreamTls {
                ca: t.ca.clone().into(),
                sni: t.sni.clone(),
            }
        });
        match (protocol, &tls) {
            (Some(Protocol::H2), None) => {
                errors.add(format!("{path}.tls"), "is required for protocol h2 (HTTP/2 over TLS)")
            }
            (Some(Protocol::H2c), Some(_)) => errors.add(
                format!("{path}.tls"),
                "does not apply to protocol h2c (HTTP/2 without TLS)",
            ),
            _ => {}
        }
        backends.insert(
            name.clone(),
            BackendConfig {
                endpoints,
                service,
                protocol: protocol.unwrap_or_default(),
                tls,
            },
        );
    }

    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    let mut routes = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !names.insert(route.name.as_str()) {
            errors.add(format!("{path}.name"), format!("duplicate route name {:?}", route.name));
        }
        if let Some(route) = validate_route(route, &path, &raw, &mut errors) {
            if !matches.insert((route.host.clone(), route.path_prefix.clone())) {
                errors.add(
                    format!("{path}.match"),
                    "another route already matches this host and path prefix",
                );
            }
            routes.push(route);
        }
    }

    match (listen, admin, drain_timeout, limits, side_header, errors.0.is_empty()) {
        (Some(listen), Some(admin), Some(drain_timeout), Some(limits), Some(side_header), true) => Ok(ProxyConfig {
            listen,
            admin,
            drain_timeout,
            tls,
            limits,
            reuse_port: raw.reuse_port,
            trust_forwarded_from,
            side_header,
            routes,
            backends,
        }),
        _ => Err(ConfigErrors(errors.0)),
    }
}

/// The checks of [`validate`] that a config built in code (not parsed) can fail and that
/// compiling it into a table relies on: every backend a route names exists, a route with
/// candidate traffic has a candidate, and no two routes share a name or a match.
pub(super) fn check_built(cfg: &ProxyConfig) -> Result<(), ConfigErrors> {
    let mut errors = Errors::default();
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        for (field, backend) in [("stable", Some(&route.stable)), ("candidate", route.candidate.as_ref())] {
            if let Some(backend) = backend.filter(|b| !cfg.backends.contains_key(*b)) {
                errors.add(
                    format!("{path}.{field}.backend"),
                    format!("backend {backend:?} is not defined in backends"),
                );
            }
        }
        for (j, variant) in route.variants.iter().enumerate() {
            if !cfg.backends.contains_key(&variant.backend) {
                errors.add(
                    format!("{path}.variants[{j}].backend"),
                    format!("backend {:?} is not defined in backends", variant.backend),
                );
            }
        }
        let total: u32 = route.variants.iter().map(|v| u32::from(v.weight.basis_points())).sum();
        if !route.variants.is_empty()
            && (route.variants.len() > MAX_VARIANTS || total != u32::from(BASIS_POINTS) || route.candidate.is_some())
        {
            errors.add(
                format!("{path}.variants"),
                format!(
                    "must be 2 to {MAX_VARIANTS} variants with weights summing to {BASIS_POINTS}, on a route without a candidate"
                ),
            );
        }
        if route
            .overrides
            .iter()
            .any(|o| matches!(o.side, Side::Variant(i) if usize::from(i) >= route.variants.len()))
        {
            errors.add(
                format!("{path}.overrides"),
                "sends requests to a variant the route does not have",
            );
        }
        if route.candidate.is_none() {
            if route.candidate_weight > Weight::ZERO {
                errors.add(
                    format!("{path}.candidateWeight"),
                    "is above 0 but the route has no candidate",
                );
            }
            if route.overrides.iter().any(|o| o.side == Side::Candidate) {
                errors.add(
                    format!("{path}.overrides"),
                    "sends requests to a candidate the route does not have",
                );
            }
        }
        if !names.insert(route.name.as_str()) {
            errors.add(format!("{path}.name"), format!("duplicate route name {:?}", route.name));
        }
        if !matches.insert((&route.host, route.path_prefix.as_str())) {
            errors.add(
                format!("{path}.match"),
                "another route already matches this host and path prefix",
            );
        }
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors.0))
    }
}

fn validate_limits(raw: &RawLimits, errors: &mut Errors) -> Option<ConnectionLimits> {
    let max_connections = match raw.max_connections {
        None => Some(None),
        Some(n) => errors
            .check(
                "limits.maxConnections",
                u32::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{n} is not between 1 and {}", u32::MAX)),
            )
            .map(Some),
    };
    let header_timeout = errors.check("limits.headerTimeout", duration(&raw.header_timeout));
    let idle_timeout = errors.check("limits.idleTimeout", duration(&raw.idle_timeout));
    let send_timeout = errors.check("limits.sendTimeout", duration(&raw.send_timeout));
    Some(ConnectionLimits {
        max_connections: max_connections?,
        header_timeout: header_timeout?,
        idle_timeout: idle_timeout?,
        send_timeout: send_timeout?,
    })
}

fn validate_route(route: &RawRoute, path: &str, raw: &RawConfig, errors: &mut Errors) -> Option<RouteConfig> {
    let name = errors
        .check(format!("{path}.name"), plain_name(&route.name))
        .map(|()| route.name.clone());
    let host = match &route.matches.host {
        None => Some(HostMatch::Any),
        Some(h) => errors.check(format!("{path}.match.host"), host_pattern(h)),
    };
    let path_prefix = errors.check(
        format!("{path}.match.pathPrefix"),
        path_prefix(&route.matches.path_prefix),
    );
    let backend_ref = |errors: &mut Errors, field: &str, backend: &str| {
        if !raw.backends.contains_key(backend) {
            errors.add(
                format!("{path}.{field}.backend"),
                format!("backend {backend:?} is not defined in backends"),
            );
        }
    };
    let variants = validate_variants(route, path, raw, errors);
    let stable = match (&route.stable, &variants) {
        (Some(stable), Some(variants)) if variants.is_empty() => {
            backend_ref(errors, "stable", &stable.backend);
            if stable.revision.is_some() {
                errors.add(
                    format!("{path}.stable.revision"),
                    "applies to the candidate only (it scopes a fail-fast trip)",
                );
            }
            Some(stable.backend.clone())
        }
        (Some(_), _) if !route.variants.is_empty() => {
            errors.add(
                format!("{path}.stable"),
                "is set with variants: a route splits between stable and candidate, or between variants",
            );
            None
        }
        (None, _) if route.variants.is_empty() => {
            errors.add(
                format!("{path}.stable"),
                "is missing: a route needs stable, or variants",
            );
            None
        }
        (_, Some(variants)) => variants.first().map(|v| v.backend.clone()),
        (_, None) => None,
    };
    if !route.variants.is_empty() {
        if route.candidate.is_some() {
            errors.add(
                format!("{path}.candidate"),
                "is set with variants: a route splits between stable and candidate, or between variants",
            );
        }
        if route.candidate_weight != 0 {
            errors.add(
                format!("{path}.candidateWeight"),
                "is set with variants, whose own weights split the route",
            );
        }
        for (field, set) in [
            ("mirror", route.mirror.is_some()),
            ("failFast", route.fail_fast.is_some()),
        ] {
            if set {
                errors.add(
                    format!("{path}.{field}"),
                    "applies to a stable/candidate route, not to one split between variants",
                );
            }
        }
    }
    if let Some(candidate) = &route.candidate {
        backend_ref(errors, "candidate", &candidate.backend);
        if let Some(revision) = &candidate.revision {
            errors.check(format!("{path}.candidate.revision"), opaque_label(revision));
        }
    }
    let has_candidate = route.candidate.is_some();
    let weight_path = format!("{path}.candidateWeight");
    let candidate_weight = match u16::try_from(route.candidate_weight).ok().and_then(Weight::new) {
        None if route.candidate_weight < 0 => {
            errors.add(weight_path, format!("{} is negative", route.candidate_weight));
            None
        }
        None => {
            errors.add(
                weight_path,
                format!("{} is over {BASIS_POINTS}", route.candidate_weight),
            );
            None
        }
        Some(w) if w > Weight::ZERO && !has_candidate => {
            errors.add(weight_path, "is above 0 but the route has no candidate");
            None
        }
        Some(w) => Some(w),
    };

    let mut overrides = Vec::new();
    for (j, rule) in route.overrides.iter().enumerate() {
        let rule_path = format!("{path}.overrides[{j}]");
        let key = errors.check(&rule_path, key_source(rule.header.as_deref(), rule.cookie.as_deref()));
        let side = match variants.as_deref() {
            Some(list) if !list.is_empty() => match list.iter().position(|v| v.name == rule.side) {
                Some(i) => Some(Side::Variant(i as u8)),
                None => {
                    let names: Vec<&str> = list.iter().map(|v| v.name.as_str()).collect();
                    errors.add(
                        format!("{rule_path}.side"),
                        format!(
                            "{:?} is not one of the route's variants ({})",
                            rule.side,
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
            _ => Side::parse(&rule.side),
        };
        let side = match side {
            Some(Side::Candidate) if !has_candidate => {
                errors.add(
                    format!("{rule_path}.side"),
                    "is candidate but the route has no candidate",
                );
                None
            }
            None if route.variants.is_empty() => {
                errors.add(
                    format!("{rule_path}.side"),
                    format!("{:?} is neither stable nor candidate", rule.side),
                );
                None
            }
            side => side,
        };
        if let (Some(key), Some(side)) = (key, side) {
            overrides.push(Override {
                key,
                side,
                equals: rule.equals.clone(),
            });
        }
    }
    let sticky = match &route.sticky {
        None => Some(None),
        Some(RawKey { header, cookie }) => errors
            .check(
                format!("{path}.sticky"),
                key_source(header.as_deref(), cookie.as_deref()),
            )
            .map(Some),
    };
    if let Some(epoch) = &route.users_epoch {
        let field = format!("{path}.usersEpoch");
        if route.sticky.is_none() {
            errors.add(&field, "counts distinct sticky users, but the route has no sticky key");
        }
        if let Err(message) = opaque_label(epoch) {
            errors.add(&field, message);
        }
    }
    let timeout = errors.check(format!("{path}.timeout"), duration(&route.timeout));
    let score = match &route.score {
        None => Some(None),
        Some(score) => errors
            .check(format!("{path}.score.header"), header_name(&score.header))
            .map(Some),
    };
    let fail_fast = match &route.fail_fast {
        None => Some(None),
        Some(f) => {
            let ff = format!("{path}.failFast");
            let ratio_ok = f.error_ratio > 0.0 && f.error_ratio <= 1.0;
            if !ratio_ok {
                errors.add(
                    format!("{ff}.errorRatio"),
                    format!("{} is not above 0 and at most 1", f.error_ratio),
                );
            }
            if f.min_requests == 0 {
                errors.add(format!("{ff}.minRequests"), "must be at least 1");
            }
            if route.candidate.is_none() && route.variants.is_empty() {
                errors.add(&ff, "the route has no candidate to fail fast");
            }
            let window = errors.check(format!("{ff}.window"), duration(&f.window));
            match window {
                Some(window) if ratio_ok && f.min_requests > 0 => Some(Some(FailFastConfig {
                    error_ratio: f.error_ratio,
                    window,
                    min_requests: f.min_requests,
                })),
                _ => None,
            }
        }
    };

    let mirror = match &route.mirror {
        None => Some(None),
        Some(m) => {
            let mp = format!("{path}.mirror");
            if route.candidate.is_none() && route.variants.is_empty() {
                errors.add(&mp, "the route has no candidate to mirror to");
            }
            if m.max_body_bytes == 0 {
                errors.add(format!("{mp}.maxBodyBytes"), "must be at least 1");
            }
            let max_in_flight = u32::try_from(m.max_in_flight).ok().filter(|&n| n > 0);
            if max_in_flight.is_none() {
                errors.add(
                    format!("{mp}.maxInFlight"),
                    format!("{} is not between 1 and {}", m.max_in_flight, u32::MAX),
                );
            }
            match (u16::try_from(m.weight).ok().and_then(Weight::new), max_in_flight) {
                (Some(weight), Some(max_in_flight)) if route.candidate.is_some() && m.max_body_bytes > 0 => {
                    Some(Some(MirrorConfig {
                        weight,
                        max_body_bytes: m.max_body_bytes,
                        max_in_flight,
                    }))
                }
                (Some(_), _) => None,
                (None, _) => {
                    errors.add(
                        format!("{mp}.weight"),
                        format!("{} is not between 0 and {BASIS_POINTS}", m.weight),
                    );
                    None
                }
            }
        }
    };

    Some(RouteConfig {
        name: name?,
        host: host?,
        path_prefix: path_prefix?,
        stable: stable?,
        candidate: route.candidate.as_ref().map(|c| c.backend.clone()),
        candidate_revision: route.candidate.as_ref().and_then(|c| c.revision.clone()),
        candidate_weight: candidate_weight?,
        overrides,
        sticky: sticky?,
        users_epoch: route.users_epoch.clone(),
        timeout: timeout?,
        fail_fast: fail_fast?,
        mirror: mirror?,
        variants: variants?,
        score: score?,
    })
}

/// Names the proxy gives sides of its own; a variant cannot take them.
const RESERVED_SIDE_NAMES: [&str; 3] = ["stable", "candidate", "mirror"];

/// The variants of an N-way route (empty for a stable/candidate route), or `None` when one
/// is wrong (each error recorded).
fn validate_variants(route: &RawRoute, path: &str, raw: &RawConfig, errors: &mut Errors) -> Option<Vec<VariantConfig>> {
    if route.variants.is_empty() {
        return Some(Vec::new());
    }
    let before = errors.0.len();
    let count = route.variants.len();
    if !(2..=MAX_VARIANTS).contains(&count) {
        errors.add(
            format!("{path}.variants"),
            format!("has {count} variants; a route splits between 2 and {MAX_VARIANTS}"),
        );
    }
    let mut names = HashSet::new();
    let mut variants = Vec::new();
    let mut total: i64 = 0;
    for (i, v) in route.variants.iter().enumerate() {
        let vp = format!("{path}.variants[{i}]");
        if let Err(message) = plain_name(&v.name) {
            errors.add(format!("{vp}.name"), message);
        } else if RESERVED_SIDE_NAMES.contains(&v.name.as_str()) {
            errors.add(
                format!("{vp}.name"),
                format!(
                    "{:?} is a side name the proxy uses itself; name the variant otherwise",
                    v.name
                ),
            );
        } else if !names.insert(v.name.as_str()) {
            errors.add(format!("{vp}.name"), format!("duplicate variant name {:?}", v.name));
        }
        if !raw.backends.contains_key(&v.backend) {
            errors.add(
                format!("{vp}.backend"),
                format!("backend {:?} is not defined in backends", v.backend),
            );
        }
        total = total.saturating_add(v.weight);
        match u16::try_from(v.weight).ok().and_then(Weight::new) {
            Some(weight) => variants.push(VariantConfig {
                name: v.name.clone(),
                backend: v.backend.clone(),
                weight,
            }),
            None => errors.add(
                format!("{vp}.weight"),
                format!("{} is not between 0 and {BASIS_POINTS}", v.weight),
            ),
        }
    }
    if total != i64::from(BASIS_POINTS) && errors.0.len() == before {
        errors.add(
            format!("{path}.variants"),
            format!("weights sum to {total}, not {BASIS_POINTS}"),
        );
    }
    (errors.0.len() == before).then_some(variants)
}

fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address with a port, like 127.0.0.1:8080"))
}

fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?} is zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{text:?} is not a duration like 30s or 500ms ({e})")),
    }
}

/// A CIDR block, or one address (a block of one).
fn network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("{text:?} is not an IP address or a CIDR block like 10.0.0.0/8"))
}

/// Response headers the side header may not replace: those that describe the connection or
/// frame the message (a client would misread the response), and the proxy's own.
const RESERVED_RESPONSE_HEADERS: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "content-type",
    "x-weir-error",
    "x-weir-fail-fast",
];

fn side_header_name(text: &str) -> Result<HeaderName, String> {
    let name = header_name(text)?;
    if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{text:?} frames the response, describes the connection or is the proxy's own; choose another name"
        ));
    }
    Ok(name)
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("{text:?} is not a valid header name"))
}

fn endpoint(text: &str) -> Result<Authority, String> {
    let bad = || format!("{text:?} is not host:port");
    let authority: Authority = text.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad());
    }
    Ok(authority)
}

fn plain_name(name: &str) -> Result<(), String> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name.is_empty() {
        Err("is empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Err(format!("{name:?} is longer than {MAX_NAME_LEN} characters"))
    } else if !name.bytes().all(plain) {
        Err(format!("{name:?} may only hold letters, digits, '-', '_' and '.'"))
    } else {
        Ok(())
    }
}

/// A Kubernetes Service name: a DNS label (RFC 1123), at most 63 characters.
fn dns_label(name: &str) -> Result<(), String> {
    let inner = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let ends = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(1..=63).contains(&name.len())
        || !name.bytes().all(inner)
        || !ends(name.as_bytes().first())
        || !ends(name.as_bytes().last())
    {
        Err(format!(
            "{name:?} is not a Service name (1 to 63 lowercase letters, digits and '-', alphanumeric at both ends)"
        ))
    } else {
        Ok(())
    }
}

/// Longest opaque label (a candidate revision, a users epoch): the controller writes a
/// 16-digit hash or a timestamp; leave room for others.
const MAX_LABEL_LEN: usize = 128;

/// A value the proxy only compares, never reads: a candidate's revision, a users epoch.
fn opaque_label(text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err("is empty".into())
    } else if text.len() > MAX_LABEL_LEN {
        Err(format!("is longer than {MAX_LABEL_LEN} characters"))
    } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
        Err(format!("{text:?} may only hold printable ASCII without spaces"))
    } else {
        Ok(())
    }
}

fn host_pattern(text: &str) -> Result<HostMatch, String> {
    let host = text.strip_prefix("*.").unwrap_or(text);
    let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if text == "*" || (host.split('.').all(label_ok) && !host.starts_with('-')) {
        Ok(HostMatch::parse(Some(text)))
    } else {
        Err(format!("{text:?} is not a host name or *.suffix"))
    }
}

fn path_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        Err(format!("{text:?} does not start with /"))
    } else if text.contains(['?', '#', ' ']) {
        Err(format!("{text:?} may not hold '?', '#' or spaces"))
    } else {
        Ok(text.to_owned())
    }
}

fn key_source(header: Option<&str>, cookie: Option<&str>) -> Result<KeySource, String> {
    match (header, cookie) {
        (Some(h), None) => header_name(h).map(KeySource::Header),
        (None, Some(c)) if !c.is_empty() && !c.contains([';', '=', ' ']) => Ok(KeySource::Cookie(c.to_owned())),
        (None, Some(c)) => Err(format!("cookie {c:?} is not a cookie name")),
        _ => Err("needs exactly one of header or cookie".into()),
    }
}
