//! Validation of whole specs: every bad field named with its path.

mod basics {
    use super::super::*;
    use crate::rollout::{Analysis, BlueGreen, Canary, Check, Step, Strategy};

    pub(crate) fn spec(steps: &[(f64, &str)]) -> RolloutSpec {
        crate::rollout::example(
            Strategy {
                canary: Some(Canary {
                    steps: steps
                        .iter()
                        .map(|(w, h)| Step {
                            weight: *w,
                            hold: (*h).into(),
                        })
                        .collect(),
                }),
                blue_green: None,
                experiment: None,
            },
            Analysis::default(),
        )
    }

    #[test]
    fn a_good_spec_converts_weights_to_basis_points() {
        let valid = validate(&spec(&[(0.5, "60s"), (5.0, "1m"), (25.0, "30s")])).expect("valid");
        let ValidStrategy::Canary(steps) = valid.strategy else {
            panic!("canary")
        };
        assert_eq!(steps.iter().map(|s| s.weight).collect::<Vec<_>>(), [50, 500, 2500]);
        assert_eq!(steps[1].hold, Duration::from_secs(60));
        assert_eq!(valid.analysis.checks.len(), 2, "default checks");
        assert_eq!(valid.analysis.interval, Duration::from_secs(15));
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = spec(&[(5.0, "soon"), (5.0, "1m"), (0.001, "1m"), (101.0, "1m")]);
        s.candidate.deployment = "v1".into();
        s.analysis.failure_limit = 0;
        s.analysis.false_abort_rate = 0.0;
        s.analysis.checks = vec![
            Check {
                metric: Some(CheckMetric::ErrorRatio),
                max_ms: Some(5.0),
                ..Check::default()
            },
            Check {
                promql: Some("up".into()),
                max: Some(1.0),
                ..Check::default()
            },
            Check::default(),
        ];
        let errors: Vec<String> = validate(&s)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "spec.candidate.deployment: names the stable Deployment",
            "spec.strategy.canary.steps[0].hold: \"soon\" is not a duration",
            "spec.strategy.canary.steps[1].weight: 5 is not above the previous step's weight",
            "spec.strategy.canary.steps[2].weight: 0.001 is finer than 0.01 percent",
            "spec.strategy.canary.steps[3].weight: 101 is not above 0 and at most 100",
            "spec.analysis.failureLimit: must be at least 1",
            "spec.analysis.falseAbortRate: 0 is not above 0",
            "spec.analysis.checks[0].maxMs: does not apply to error-ratio",
            "spec.analysis.checks[1].promql: needs spec.analysis.source.prometheus",
            "spec.analysis.checks[2]: needs exactly one of metric or promql",
        ];
        for prefix in expected {
            assert!(
                errors.iter().any(|e| e.starts_with(prefix)),
                "missing {prefix:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn exactly_one_strategy_is_required() {
        let mut s = spec(&[(5.0, "1m")]);
        s.strategy.blue_green = Some(BlueGreen {
            preview_header: "x-weir-preview".into(),
            preview_value: "candidate".into(),
            hold_before_switch: "1m".into(),
            keep_old_for: "1m".into(),
        });
        assert_eq!(
            validate(&s).expect_err("both").first().map(|e| e.path.as_str()),
            Some("spec.strategy")
        );
        s.strategy.canary = None;
        assert!(matches!(
            validate(&s).expect("blue-green").strategy,
            ValidStrategy::BlueGreen { .. }
        ));
    }
}

mod analysis {
    use super::super::*;
    use super::basics::spec;
    use crate::rollout::{BlueGreen, Strategy};

    #[test]
    fn warmup_defaults_to_one_interval_and_may_be_zero() {
        let valid = validate(&spec(&[(5.0, "1m")])).expect("valid");
        assert_eq!(valid.analysis.warmup, valid.analysis.interval);
        assert_eq!(valid.analysis.progress_deadline, Duration::from_secs(600));
        let mut s = spec(&[(5.0, "1m")]);
        s.analysis.warmup = Some("0s".into());
        assert_eq!(validate(&s).expect("valid").analysis.warmup, Duration::ZERO);
    }

    #[test]
    fn detect_deadline_and_preview_are_checked_with_their_paths() {
        let mut s = spec(&[(5.0, "1m")]);
        s.analysis.detect.error_ratio = 1.0;
        s.analysis.detect.latency_ratio = f64::NAN;
        s.analysis.detect.error_rate_floor = 0.0;
        s.analysis.warmup = Some("soon".into());
        let mut errors: Vec<String> = validate(&s)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut short = spec(&[(5.0, "1m")]);
        short.analysis.warmup = Some("10s".into());
        short.analysis.progress_deadline = "20s".into();
        errors.extend(validate(&short).expect_err("invalid").iter().map(ToString::to_string));
        for prefix in [
            "spec.analysis.warmup: \"soon\" is not a duration",
            "spec.analysis.progressDeadline: 20s leaves no time",
            "spec.analysis.detect.errorRatio: 1 is not above 1",
            "spec.analysis.detect.latencyRatio: NaN is not above 1",
            "spec.analysis.detect.errorRateFloor: 0 is not above 0",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(prefix)),
                "missing {prefix:?} in {errors:#?}"
            );
        }

