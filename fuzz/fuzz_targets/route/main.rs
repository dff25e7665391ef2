//! Routing and splitting as the proxy does them: a small config of routes (hosts from a small
//! alphabet with wildcards, path prefixes, weights, overrides, sticky keys) written as YAML,
//! parsed and compiled into a table through `ConfigState`, then requests looked up and split.
//!
//! Invariants, beyond not panicking (each checked against a model written from the README, not
//! from the code):
//! - `find` returns the route the precedence rules name: an exact host beats the longest
//!   matching `*.suffix`, which beats a host-less route; among those, the longest prefix that
//!   matches on a segment boundary; and `None` only when no route matches at all;
//! - the first override whose header or cookie equals its value decides its side;
//! - a sticky key gives the same side every time; weight 0 never sends a request to the
//!   candidate, weight 10000 never to stable, and a route without a candidate never does;
//! - the weight split is exact: after `n` weight-decided requests of a route, the candidate has
//!   had `floor(n * weight / 10000)` of them;
//! - fail-fast, never fed a failure here, never diverts.
#![no_main]

mod model;

use std::collections::HashMap;
use std::fmt::Write as _;

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use weir_proxy::ConfigState;
use weir_proxy::metrics::ProxyMetrics;
use weir_proxy::split::{Reason, Side};

use model::{Key, ModelRoute, expected_route, find_key};

const HOSTS: [&str; 6] = ["a.x", "b.x", "x", "a.b.x", "y", "xn--d.x"];
const SUFFIXES: [&str; 3] = ["*.x", "*.b.x", "*.y"];
const PREFIXES: [&str; 8] = ["/", "/api", "/api/", "/api/v1", "/a", "/ap", "/static/", "/api/v1/x"];
const PATHS: [&str; 12] = [
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/x",
    "/apix",
    "/api/v10",
    "/ap",
    "/a/b",
    "/static",
    "/static/app.js",
    "",
];
const HEADER_NAMES: [&str; 5] = ["x-user", "x-weir-side", "x-canary", "cookie", "x-other"];
const COOKIE_NAMES: [&str; 4] = ["uid", "beta", "u", "uid2"];
const VALUES: [&str; 7] = ["1", "yes", "candidate", "", "x y", "\"q\"", "user-42"];
const MAX_ROUTES: usize = 6;
const MAX_REQUESTS: usize = 24;

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    requests: Vec<RequestIn>,
}

#[derive(Arbitrary, Debug)]
enum HostIn {
    Any,
    Star,
    Exact(u8),
    Suffix(u8),
}

#[derive(Arbitrary, Debug)]
enum KeyIn {
    Header(u8),
    Cookie(u8),
}

#[derive(Arbitrary, Debug)]
struct OverrideIn {
    key: KeyIn,
    equals: u8,
    candidate: bool,
}

#[derive(Arbitrary, Debug)]
struct RouteIn {
    host: HostIn,
    prefix: u8,
    has_candidate: bool,
    weight: u16,
    overrides: Vec<OverrideIn>,
    sticky: Option<KeyIn>,
    fail_fast: bool,
}

