//! A traffic intent applied to the route a Rollout owns: the partial config the proxy reads
//! (from the Rollout's ConfigMap in a cluster, from the in-process handle in the demo). Pure.

use http::HeaderName;
use weir_proxy::Weight;
use weir_proxy::config::PartialConfig;
use weir_proxy::split::{KeySource, Override, Side};

use crate::decide::TrafficIntent;
use crate::ports::TrafficError;

/// `template` (the route as the spec writes it, from [`crate::rollout::proxy_route`]) with
/// `intent` applied to its route `route`: the weight, the preview rule first, the spec's rules
/// to the candidate only while `intent` keeps them, and the candidate's revision.
pub fn route_layer(
    template: &PartialConfig,
    route: &str,
    intent: &TrafficIntent,
) -> Result<PartialConfig, TrafficError> {
    let mut next = template.clone();
    let r = next
        .routes
        .iter_mut()
        .find(|r| r.name == route)
        .ok_or_else(|| TrafficError::NoRoute(route.to_owned()))?;
    r.candidate_weight = Weight::new(intent.weight).ok_or_else(|| TrafficError::Invalid {
        route: route.to_owned(),
        message: format!("weight {} is over 10000", intent.weight),
    })?;
    if let Some(arms) = &intent.arms {
        // An experiment's arms are the split's alone (validation refuses overrides on one).
        r.overrides.clear();
        if arms.len() != r.variants.len() || arms.iter().map(|w| u32::from(*w)).sum::<u32>() != 10_000 {
            return Err(TrafficError::Invalid {
                route: route.to_owned(),
                message: format!(
                    "{} arm weights summing to {} for a route of {} variants",
                    arms.len(),
                    arms.iter().map(|w| u32::from(*w)).sum::<u32>(),
                    r.variants.len()
                ),
            });
        }
        for (variant, weight) in r.variants.iter_mut().zip(arms) {
            variant.weight = Weight::new(*weight).ok_or_else(|| TrafficError::Invalid {
                route: route.to_owned(),
                message: format!("weight {weight} is over 10000"),
            })?;
        }
    }
    if !intent.candidate_overrides {
        // Nobody reaches a version that is not under rollout by a header: on an experiment's
        // route, only control (arm 0) stays reachable.
        r.overrides
            .retain(|o| o.side != Side::Candidate && !matches!(o.side, Side::Variant(i) if i > 0));
    }
    if let Some(preview) = &intent.preview {
        let header = HeaderName::from_bytes(preview.header.as_bytes()).map_err(|_| TrafficError::Invalid {
            route: route.to_owned(),
            message: format!("{:?} is not a header name", preview.header),
        })?;
        r.overrides.insert(
            0,
            Override {
                key: KeySource::Header(header),
                equals: preview.value.clone(),
                side: Side::Candidate,
            },
        );
    }
    r.candidate_revision = intent.candidate_revision.clone();
    // Users are counted only by a sticky key; the proxy refuses an epoch without one.
    r.users_epoch = intent.users_epoch.clone().filter(|_| r.sticky.is_some());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Preview;

    fn template() -> PartialConfig {
        weir_proxy::config::parse_partial(
            "routes:\n  - name: m\n    stable: { backend: a }\n    candidate: { backend: b }\n    overrides:\n      - { header: x-weir-override, equals: candidate, side: candidate }\n      - { header: x-weir-override, equals: stable, side: stable }\nbackends: { a: { endpoints: ['127.0.0.1:1'] }, b: { endpoints: ['127.0.0.1:2'] } }\n",
        )
        .expect("valid")
    }

    #[test]
    fn an_intent_without_the_candidate_closes_every_override_to_it() {
        let closed = route_layer(&template(), "m", &TrafficIntent::none(Some("r1".into()))).expect("applies");
        let route = &closed.routes[0];
        assert_eq!(route.overrides.len(), 1);
        assert_eq!(route.overrides[0].side, Side::Stable);
        assert_eq!(route.candidate_revision.as_deref(), Some("r1"));
        let preview = TrafficIntent {
            weight: 0,
            preview: Some(Preview {
                header: "x-weir-preview".into(),
                value: "yes".into(),
            }),
            candidate_overrides: true,
            candidate_revision: Some("r1".into()),
            arms: None,
            users_epoch: None,
        };
        let open = route_layer(&template(), "m", &preview).expect("applies");
        let route = &open.routes[0];
        assert_eq!(
            route.overrides.len(),
            3,
            "the preview rule first, then what was written"
        );
        assert_eq!(route.overrides[0].equals, "yes");
        assert_eq!(
            route.overrides[0].key,
            KeySource::Header(HeaderName::from_static("x-weir-preview"))
        );
    }

    #[test]
    fn a_weight_is_written_and_a_missing_route_is_an_error() {
        let intent = TrafficIntent {
            weight: 2500,
            preview: None,
            candidate_overrides: true,
            candidate_revision: None,
            arms: None,
            users_epoch: None,
        };
        let layer = route_layer(&template(), "m", &intent).expect("applies");
        assert_eq!(layer.routes[0].candidate_weight.basis_points(), 2500);
        assert!(matches!(
            route_layer(&template(), "other", &intent),
            Err(TrafficError::NoRoute(_))
        ));
    }

    #[test]
    fn an_experiment_sets_each_arms_weight_and_control_only_closes_the_variants() {
        let template = weir_proxy::config::parse_partial(
            "routes:\n  - name: e\n    variants: [{ name: control, backend: a, weight: 5000 }, { name: v, backend: b, weight: 5000 }]\n    overrides:\n      - { header: x-arm, equals: v, side: v }\n      - { header: x-arm, equals: control, side: control }\nbackends: { a: { endpoints: ['127.0.0.1:1'] }, b: { endpoints: ['127.0.0.1:2'] } }\n",
        )
        .expect("valid");
        let split = route_layer(&template, "e", &TrafficIntent::experiment(vec![7000, 3000])).expect("applies");
        let weights: Vec<u16> = split.routes[0]
            .variants
            .iter()
            .map(|v| v.weight.basis_points())
            .collect();
        assert_eq!(weights, [7000, 3000]);
        assert!(split.routes[0].overrides.is_empty(), "no caller chooses an arm");
        let closed = route_layer(&template, "e", &TrafficIntent::control_only(2)).expect("applies");
        let weights: Vec<u16> = closed.routes[0]
            .variants
            .iter()
            .map(|v| v.weight.basis_points())
            .collect();
        assert_eq!(weights, [10_000, 0]);
        assert!(closed.routes[0].overrides.is_empty());
        let wrong = route_layer(&template, "e", &TrafficIntent::experiment(vec![10_000]));
        assert!(matches!(wrong, Err(TrafficError::Invalid { .. })), "{wrong:?}");
    }

    /// The proxy counts users by the sticky key alone, and refuses an epoch without one.
    #[test]
    fn the_users_epoch_is_written_on_a_sticky_route_only() {
        let text = "routes:\n  - name: e\n    variants: [{ name: control, backend: a, weight: 5000 }, { name: v, backend: b, weight: 5000 }]\n    sticky: { header: x-user }\nbackends: { a: { endpoints: ['127.0.0.1:1'] }, b: { endpoints: ['127.0.0.1:2'] } }\n";
        let intent = TrafficIntent::experiment(vec![5000, 5000])
            .counting_users_since(Some("2026-12-03T02:33:53.123456Z".into()));
        let sticky = weir_proxy::config::parse_partial(text).expect("valid");
        let layer = route_layer(&sticky, "e", &intent).expect("applies");
        assert_eq!(
            layer.routes[0].users_epoch.as_deref(),
            Some("2026-12-03T02:33:53.123456Z")
        );
        let written = weir_proxy::config::parse_partial(&layer.to_yaml()).expect("the proxy takes it");
        assert_eq!(written.routes[0].users_epoch, layer.routes[0].users_epoch);

        let plain =
            weir_proxy::config::parse_partial(&text.replace("    sticky: { header: x-user }\n", "")).expect("valid");
        let layer = route_layer(&plain, "e", &intent).expect("applies");
        assert_eq!(layer.routes[0].users_epoch, None);
        weir_proxy::config::parse_partial(&layer.to_yaml()).expect("the proxy takes it");
    }
}
