use super::*;
use proptest::prelude::*;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: 127.0.0.1:9901
drainTimeout: 10s
routes:
  - name: sentiment
    match: { host: sentiment.models.svc, pathPrefix: / }
    stable:    { backend: sentiment-v1 }
    candidate: { backend: sentiment-v2 }
    candidateWeight: 500
    overrides:
      - { header: x-weir-side, equals: candidate, side: candidate }
      - { cookie: beta, equals: "1", side: candidate }
    sticky: { header: x-user-id }
    timeout: 2s
  - name: catch-all
    stable: { backend: sentiment-v1 }
backends:
  sentiment-v1: { endpoints: ["127.0.0.1:9001", "localhost:9002"] }
  sentiment-v2: { endpoints: ["127.0.0.1:9003"] }
"#;

fn messages(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config must be rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_good_config_parses_with_defaults_filled_in() {
    let cfg = parse(GOOD).expect("good config");
    assert_eq!(cfg.routes.len(), 2);
    let r = &cfg.routes[0];
    assert_eq!(r.candidate_weight.basis_points(), 500);
    assert_eq!(r.host, HostMatch::Exact("sentiment.models.svc".into()));
    assert_eq!(r.timeout, Duration::from_secs(2));
    assert_eq!(r.overrides.len(), 2);
    assert_eq!(cfg.routes[1].path_prefix, "/");
    assert_eq!(cfg.routes[1].timeout, Duration::from_secs(30));
    assert_eq!(cfg.side_header, Some(HeaderName::from_static("x-weir-side")));
    assert_eq!(cfg.backends["sentiment-v1"].endpoints.len(), 2);
}

/// A gateway of many model services: 10,000 routes, each with two backends, in YAML.
#[test]
fn a_config_of_ten_thousand_routes_parses() {
    let mut text = String::from("routes:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{ name: m{i}, match: {{ host: m{i}.models.svc }}, stable: {{ backend: m{i}-v1 }}, \
             candidate: {{ backend: m{i}-v2 }}, candidateWeight: 500, sticky: {{ header: x-user-id }} }}\n"
        ));
    }
    text.push_str("backends:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  m{i}-v1: {{ endpoints: [\"10.0.{a}.{b}:8000\"] }}\n  m{i}-v2: {{ endpoints: [\"10.1.{a}.{b}:8000\"] }}\n",
            a = i / 250,
            b = i % 250 + 1
        ));
    }
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 10_000);
    assert_eq!(config.backends.len(), 20_000);
}

