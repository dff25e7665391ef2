use proptest::prelude::*;

use super::*;
use crate::config::parse;

const FILE: &str = r#"
routes:
  - name: gateway-default
    stable: { backend: default-v1 }
backends:
  default-v1: { endpoints: ["127.0.0.1:9001"] }
"#;

/// A ConfigMap's text: one route `route` on `host` over backends `<backend>.stable` and
/// `<backend>.candidate`, as the controller writes it.
fn text(route: &str, host: &str, backend: &str) -> String {
    format!(
        "routes:\n  - name: {route}\n    match: {{ host: {host} }}\n    stable: {{ backend: {backend}.stable }}\n    \
         candidate: {{ backend: {backend}.candidate, revision: 5c1a9e }}\n    candidateWeight: 500\n\
         backends:\n  {backend}.stable: {{ endpoints: [\"127.0.0.1:9002\"] }}\n  \
         {backend}.candidate: {{ endpoints: [\"127.0.0.1:9003\"] }}\n"
    )
}

fn id(created: i64, name: &str) -> LayerId {
    LayerId {
        created,
        namespace: "models".into(),
        name: name.into(),
    }
}

fn layer(created: i64, name: &str, text: &str) -> Layer {
    Layer {
        id: id(created, name),
        current: parse_partial(text),
        previous: None,
    }
}

fn file() -> ProxyConfig {
    parse(FILE).expect("the file parses")
}

fn route_names(config: &ProxyConfig) -> Vec<&str> {
    config.routes.iter().map(|r| r.name.as_str()).collect()
}

