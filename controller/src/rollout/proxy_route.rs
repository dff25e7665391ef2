//! The route a Rollout owns, as the proxy reads it: a partial config with the route and its two
//! backends, `<route>.stable` and `<route>.candidate`, built from the spec and checked by the
//! proxy's own validation, so a spec the proxy would refuse is refused here, field by field,
//! before anything is written. Pure.

use serde_json::{Map, Value, json};
use weir_proxy::config::{ConfigError, ConfigErrors, PartialConfig, parse_partial};

use super::{CONTROL, Experiment, RolloutSpec, SideSpec};

/// The proxy's name for one side's backend.
pub fn backend_name(route: &str, side: &str) -> String {
    format!("{route}.{side}")
}

/// The route named `route` with both backends, at weight 0 with the spec's overrides: what
/// traffic intents are applied to. Errors carry paths from the spec (`spec.route.sticky`,
/// `spec.candidate.endpoints[0]`).
pub fn template(spec: &RolloutSpec, route: &str) -> Result<PartialConfig, ConfigErrors> {
    let document = document(spec, route);
    parse_partial(&document.to_string()).map_err(|ConfigErrors(errors)| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| ConfigError {
                    path: spec_path(&e.path, route, spec),
                    message: e.message,
                })
                .collect(),
        )
    })
}

/// The partial config document: the route as written, plus the two sides' backends.
fn document(spec: &RolloutSpec, route: &str) -> Value {
    let mut written = match serde_json::to_value(&spec.route) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    written.insert("name".into(), json!(route));
    if let Some(experiment) = &spec.strategy.experiment {
        return experiment_document(spec, experiment, route, written);
    }
    written.insert("stable".into(), json!({ "backend": backend_name(route, "stable") }));
    written.insert(
        "candidate".into(),
        json!({ "backend": backend_name(route, "candidate") }),
    );
    written.insert("candidateWeight".into(), json!(0));
    json!({
        "routes": [Value::Object(written)],
        "backends": {
            backend_name(route, "stable"): backend(&spec.stable),
            backend_name(route, "candidate"): backend(&spec.candidate),
        },
    })
}

/// An experiment's route: control (stable) and the variants as an N-way route at their
/// weights, control taking what the variants leave, and the score header.
fn experiment_document(
    spec: &RolloutSpec,
    experiment: &Experiment,
    route: &str,
    mut written: Map<String, Value>,
) -> Value {
    let weights = arm_weights(experiment);
    let mut variants = vec![json!({ "name": CONTROL, "backend": backend_name(route, CONTROL), "weight": weights[0] })];
    let mut backends = Map::new();
    backends.insert(backend_name(route, CONTROL), backend(&spec.stable));
    for (variant, weight) in experiment.variants.iter().zip(&weights[1..]) {
        variants.push(json!({ "name": variant.name, "backend": backend_name(route, &variant.name), "weight": weight }));
        backends.insert(backend_name(route, &variant.name), backend(&variant.side));
    }
    written.insert("variants".into(), Value::Array(variants));
    written.insert("score".into(), json!({ "header": experiment.score_header }));
    json!({ "routes": [Value::Object(written)], "backends": backends })
}

/// Each arm's weight in basis points, control first: the variants' percents, and control the
/// rest (0 when they take it all, which validation refuses).
pub fn arm_weights(experiment: &Experiment) -> Vec<u16> {
    let variants: Vec<u16> = experiment
        .variants
        .iter()
        .map(|v| (v.weight * 100.0).round().clamp(0.0, 10_000.0) as u16)
        .collect();
    let taken: u32 = variants.iter().map(|w| u32::from(*w)).sum();
    let control = 10_000u32.saturating_sub(taken) as u16;
    std::iter::once(control).chain(variants).collect()
}

/// One side as a proxy backend: its endpoints, or its Service and port, with protocol and TLS.
fn backend(side: &SideSpec) -> Value {
    let mut fields = Map::new();
    if !side.endpoints.is_empty() || side.service.is_none() {
        fields.insert("endpoints".into(), json!(side.endpoints));
    }
    if let Some(service) = &side.service {
        fields.insert("service".into(), json!(service));
    }
    if let Some(port) = side.port {
        fields.insert("port".into(), json!(port));
    }
    if let Some(protocol) = &side.protocol {
        fields.insert("protocol".into(), json!(protocol));
    }
    if let Some(tls) = &side.tls {
        fields.insert("tls".into(), json!(tls));
    }
    Value::Object(fields)
}