        let mut s = spec(&[]);
        s.strategy = Strategy {
            canary: None,
            blue_green: Some(BlueGreen {
                preview_header: "X-Weir-Side".into(),
                preview_value: "".into(),
                hold_before_switch: "1m".into(),
                keep_old_for: "1m".into(),
            }),
            experiment: None,
        };
        let errors: Vec<String> = validate(&s)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors[0].starts_with("spec.strategy.blueGreen.previewHeader: is the header the proxy names"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("spec.strategy.blueGreen.previewValue"),
            "{errors:?}"
        );
    }

    #[test]
    fn durations_past_thirty_days_are_refused() {
        let mut s = spec(&[(5.0, "10000000000000000000s")]);
        s.analysis.interval = "100y".into();
        s.analysis.warmup = Some("40days".into());
        let errors: Vec<String> = validate(&s)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.strategy.canary.steps[0].hold")),
            "{errors:?}"
        );
        for path in ["spec.analysis.interval", "spec.analysis.warmup"] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(path) && e.ends_with("is longer than 30 days")),
                "{path} in {errors:?}"
            );
        }
    }

    #[test]
    fn the_default_preview_header_is_its_own() {
        let bg: BlueGreen = serde_json::from_str("{}").expect("defaults");
        assert_eq!(
            (bg.preview_header.as_str(), bg.preview_value.as_str()),
            ("x-weir-preview", "candidate")
        );
    }

    #[test]
    fn full_weight_steps_are_known() {
        assert!(
            !validate(&spec(&[(5.0, "1m"), (50.0, "1m")]))
                .expect("valid")
                .analysis
                .full_weight_step
        );
        assert!(
            validate(&spec(&[(5.0, "1m"), (100.0, "1m")]))
                .expect("valid")
                .analysis
                .full_weight_step
        );
    }
}

mod sides_and_route {
    use super::super::*;
    use crate::rollout::{Analysis, Canary, KeySpec, Step, Strategy};

    fn spec() -> RolloutSpec {
        crate::rollout::example(
            Strategy {
                canary: Some(Canary {
                    steps: vec![Step {
                        weight: 50.0,
                        hold: "1s".into(),
                    }],
                }),
                blue_green: None,
                experiment: None,
            },
            Analysis::default(),
        )
    }

    fn paths(spec: &RolloutSpec) -> Vec<String> {
        validate(spec)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn the_valid_spec_carries_the_route_the_proxy_will_read() {
        let valid = validate(&spec()).expect("valid");
        assert_eq!(valid.route, "r");
        assert_eq!(valid.gateway, "weir");
        assert_eq!(valid.route_config.routes[0].stable, "r.stable");
        assert_eq!(valid.route_config.backends.len(), 2);
    }

    #[test]
    fn each_side_names_its_traffic_exactly_one_way() {
        let mut both = spec();
        both.stable.service = Some("m-v1".into());
        both.stable.port = Some(8000);
        assert!(paths(&both).contains(&"spec.stable".to_owned()));
        let mut neither = spec();
        neither.candidate.endpoints.clear();
        assert!(paths(&neither).contains(&"spec.candidate".to_owned()));
        let mut no_port = spec();
        no_port.candidate.endpoints.clear();
        no_port.candidate.service = Some("m-v2".into());
        assert!(paths(&no_port).contains(&"spec.candidate.port".to_owned()));
    }

    #[test]
    fn a_bad_route_field_or_gateway_is_named_in_the_rollout() {
        let mut bad = spec();
        bad.gateway = "not a label!".into();
        bad.route.sticky = Some(KeySpec {
            header: Some("bad header".into()),
            cookie: None,
        });
        bad.route.name = None;
        let found = paths(&bad);
        for expected in ["spec.gateway", "spec.route.name"] {
            assert!(found.iter().any(|p| p == expected), "{expected} not in {found:?}");
        }
        assert!(found.iter().any(|p| p.starts_with("spec.route.sticky")), "{found:?}");
    }

    #[test]
    fn max_surge_needs_one_pod_and_a_canary_and_a_service_side_is_the_proxys_service_backend() {
        let mut spec = spec();
        spec.candidate.endpoints.clear();
        spec.candidate.service = Some("m-v2".into());
        spec.candidate.port = Some(8000);
        spec.scaling.max_surge = Some(0);
        let text = describe(&validate(&spec).expect_err("no room for a candidate pod"));
        assert!(text.contains("spec.scaling.maxSurge: must be at least 1"), "{text}");
        spec.scaling.max_surge = Some(1);
        let valid = validate(&spec).expect("a surge of one pod");
        assert_eq!(valid.max_surge, Some(1));
        let service = valid.route_config.backends["r.candidate"]
            .service
            .clone()
            .expect("a service");
        assert_eq!((service.name.as_str(), service.port), ("m-v2", 8000));
        spec.strategy.canary = None;
        spec.strategy.blue_green = Some(serde_json::from_str("{}").expect("every field has a default"));
        let errors = validate(&spec).expect_err("blue-green needs the full candidate beside stable");
        let text = describe(&errors);
        assert!(
            text.contains("spec.scaling.maxSurge: cannot be used with blueGreen"),
            "{text}"
        );
        assert_eq!(errors.len(), 1, "{text}");
    }
}

mod experiments {
    use super::super::*;
    use crate::rollout::{
        Analysis, Experiment, ExperimentDecide, KeySpec, Metric, PrometheusSource, Strategy, VariantSpec,
    };