fn messages(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Accepted => Vec::new(),
        Outcome::KeptPrevious(e) | Outcome::Rejected(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_partial_config_holds_routes_and_backends() {
    let partial = parse_partial(&text("sentiment", "sentiment.models.svc", "sentiment")).expect("valid");
    assert_eq!(partial.routes.len(), 1);
    assert_eq!(partial.routes[0].candidate_revision.as_deref(), Some("5c1a9e"));
    assert_eq!(
        partial.backends.keys().collect::<Vec<_>>(),
        ["sentiment.candidate", "sentiment.stable"]
    );
}

#[test]
fn listener_fields_and_bad_fields_are_all_named() {
    let bad = "listen: 0.0.0.0:80\ntls: { cert: a, key: b }\nsideHeader: x-side\nlimits: { maxConnections: 9 }\nreusePort: true\ncolour: blue\n\
               routes:\n  - name: r\n    stable: { backend: elsewhere }\n    candidateWeight: 20000\n";
    let errors: Vec<String> = parse_partial(bad)
        .expect_err("rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    for expected in [
        "listen: belongs to the listener",
        "tls: belongs to the listener",
        "sideHeader: belongs to the listener",
        "limits: belongs to the listener",
        "reusePort: belongs to the listener",
        "colour: unknown field",
        "routes[0].stable.backend: backend \"elsewhere\" is not defined",
        "routes[0].candidateWeight: 20000 is over 10000",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert!(parse_partial("").is_err(), "an empty ConfigMap is refused");
}

#[test]
fn layers_that_share_nothing_all_serve_beside_the_file() {
    let layers = [
        layer(20, "b", &text("b", "b.models.svc", "b")),
        layer(10, "a", &text("a", "a.models.svc", "a")),
    ];
    let merged = merge(&file(), &layers);
    assert_eq!(route_names(&merged.config), ["gateway-default", "a", "b"]);
    assert_eq!(merged.config.backends.len(), 5);
    assert_eq!(
        merged.outcomes,
        [(id(10, "a"), Outcome::Accepted), (id(20, "b"), Outcome::Accepted)]
    );
}

#[test]
fn on_a_clash_the_older_layer_wins_whatever_the_order_seen() {
    // Same route name, different hosts and backends.
    let older = layer(10, "z-older", &text("sentiment", "a.models.svc", "a"));
    let newer = layer(20, "a-newer", &text("sentiment", "b.models.svc", "b"));
    for layers in [[older.clone(), newer.clone()], [newer.clone(), older.clone()]] {
        let merged = merge(&file(), &layers);
        assert_eq!(route_names(&merged.config), ["gateway-default", "sentiment"]);
        assert!(merged.config.backends.contains_key("a.stable"));
        assert!(
            !merged.config.backends.contains_key("b.stable"),
            "nothing of the newer one serves"
        );
        assert_eq!(merged.outcomes[0], (id(10, "z-older"), Outcome::Accepted));
        assert_eq!(
            messages(&merged.outcomes[1].1),
            ["routes[0].name: route \"sentiment\" is already defined by ConfigMap models/z-older, which is older"]
        );
    }
    // Same creation time: namespace/name decides.
    let twin = layer(10, "y-twin", &text("sentiment", "c.models.svc", "c"));
    let merged = merge(&file(), &[older, twin]);
    assert_eq!(merged.outcomes[0], (id(10, "y-twin"), Outcome::Accepted));
}

#[test]
fn a_layer_clashing_with_the_file_on_a_backend_or_a_match_is_rejected_with_each_path() {
    let clash = "routes:\n  - name: other\n    stable: { backend: default-v1 }\n\
                 backends:\n  default-v1: { endpoints: [\"127.0.0.1:9009\"] }\n";
    let merged = merge(&file(), &[layer(10, "greedy", clash)]);
    assert_eq!(route_names(&merged.config), ["gateway-default"]);
    assert_eq!(
        merged.config.backends["default-v1"].endpoints[0].as_str(),
        "127.0.0.1:9001",
        "the file's backend is untouched"
    );
    assert_eq!(
        messages(&merged.outcomes[0].1),
        [
            "routes[0].match: this host and path prefix are already routed by the --config file",
            "backends.default-v1: backend \"default-v1\" is already defined by the --config file",
        ]
    );
    assert!(matches!(merged.outcomes[0].1, Outcome::Rejected(_)));
}

#[test]
fn a_rejected_layer_keeps_its_previous_version_serving() {
    let good = text("sentiment", "sentiment.models.svc", "sentiment");
    let first = merge(&file(), &[layer(10, "sentiment", &good)]);
    let previous = first.outcomes[0].1.serving(&layer(10, "sentiment", &good));
    assert!(previous.is_some());

    // A bad edit: the weight over 10000.
    let bad = good.replace("candidateWeight: 500", "candidateWeight: 10001");
    let edited = Layer {
        previous: previous.clone(),
        ..layer(10, "sentiment", &bad)
    };
    let merged = merge(&file(), std::slice::from_ref(&edited));
    assert_eq!(route_names(&merged.config), ["gateway-default", "sentiment"]);
    assert_eq!(merged.config.routes[1].candidate_weight.basis_points(), 500);
    assert_eq!(
        messages(&merged.outcomes[0].1),
        ["routes[0].candidateWeight: 10001 is over 10000"]
    );
    assert_eq!(
        merged.outcomes[0].1.serving(&edited),
        previous,
        "the old version stays kept"
    );

    // A valid edit that now clashes with an older layer keeps the previous version too.
    let renamed = text("taken", "sentiment.models.svc", "sentiment");
    let owner = layer(5, "owner", &text("taken", "owner.models.svc", "owner"));
    let clashing = Layer {
        previous: previous.clone(),
        ..layer(10, "sentiment", &renamed)
    };
    let merged = merge(&file(), &[owner, clashing]);
    assert_eq!(route_names(&merged.config), ["gateway-default", "taken", "sentiment"]);
    assert!(matches!(merged.outcomes[1].1, Outcome::KeptPrevious(_)));

    // Without a previous version, nothing of it serves.
    let merged = merge(&file(), &[layer(10, "sentiment", &bad)]);
    assert_eq!(route_names(&merged.config), ["gateway-default"]);
    assert!(matches!(merged.outcomes[0].1, Outcome::Rejected(_)));
}

/// A layer drawn from small pools of names and hosts, so that clashes are common.
fn arbitrary_layer() -> impl Strategy<Value = Layer> {
    let version = (0..4usize, 0..4usize, 0..4usize, any::<bool>()).prop_map(|(route, host, backend, valid)| {
        let text = text(&format!("r{route}"), &format!("h{host}.svc"), &format!("b{backend}"));
        if valid {
            text
        } else {
            text.replace("candidateWeight: 500", "candidateWeight: -1")
        }
    });
    (0..3i64, 0..1000u32, version.clone(), proptest::option::of(version)).prop_map(
        |(created, name, current, previous)| Layer {
            id: id(created, &format!("cm{name}")),
            current: parse_partial(&current),
            previous: previous.and_then(|p| parse_partial(&p).ok()),
        },
    )
}

proptest! {
    #[test]
    fn the_merge_is_valid_and_the_same_in_any_order(
        layers in proptest::collection::vec(arbitrary_layer(), 0..6),
        rotate in 0..6usize,
    ) {
        let mut layers = layers;
        layers.sort_by(|a, b| a.id.cmp(&b.id));
        layers.dedup_by(|a, b| a.id == b.id);
        let merged = merge(&file(), &layers);

        // Every replica computes the same table from the same ConfigMaps.
        let mut seen_otherwise = layers.clone();
        seen_otherwise.reverse();
        let len = seen_otherwise.len().max(1);
        seen_otherwise.rotate_left(rotate % len);
        let again = merge(&file(), &seen_otherwise);
        prop_assert_eq!(&again.config, &merged.config);
        prop_assert_eq!(&again.outcomes, &merged.outcomes);

        // The merged config is a valid whole config.
        prop_assert_eq!(parse(&merged.config.to_json_pretty()), Ok(merged.config.clone()));

        // What serves is exactly what the outcomes say.
        let mut expected = route_names(&file()).into_iter().map(str::to_owned).collect::<Vec<_>>();
        for (id, outcome) in &merged.outcomes {
            let layer = layers.iter().find(|l| &l.id == id).expect("an outcome per layer");
            if let Some(serving) = outcome.serving(layer) {
                expected.extend(serving.routes.iter().map(|r| r.name.clone()));
            }
            if matches!(outcome, Outcome::Accepted) {
                prop_assert!(layer.current.is_ok());
            }
        }
        prop_assert_eq!(route_names(&merged.config), expected);
    }
}

#[test]
fn a_partial_config_written_as_yaml_reads_back_equal() {
    let full = "routes:\n  - name: r\n    match: { host: '*.models.svc', pathPrefix: /v1 }\n    stable: { backend: r.stable }\n    \
                candidate: { backend: r.candidate, revision: 5c1a9e }\n    candidateWeight: 2500\n    \
                overrides: [ { cookie: beta, equals: '1', side: candidate } ]\n    sticky: { header: x-user-id }\n    \
                failFast: { errorRatio: 0.5, window: 5s, minRequests: 10 }\n    mirror: { weight: 100 }\n    timeout: 3s\n\
                backends:\n  r.stable: { endpoints: ['127.0.0.1:9002'], protocol: h2c }\n  r.candidate: { endpoints: ['127.0.0.1:9003'] }\n";
    let partial = parse_partial(full).expect("valid");
    let written = partial.to_yaml();
    assert!(!written.contains("listen"), "only routes and backends: {written}");
    assert_eq!(parse_partial(&written).expect("reads back"), partial, "{written}");
}

#[test]
fn a_service_backend_is_in_its_config_maps_namespace_and_only_in_a_config_map() {
    let text = "routes:\n  - name: r\n    match: { host: r.test }\n    stable: { backend: r.stable }\n\
                backends:\n  r.stable: { service: m-v1, port: 8000 }\n";
    let partial = parse_partial(text).expect("valid");
    let merged = merge(&parse(FILE).expect("valid"), &[layer(1, "cm", text)]);
    let service = merged.config.backends["r.stable"].service.clone().expect("a service");
    assert_eq!(service.to_string(), "models/m-v1:8000");
    assert_eq!(parse_partial(&partial.to_yaml()).expect("reads back"), partial);
    let errors = parse(text).expect_err("a whole config has no namespace");
    assert_eq!(errors.0[0].path, "backends.r.stable.service", "{errors}");
    for (bad, path) in [
        (
            "{ service: m-v1, port: 8000, endpoints: ['127.0.0.1:1'] }",
            "backends.r.stable",
        ),
        ("{ service: m-v1 }", "backends.r.stable.port"),
        ("{ port: 8000, endpoints: ['127.0.0.1:1'] }", "backends.r.stable.port"),
        ("{ service: M_V1, port: 8000 }", "backends.r.stable.service"),
        ("{ service: m-v1, port: 70000 }", "backends.r.stable.port"),
    ] {
        let text = format!("routes:\n  - name: r\n    stable: {{ backend: r.stable }}\nbackends:\n  r.stable: {bad}\n");
        let errors = parse_partial(&text).expect_err(bad);
        assert!(errors.0.iter().any(|e| e.path == path), "{bad}: {errors}");
    }
}