/// A path in the partial config document as a path in the Rollout.
fn spec_path(path: &str, route: &str, spec: &RolloutSpec) -> String {
    if let Some(rest) = path.strip_prefix("routes[0]") {
        return format!("spec.route{rest}");
    }
    for side in ["stable", "candidate"] {
        let prefix = format!("backends.{}", backend_name(route, side));
        if let Some(rest) = path.strip_prefix(&prefix) {
            return format!("spec.{side}{rest}");
        }
    }
    if let Some(rest) = path.strip_prefix(&format!("backends.{}", backend_name(route, CONTROL))) {
        return format!("spec.stable{rest}");
    }
    let variants = spec
        .strategy
        .experiment
        .iter()
        .flat_map(|e| e.variants.iter().enumerate());
    for (i, variant) in variants {
        if let Some(rest) = path.strip_prefix(&format!("backends.{}", backend_name(route, &variant.name)))
            && (rest.is_empty() || rest.starts_with(['.', '[']))
        {
            return format!("spec.strategy.experiment.variants[{i}]{rest}");
        }
    }
    if path.is_empty() {
        "spec".to_owned()
    } else {
        format!("spec.{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{FailFastSpec, KeySpec, OverrideSpec, RouteMatch, RouteSpec};

    fn side(deployment: &str, endpoint: &str) -> SideSpec {
        SideSpec {
            deployment: deployment.into(),
            endpoints: vec![endpoint.into()],
            ..SideSpec::default()
        }
    }

    fn spec(route: RouteSpec) -> RolloutSpec {
        RolloutSpec {
            gateway: "weir".into(),
            route,
            stable: side("m-v1", "127.0.0.1:9001"),
            candidate: side("m-v2", "127.0.0.1:9002"),
            strategy: Default::default(),
            analysis: Default::default(),
            scaling: Default::default(),
        }
    }

    #[test]
    fn the_route_and_both_backends_come_from_the_spec() {
        let route = RouteSpec {
            matches: RouteMatch {
                host: Some("m.models.svc".into()),
                path_prefix: None,
            },
            sticky: Some(KeySpec {
                header: Some("x-user-id".into()),
                cookie: None,
            }),
            overrides: vec![OverrideSpec {
                header: Some("x-beta".into()),
                cookie: None,
                equals: "1".into(),
                side: "candidate".into(),
            }],
            fail_fast: Some(FailFastSpec {
                error_ratio: 0.5,
                window: Some("5s".into()),
                min_requests: None,
            }),
            timeout: Some("3s".into()),
            ..RouteSpec::default()
        };
        let partial = template(&spec(route), "m").expect("valid");
        let r = &partial.routes[0];
        assert_eq!((r.name.as_str(), r.stable.as_str()), ("m", "m.stable"));
        assert_eq!(r.candidate.as_deref(), Some("m.candidate"));
        assert_eq!(r.candidate_weight.basis_points(), 0);
        assert_eq!(r.overrides.len(), 1);
        assert_eq!(r.timeout, std::time::Duration::from_secs(3));
        assert_eq!(r.fail_fast.expect("fail-fast").min_requests, 20, "the proxy's default");
        assert_eq!(partial.backends["m.candidate"].endpoints[0].as_str(), "127.0.0.1:9002");
    }

    #[test]
    fn every_bad_field_is_named_by_its_path_in_the_rollout() {
        let mut bad = spec(RouteSpec {
            sticky: Some(KeySpec {
                header: Some("not a header".into()),
                cookie: None,
            }),
            timeout: Some("soon".into()),
            ..RouteSpec::default()
        });
        bad.candidate.endpoints = vec!["nowhere".into()];
        bad.stable.endpoints.clear();
        let errors = template(&bad, "m").expect_err("invalid").0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "spec.route.sticky",
            "spec.route.timeout",
            "spec.candidate.endpoints[0]",
            "spec.stable.endpoints",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(expected)),
                "{expected} missing from {errors:?}"
            );
        }
    }
}