    fn variant(name: &str, deployment: &str, weight: f64) -> VariantSpec {
        VariantSpec {
            name: name.into(),
            weight,
            side: SideSpec {
                deployment: deployment.into(),
                endpoints: vec!["127.0.0.1:9100".into()],
                ..SideSpec::default()
            },
        }
    }

    fn spec(variants: Vec<VariantSpec>) -> RolloutSpec {
        let mut spec = crate::rollout::example(
            Strategy {
                experiment: Some(Experiment {
                    variants,
                    primary: Metric::Score,
                    guardrails: vec![Metric::ErrorRatio, Metric::P99],
                    duration: "1h".into(),
                    min_users_per_variant: 100,
                    confidence: 0.95,
                    decide: ExperimentDecide::Manual,
                    stop_when_conclusive: false,
                    min_effect: None,
                    score_header: "x-weir-score".into(),
                }),
                ..Strategy::default()
            },
            Analysis::default(),
        );
        spec.candidate = SideSpec::default();
        spec.route.sticky = Some(KeySpec {
            header: Some("x-user-id".into()),
            cookie: None,
        });
        spec
    }

    #[test]
    fn a_good_experiment_gives_control_the_weight_the_variants_leave() {
        let valid = validate(&spec(vec![
            variant("fast", "m-fast", 25.0),
            variant("better", "m-better", 25.5),
        ]))
        .expect("valid");
        let ValidStrategy::Experiment(e) = valid.strategy else {
            panic!("an experiment")
        };
        assert_eq!(e.weights, [4950, 2500, 2550]);
        assert_eq!(e.arm_names(), ["control", "fast", "better"]);
        let route = &valid.route_config.routes[0];
        let arms: Vec<(&str, u16)> = route
            .variants
            .iter()
            .map(|v| (v.name.as_str(), v.weight.basis_points()))
            .collect();
        assert_eq!(arms, [("control", 4950), ("fast", 2500), ("better", 2550)]);
        assert_eq!(route.score.as_ref().map(|h| h.as_str()), Some("x-weir-score"));
    }

    #[test]
    fn every_bad_experiment_field_is_named() {
        let mut s = spec(vec![
            variant("control", "m-a", 30.0),
            variant("b", "v1", 40.0),
            variant("b", "", 40.001),
        ]);
        s.candidate.deployment = "v2".into();
        s.route.sticky = None;
        s.route.overrides = vec![crate::rollout::OverrideSpec {
            header: Some("x-arm".into()),
            cookie: None,
            equals: "b".into(),
            side: "b".into(),
        }];
        s.analysis.source.prometheus = Some(PrometheusSource {
            url: "http://127.0.0.1:9090".into(),
        });
        let experiment = s.strategy.experiment.as_mut().expect("experiment");
        experiment.duration = "soon".into();
        experiment.confidence = 1.5;
        let errors = validate(&s).expect_err("invalid");
        let text = describe(&errors);
        for expected in [
            "spec.candidate: is not used by an experiment",
            "spec.strategy.experiment.variants[0].name: \"control\" names an arm weir keeps",
            "spec.strategy.experiment.variants[1].deployment: \"v1\" is stable's or another variant's",
            "spec.strategy.experiment.variants[2].name: duplicate variant name \"b\"",
            "spec.strategy.experiment.variants[2].deployment: is empty",
            "spec.strategy.experiment.variants[2].weight: 40.001 is finer than 0.01 percent",
            "spec.strategy.experiment.variants: weights sum to",
            "spec.strategy.experiment.duration: \"soon\" is not a duration",
            "spec.strategy.experiment.confidence: 1.5 is not above 0.5 and below 1",
            "spec.route.sticky: is needed by an experiment",
            "spec.route.overrides: cannot be used by an experiment",
            "spec.analysis.source.prometheus: cannot feed an experiment yet",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn an_experiment_with_a_canary_too_is_refused() {
        let mut s = spec(vec![variant("fast", "m-fast", 25.0)]);
        s.strategy.canary = super::basics::spec(&[(5.0, "1m")]).strategy.canary;
        let text = describe(&validate(&s).expect_err("invalid"));
        assert!(
            text.contains("needs exactly one of canary, blueGreen or experiment"),
            "{text}"
        );
    }
}