#[derive(Arbitrary, Debug)]
enum HostText {
    Listed {
        index: u8,
        upper: bool,
        port: Option<u16>,
    },
    /// Labels in front of a listed host: `a.a.a.x`, possibly long.
    Deeper {
        index: u8,
        labels: u8,
        upper: bool,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PathText {
    Listed(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderIn {
    Listed {
        name: u8,
        value: u8,
    },
    RawValue {
        name: u8,
        value: Vec<u8>,
    },
    /// A `Cookie` header of `name=value` pairs, with odd spacing and quotes.
    Cookies(Vec<(u8, u8, u8)>),
}

#[derive(Arbitrary, Debug)]
struct RequestIn {
    host: HostText,
    path: PathText,
    headers: Vec<HeaderIn>,
    /// Asked twice in a row: the second answer must match the first unless the weight decided.
    repeat: bool,
}

fn pick<'a>(list: &[&'a str], index: u8) -> &'a str {
    list[usize::from(index) % list.len()]
}

fn key_of(key: &KeyIn) -> Key {
    match key {
        KeyIn::Header(i) => Key::Header(pick(&HEADER_NAMES, *i).to_owned()),
        KeyIn::Cookie(i) => Key::Cookie(pick(&COOKIE_NAMES, *i).to_owned()),
    }
}

fn yaml_key(key: &Key) -> String {
    match key {
        Key::Header(h) => format!("header: {}", quote(h)),
        Key::Cookie(c) => format!("cookie: {}", quote(c)),
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

/// The routes, valid by construction: distinct matches, and candidate traffic only on routes
/// with a candidate.
fn model(routes: &[RouteIn]) -> Vec<ModelRoute> {
    let mut out: Vec<ModelRoute> = Vec::new();
    for (i, r) in routes.iter().take(MAX_ROUTES).enumerate() {
        let host = match r.host {
            HostIn::Any | HostIn::Star => None,
            HostIn::Exact(h) => Some((false, pick(&HOSTS, h).to_owned())),
            HostIn::Suffix(s) => Some((true, pick(&SUFFIXES, s)[1..].to_owned())),
        };
        let prefix = pick(&PREFIXES, r.prefix).to_owned();
        if out.iter().any(|o| o.host == host && o.prefix == prefix) {
            continue;
        }
        let weight = if r.has_candidate { r.weight % 10_001 } else { 0 };
        let overrides = r
            .overrides
            .iter()
            .take(3)
            .map(|o| {
                let side = if o.candidate && r.has_candidate {
                    Side::Candidate
                } else {
                    Side::Stable
                };
                (key_of(&o.key), pick(&VALUES, o.equals).to_owned(), side)
            })
            .collect();
        out.push(ModelRoute {
            name: format!("r{i}"),
            host,
            prefix,
            has_candidate: r.has_candidate,
            weight,
            overrides,
            sticky: r.sticky.as_ref().map(key_of),
            star: matches!(r.host, HostIn::Star),
            fail_fast: r.fail_fast && r.has_candidate,
        });
    }
    out
}

fn yaml(routes: &[ModelRoute]) -> String {
    let mut y = String::from("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n");
    y.push_str(if routes.is_empty() { "routes: []\n" } else { "routes:\n" });
    for route in routes {
        let _ = writeln!(y, "  - name: {}", route.name);
        let host = match &route.host {
            None if route.star => "host: \"*\", ".to_owned(),
            None => String::new(),
            Some((true, s)) => format!("host: {}, ", quote(&format!("*{s}"))),
            Some((false, h)) => format!("host: {}, ", quote(h)),
        };
        let _ = writeln!(y, "    match: {{ {host}pathPrefix: {} }}", quote(&route.prefix));
        let _ = writeln!(y, "    stable: {{ backend: s }}");
        if route.has_candidate {
            let _ = writeln!(y, "    candidate: {{ backend: c, revision: rev-1 }}");
            let _ = writeln!(y, "    candidateWeight: {}", route.weight);
        }
        if !route.overrides.is_empty() {
            let _ = writeln!(y, "    overrides:");
            for (key, equals, side) in &route.overrides {
                let _ = writeln!(
                    y,
                    "      - {{ {}, equals: {}, side: {side} }}",
                    yaml_key(key),
                    quote(equals)
                );
            }
        }
        if let Some(key) = &route.sticky {
            let _ = writeln!(y, "    sticky: {{ {} }}", yaml_key(key));
        }
        if route.fail_fast {
            let _ = writeln!(y, "    failFast: {{ errorRatio: 0.5, window: 10s, minRequests: 1 }}");
        }
    }
    y.push_str("backends:\n  s: { endpoints: [\"127.0.0.1:1\"] }\n  c: { endpoints: [\"127.0.0.1:2\"] }\n");
    y
}

fn host_text(h: &HostText) -> String {
    match h {
        HostText::Listed { index, upper, port } => {
            let all: Vec<&str> = HOSTS.iter().chain(&["b.y", "z", "x.a"]).copied().collect();
            let mut host = all[usize::from(*index) % all.len()].to_owned();
            if *upper {
                host = host.to_ascii_uppercase();
            }
            if let Some(port) = port {
                let _ = write!(host, ":{port}");
            }
            host
        }
        HostText::Deeper { index, labels, upper } => {
            let mut host = "a.".repeat(usize::from(*labels)) + pick(&HOSTS, *index);
            if *upper {
                host = host.to_ascii_uppercase();
            }
            host
        }
        HostText::Raw(s) => s.clone(),
    }
}

fn headers_of(list: &[HeaderIn]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for h in list.iter().take(8) {
        match h {
            HeaderIn::Listed { name, value } => {
                out.push((
                    pick(&HEADER_NAMES, *name).to_owned(),
                    pick(&VALUES, *value).as_bytes().to_vec(),
                ));
            }
            HeaderIn::RawValue { name, value } => {
                out.push((pick(&HEADER_NAMES, *name).to_owned(), value.clone()));
            }
            HeaderIn::Cookies(pairs) => {
                let seps = [";", "; ", " ;", ";;", " ; "];
                let mut text = String::new();
                for (i, (n, v, sep)) in pairs.iter().take(4).enumerate() {
                    if i > 0 {
                        text.push_str(pick(&seps, *sep));
                    }
                    let _ = write!(text, "{}={}", pick(&COOKIE_NAMES, *n), pick(&VALUES, *v));
                }
                out.push(("cookie".to_owned(), text.into_bytes()));
            }
        }
    }
    // Only what HTTP can carry reaches the proxy.
    out.retain(|(_, v)| HeaderValue::from_bytes(v).is_ok());
    out
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let routes = model(&input.routes);
    let text = yaml(&routes);

    let state = ConfigState::new(ProxyMetrics::register(&mut Registry::default()));
    if let Err(errors) = state.apply_text(&text, "fuzz") {
        panic!("a config valid by construction was refused: {errors}\n{text}");
    }
    let table = state.table().expect("an applied config publishes a table");

    // Weight-decided requests and candidates among them, per route.
    let mut by_weight: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut sticky_sides: HashMap<(usize, Vec<u8>), Side> = HashMap::new();
    for request in input.requests.iter().take(MAX_REQUESTS) {
        let host = host_text(&request.host);
        let path = match &request.path {
            PathText::Listed(i) => pick(&PATHS, *i).to_owned(),
            PathText::Raw(s) => s.clone(),
        };
        let found = table.find(&host, &path).map(|r| r.name.clone());
        let expected = expected_route(&routes, &host, &path);
        assert_eq!(
            found,
            expected.map(|i| routes[i].name.clone()),
            "host {host:?} path {path:?}\n{text}"
        );
        let (Some(route), Some(index)) = (table.find(&host, &path), expected) else {
            continue;
        };
        let model = &routes[index];

        let list = headers_of(&request.headers);
        let mut headers = HeaderMap::new();
        for (name, value) in &list {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("listed names are valid"),
                HeaderValue::from_bytes(value).expect("filtered to valid values"),
            );
        }

        let times = if request.repeat { 2 } else { 1 };
        let mut first: Option<(Side, Reason)> = None;
        for _ in 0..times {
            let (side, reason, diverted) = route.decide(&headers);
            assert!(!diverted, "fail-fast diverted a request though nothing failed");
            let matching = model
                .overrides
                .iter()
                .position(|(key, equals, _)| find_key(key, &list).as_deref() == Some(equals.as_bytes()));
            let sticky_key = model.sticky.as_ref().and_then(|k| find_key(k, &list));
            match (matching, reason) {
                (Some(i), Reason::Override(j)) => {
                    assert_eq!(i, j, "not the first matching override");
                    assert_eq!(side, model.overrides[i].2, "an override did not decide its side");
                }
                (Some(i), other) => panic!("override {i} matches but {other:?} decided\n{list:?}\n{text}"),
                (None, Reason::Override(j)) => panic!("override {j} decided but none matches\n{list:?}"),
                (None, Reason::Sticky) => {
                    let key = sticky_key.expect("sticky decided without a sticky key");
                    let before = *sticky_sides.entry((index, key)).or_insert(side);
                    assert_eq!(side, before, "a sticky key changed sides");
                }
                (None, Reason::Weight) => {
                    assert!(
                        sticky_key.is_none(),
                        "the weight decided though the sticky key is there"
                    );
                    let (n, candidates) = by_weight.entry(index).or_default();
                    *n += 1;
                    if side == Side::Candidate {
                        *candidates += 1;
                    }
                    let exact = *n * u64::from(model.weight) / 10_000;
                    assert_eq!(
                        *candidates, exact,
                        "weight {}: {} of {} weight-decided requests to the candidate",
                        model.weight, candidates, n
                    );
                }
            }
            if !matches!(reason, Reason::Override(_)) {
                match model.weight {
                    0 => assert_eq!(side, Side::Stable, "weight 0 sent a request to the candidate"),
                    10_000 => assert_eq!(side, Side::Candidate, "weight 10000 sent a request to stable"),
                    _ => {}
                }
            }
            if !model.has_candidate {
                assert_eq!(side, Side::Stable, "a route without a candidate chose it");
            }
            if let Some((side0, reason0)) = first
                && reason != Reason::Weight
            {
                assert_eq!(
                    (side, reason),
                    (side0, reason0),
                    "the same request was split differently"
                );
            }
            first = Some((side, reason));
        }
    }
});