#[test]
fn json_is_accepted_too() {
    let cfg =
        parse(r#"{"routes":[{"name":"a","stable":{"backend":"b"}}],"backends":{"b":{"endpoints":["127.0.0.1:1"]}}}"#)
            .expect("good JSON config");
    assert_eq!(cfg.routes[0].name, "a");
}

#[test]
fn a_written_config_reads_back_equal() {
    let cfg = parse(GOOD).expect("good config");
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn side_header_can_be_turned_off() {
    let cfg = parse("sideHeader: null\nroutes: []\n").expect("valid");
    assert_eq!(cfg.side_header, None);
}

/// `got` holds one error per prefix: each prefix starts one of them, and there are no others.
fn assert_errors_are(got: &[String], prefixes: &[&str]) {
    for prefix in prefixes {
        assert!(
            got.iter().any(|m| m.starts_with(prefix)),
            "missing {prefix:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), prefixes.len(), "unexpected extra errors: {got:#?}");
}

#[test]
fn every_bad_field_is_reported_with_its_path() {
    let bad = r#"
listen: nowhere
drainTimeout: soon
colour: blue
routes:
  - name: a
    stable: { backend: v1 }
    candidate: { backend: v9 }
    candidateWeight: 10001
    timeout: 5 parsecs
    sticky: {}
    overrides:
      - { header: x-a, equals: "1", side: sideways }
    extra: 1
  - name: a
    match: { pathPrefix: api }
    stable: { backend: v1 }
    candidateWeight: 5
backends:
  v1: { endpoints: [] }
  v2: { endpoints: ["no-port", "127.0.0.1:80"] }
"#;
    let got = messages(bad);
    let expect_prefixes = [
        "colour: unknown field",
        "routes[0].extra: unknown field",
        "listen: \"nowhere\" is not an IP address",
        "drainTimeout: \"soon\" is not a duration",
        "backends.v1.endpoints: needs at least one endpoint",
        "backends.v2.endpoints[0]: \"no-port\" is not host:port",
        "routes[0].candidate.backend: backend \"v9\" is not defined",
        "routes[0].candidateWeight: 10001 is over 10000",
        "routes[0].overrides[0].side: \"sideways\" is neither stable nor candidate",
        "routes[0].sticky: needs exactly one of header or cookie",
        "routes[0].timeout: \"5 parsecs\" is not a duration",
        "routes[1].name: duplicate route name \"a\"",
        "routes[1].match.pathPrefix: \"api\" does not start with /",
        "routes[1].candidateWeight: is above 0 but the route has no candidate",
    ];
    assert_errors_are(&got, &expect_prefixes);
}

#[test]
fn a_type_error_names_its_path() {
    let got = messages("routes:\n  - name: a\n    stable: { backend: v1 }\n    candidateWeight: lots\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("routes[0].candidateWeight: invalid type"), "{got:?}");
}

#[test]
fn a_missing_field_is_named() {
    let got = messages("routes:\n  - name: a\n");
    assert_eq!(got, ["routes[0].stable: is missing: a route needs stable, or variants"]);
}

#[test]
fn negative_weights_and_bad_hosts_are_rejected() {
    let got = messages(
        "routes:\n  - { name: a, match: { host: 'bad host' }, stable: { backend: v1 }, candidate: { backend: v1 }, candidateWeight: -1 }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n",
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("routes[0].match.host: \"bad host\" is not a host name"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("routes[0].candidateWeight: -1 is negative"),
        "{got:?}"
    );
}

#[test]
fn two_routes_on_the_same_host_and_prefix_are_rejected() {
    let got = messages(
        "routes:\n  - { name: a, match: { host: x, pathPrefix: /p }, stable: { backend: v1 } }\n  - { name: b, match: { host: X, pathPrefix: /p }, stable: { backend: v1 } }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n",
    );
    assert_eq!(
        got,
        vec!["routes[1].match: another route already matches this host and path prefix".to_string()]
    );
}

#[test]
fn empty_and_malformed_documents_are_rejected() {
    assert_eq!(messages(""), vec!["the config is empty".to_string()]);
    assert!(
        messages("routes: [")
            .first()
            .is_some_and(|m| m.starts_with("invalid YAML"))
    );
    assert!(
        messages("{\"routes\": ")
            .first()
            .is_some_and(|m| m.starts_with("invalid JSON"))
    );
}

proptest! {
    #[test]
    fn weights_are_accepted_exactly_up_to_ten_thousand(w in -20_000i64..20_000) {
        let text = format!(
            "routes:\n  - {{ name: a, stable: {{ backend: v1 }}, candidate: {{ backend: v1 }}, candidateWeight: {w} }}\nbackends: {{ v1: {{ endpoints: ['127.0.0.1:1'] }} }}\n"
        );
        let result = parse(&text);
        prop_assert_eq!(result.is_ok(), (0..=10_000).contains(&w));
        if let Ok(cfg) = result {
            prop_assert_eq!(i64::from(cfg.routes[0].candidate_weight.basis_points()), w);
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let cfg = parse(include_str!("../../../examples/weir-proxy.yaml")).expect("examples/weir-proxy.yaml is valid");
    assert_eq!(cfg.routes[0].candidate_weight.basis_points(), 500);
}

#[test]
fn fail_fast_settings_are_checked() {
    let got = messages(
        "routes:\n  - { name: a, stable: { backend: v1 }, failFast: { errorRatio: 2, window: soon, minRequests: 0 } }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n",
    );
    let expected = [
        "routes[0].failFast.errorRatio: 2 is not above 0 and at most 1",
        "routes[0].failFast.minRequests: must be at least 1",
        "routes[0].failFast: the route has no candidate to fail fast",
        "routes[0].failFast.window: \"soon\" is not a duration",
    ];
    for prefix in expected {
        assert!(
            got.iter().any(|m| m.starts_with(prefix)),
            "missing {prefix:?} in {got:#?}"
        );
    }
    let cfg = parse(
        "routes:\n  - { name: a, stable: { backend: v1 }, candidate: { backend: v1 }, failFast: { errorRatio: 0.5 } }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n",
    )
    .expect("valid");
    let ff = cfg.routes[0].fail_fast.expect("fail-fast set");
    assert_eq!((ff.window, ff.min_requests), (Duration::from_secs(10), 20), "defaults");
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn mirror_settings_are_checked() {
    let got = messages(
        "routes:\n  - { name: a, stable: { backend: v1 }, candidate: { backend: v1 }, mirror: { weight: 10001, maxBodyBytes: 0 } }\n  - { name: b, match: { pathPrefix: /b }, stable: { backend: v1 }, mirror: { weight: 5 } }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n",
    );
    assert_eq!(
        got,
        vec![
            "routes[0].mirror.maxBodyBytes: must be at least 1".to_string(),
            "routes[0].mirror.weight: 10001 is not between 0 and 10000".to_string(),
            "routes[1].mirror: the route has no candidate to mirror to".to_string(),
        ]
    );
}

#[test]
fn backend_protocols_and_tls_are_checked() {
    let got = messages(
        "backends:\n  a: { endpoints: ['127.0.0.1:1'], protocol: h3 }\n  b: { endpoints: ['127.0.0.1:1'], protocol: h2 }\n  c: { endpoints: ['127.0.0.1:1'], protocol: h2c, tls: { ca: /ca.pem } }\n  d: { endpoints: ['127.0.0.1:1'], tls: { ca: /ca.pem, sni: 'not a name' } }\ntls: { cert: '', key: /k.pem }\n",
    );
    assert_eq!(
        got,
        vec![
            "tls.cert: is empty".to_string(),
            "backends.a.protocol: \"h3\" is not h1, h2 or h2c".to_string(),
            "backends.b.tls: is required for protocol h2 (HTTP/2 over TLS)".to_string(),
            "backends.c.tls: does not apply to protocol h2c (HTTP/2 without TLS)".to_string(),
            "backends.d.tls.sni: \"not a name\" is not a server name".to_string(),
        ]
    );
    let cfg = parse(
        "tls: { cert: /c.pem, key: /k.pem }\nbackends:\n  a: { endpoints: ['127.0.0.1:1'], protocol: h2c }\n  b: { endpoints: ['127.0.0.1:1'], protocol: h2, tls: { ca: /ca.pem, sni: models.svc } }\n",
    )
    .expect("valid");
    assert_eq!(cfg.backends["a"].protocol, Protocol::H2c);
    assert_eq!(
        cfg.backends["b"].tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("models.svc")
    );
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn a_revision_is_for_the_candidate_only_and_round_trips() {
    let text = "routes:\n  - { name: a, stable: { backend: v1, revision: x }, candidate: { backend: v2, revision: 'bad rev' } }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] }, v2: { endpoints: ['127.0.0.1:2'] } }\n";
    let got = messages(text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("routes[0].stable.revision: applies to the candidate only"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("routes[0].candidate.revision: \"bad rev\" may only hold"),
        "{got:?}"
    );
    let good = text
        .replace("backend: v1, revision: x", "backend: v1")
        .replace("'bad rev'", "7d9f00aa");
    let cfg = parse(&good).expect("valid");
    assert_eq!(cfg.routes[0].candidate_revision.as_deref(), Some("7d9f00aa"));
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn a_users_epoch_needs_a_sticky_key_and_round_trips() {
    let text = "routes:\n  - { name: a, stable: { backend: v1 }, usersEpoch: '' }\n  - { name: b, match: { pathPrefix: /b }, stable: { backend: v1 }, sticky: { header: x-user }, usersEpoch: 2026-12-03T02:33:53.123456Z }\nbackends: { v1: { endpoints: ['127.0.0.1:1'] } }\n";
    let got = messages(text);
    assert_eq!(
        got,
        [
            "routes[0].usersEpoch: counts distinct sticky users, but the route has no sticky key",
            "routes[0].usersEpoch: is empty",
        ],
    );
    let good = text.replace("usersEpoch: '' ", "");
    let cfg = parse(&good).expect("valid");
    assert_eq!(cfg.routes[0].users_epoch, None);
    assert_eq!(
        cfg.routes[1].users_epoch.as_deref(),
        Some("2026-12-03T02:33:53.123456Z")
    );
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn connection_limits_default_and_every_bad_one_is_named() {
    let cfg = parse("routes: []\n").expect("valid");
    assert_eq!(cfg.limits, ConnectionLimits::default());
    let cfg = parse("limits: { maxConnections: 500, idleTimeout: 5m }\n").expect("valid");
    assert_eq!(cfg.limits.max_connections, Some(500));
    assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(cfg.limits.send_timeout, Duration::from_secs(60));
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);

    let got = messages(
        "limits: { maxConnections: 0, headerTimeout: 0s, idleTimeout: never, sendTimeout: 1 fortnight, burst: 3 }\n",
    );
    let expect_prefixes = [
        "limits.burst: unknown field",
        "limits.maxConnections: 0 is not between 1 and",
        "limits.headerTimeout: \"0s\" is zero",
        "limits.idleTimeout: \"never\" is not a duration",
        "limits.sendTimeout: \"1 fortnight\" is not a duration",
    ];
    assert_errors_are(&got, &expect_prefixes);
}

#[test]
fn trusted_forwarders_are_blocks_or_addresses_and_every_bad_one_is_named() {
    let cfg = parse("trustForwardedFrom: [10.0.0.0/8, 192.168.1.7, \"fd00::/8\", 10.1.2.3/16]\n").expect("valid");
    let blocks: Vec<String> = cfg.trust_forwarded_from.iter().map(ToString::to_string).collect();
    assert_eq!(blocks, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "10.1.0.0/16"]);
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
    let got = messages("trustForwardedFrom: [10.0.0.0/33, lb.internal, 10.0.0.1]\n");
    assert_eq!(
        got,
        [
            "trustForwardedFrom[0]: \"10.0.0.0/33\" is not an IP address or a CIDR block like 10.0.0.0/8",
            "trustForwardedFrom[1]: \"lb.internal\" is not an IP address or a CIDR block like 10.0.0.0/8",
        ]
    );
}

#[test]
fn the_side_header_cannot_replace_framing_connection_or_proxy_headers() {
    for name in [
        "Transfer-Encoding",
        "content-length",
        "connection",
        "upgrade",
        "x-weir-error",
    ] {
        let got = messages(&format!("sideHeader: {name}\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&format!("sideHeader: {name:?} frames the response")),
            "{got:?}"
        );
    }
    assert!(parse("sideHeader: x-served-by\n").is_ok());
}

#[test]
fn a_mirror_needs_room_for_one_copy_in_flight() {
    let route = |mirror: &str| {
        format!(
            "routes:\n  - {{ name: a, stable: {{ backend: v1 }}, candidate: {{ backend: v2 }}, mirror: {mirror} }}\n\
             backends: {{ v1: {{ endpoints: ['127.0.0.1:1'] }}, v2: {{ endpoints: ['127.0.0.1:2'] }} }}\n"
        )
    };
    let cfg = parse(&route("{ weight: 10 }")).expect("valid");
    assert_eq!(
        cfg.routes[0].mirror.map(|m| m.max_in_flight),
        Some(DEFAULT_MIRROR_MAX_IN_FLIGHT)
    );
    let got = messages(&route("{ weight: 10, maxInFlight: 0 }"));
    assert_eq!(got, ["routes[0].mirror.maxInFlight: 0 is not between 1 and 4294967295"]);
}

#[test]
fn reuse_port_is_off_unless_asked_and_survives_a_round_trip() {
    assert!(!parse("routes: []\n").expect("valid").reuse_port);
    let cfg = parse("reusePort: true\n").expect("valid");
    assert!(cfg.reuse_port);
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
    assert_eq!(messages("reusePort: sometimes\n").len(), 1);
}

const VARIANT_BACKENDS: &str = "backends:\n  l: { endpoints: ['127.0.0.1:1'] }\n  d: { endpoints: ['127.0.0.1:2'] }\n  q: { endpoints: ['127.0.0.1:3'] }\n";

#[test]
fn a_variants_route_parses_and_reads_back_equal() {
    let cfg = parse(&format!(
        "routes:\n  - name: summarise\n    variants:\n      - {{ name: large, backend: l, weight: 5000 }}\n      - {{ name: distilled, backend: d, weight: 3000 }}\n      - {{ name: quantised, backend: q, weight: 2000 }}\n    overrides: [ {{ header: x-model, equals: q, side: quantised }} ]\n    sticky: {{ header: x-user-id }}\n    score: {{ header: x-weir-score }}\n{VARIANT_BACKENDS}"
    ))
    .expect("valid");
    let route = &cfg.routes[0];
    let names: Vec<&str> = route.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["large", "distilled", "quantised"]);
    assert_eq!(route.overrides[0].side, Side::Variant(2));
    assert_eq!(route.side_name(Side::Variant(1)), "distilled");
    assert_eq!(route.score.as_ref().map(|h| h.as_str()), Some("x-weir-score"));
    assert_eq!(
        route.stable, "l",
        "the first variant's backend stands for the route's default"
    );
    assert_eq!(parse(&cfg.to_json_pretty()).expect("round trip"), cfg);
}

#[test]
fn bad_variants_are_rejected_with_their_paths() {
    let nine: Vec<String> = (0..9)
        .map(|i| {
            format!(
                "{{ name: v{i}, backend: l, weight: {} }}",
                if i == 0 { 2000 } else { 1000 }
            )
        })
        .collect();
    let got = messages(&format!(
        "routes:\n  - {{ name: many, match: {{ pathPrefix: /many }}, variants: [{}] }}\n  - {{ name: sum, match: {{ pathPrefix: /sum }}, variants: [{{ name: a, backend: l, weight: 5000 }}, {{ name: b, backend: d, weight: 4000 }}] }}\n  - {{ name: dup, match: {{ pathPrefix: /dup }}, variants: [{{ name: a, backend: l, weight: 5000 }}, {{ name: a, backend: d, weight: 5000 }}] }}\n  - {{ name: one, match: {{ pathPrefix: /one }}, variants: [{{ name: a, backend: l, weight: 10000 }}] }}\n  - {{ name: mixed, match: {{ pathPrefix: /mixed }}, stable: {{ backend: l }}, candidate: {{ backend: d }}, candidateWeight: 5, mirror: {{ weight: 10 }}, variants: [{{ name: stable, backend: nowhere, weight: 10001 }}, {{ name: b, backend: d, weight: 0 }}], overrides: [{{ header: x, equals: v, side: c }}] }}\n  - {{ name: score, match: {{ pathPrefix: /score }}, stable: {{ backend: l }}, score: {{ header: 'bad header' }} }}\n{VARIANT_BACKENDS}",
        nine.join(", ")
    ));
    assert_errors_are(
        &got,
        &[
            "routes[0].variants: has 9 variants; a route splits between 2 and 8",
            "routes[1].variants: weights sum to 9000, not 10000",
            "routes[2].variants[1].name: duplicate variant name \"a\"",
            "routes[3].variants: has 1 variants",
            "routes[4].variants[0].name: \"stable\" is a side name the proxy uses itself",
            "routes[4].variants[0].backend: backend \"nowhere\" is not defined",
            "routes[4].variants[0].weight: 10001 is not between 0 and 10000",
            "routes[4].stable: is set with variants",
            "routes[4].candidate: is set with variants",
            "routes[4].candidateWeight: is set with variants",
            "routes[4].mirror: applies to a stable/candidate route",
            "routes[5].score.header: \"bad header\" is not a valid header name",
        ],
    );
}

#[test]
fn an_override_must_name_one_of_the_routes_variants() {
    let got = messages(&format!(
        "routes:\n  - {{ name: r, variants: [{{ name: a, backend: l, weight: 5000 }}, {{ name: b, backend: d, weight: 5000 }}], overrides: [{{ header: x, equals: v, side: candidate }}] }}\n{VARIANT_BACKENDS}"
    ));
    assert_eq!(
        got,
        ["routes[0].overrides[0].side: \"candidate\" is not one of the route's variants (a, b)"]
    );
}

#[test]
fn a_built_config_with_bad_variants_is_refused() {
    let mut cfg = parse(&format!(
        "routes:\n  - {{ name: r, variants: [{{ name: a, backend: l, weight: 5000 }}, {{ name: b, backend: d, weight: 5000 }}] }}\n{VARIANT_BACKENDS}"
    ))
    .expect("valid");
    check_built(&cfg).expect("parsed configs pass");
    cfg.routes[0].variants[1].weight = Weight::new(4000).expect("in range");
    cfg.routes[0].variants[0].backend = "gone".into();
    let errors = check_built(&cfg).expect_err("refused").to_string();
    assert!(
        errors.contains("routes[0].variants[0].backend: backend \"gone\""),
        "{errors}"
    );
    assert!(errors.contains("weights summing to 10000"), "{errors}");
}
