//! Config text, YAML or JSON, through the proxy's two parsers: the whole config (`--config`) and
//! the partial one (route ConfigMaps).
//!
//! Invariants, beyond not panicking:
//! - a rejected text has at least one error, and every error says what is wrong;
//! - an accepted config passes `check_built` (what compiling a table relies on) and reads back
//!   equal from its written form (`to_json_pretty` for a whole config, `to_yaml` for a partial
//!   one), and that written form is a fixed point;
//! - the two parsers agree: a whole config that sets no listener field is an accepted partial
//!   config with the same routes and backends, and a partial one that names no Service is an
//!   accepted whole config (the Service rule is the only one the whole config adds);
//! - an accepted partial config merges into a config (as the ConfigMap watcher does) that a
//!   table can be compiled from.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_proxy::config::{self, ConfigErrors, Layer, LayerId, Outcome, PartialConfig, ProxyConfig, WHOLE_ONLY};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = config::parse(text);
    let partial = config::parse_partial(text);
    match &whole {
        Ok(cfg) => whole_round_trips(cfg),
        Err(errors) => errors_say_what(errors, "parse"),
    }
    match &partial {
        Ok(p) => partial_round_trips(p),
        Err(errors) => errors_say_what(errors, "parse_partial"),
    }
    parsers_agree(&whole, &partial);
});

fn errors_say_what(errors: &ConfigErrors, parser: &str) {
    assert!(!errors.0.is_empty(), "{parser} rejected the text with no error");
    for error in &errors.0 {
        assert!(
            !error.message.trim().is_empty(),
            "{parser}: an error without a message (path {:?})",
            error.path
        );
    }
}

fn whole_round_trips(cfg: &ProxyConfig) {
    if let Err(errors) = config::check_built(cfg) {
        panic!("parse accepted a config that check_built refuses: {errors}");
    }
    let written = cfg.to_json_pretty();
    let again =
        config::parse(&written).unwrap_or_else(|errors| panic!("the written config is refused: {errors}\n{written}"));
    assert_eq!(&again, cfg, "the written config reads back different\n{written}");
    assert_eq!(again.to_json_pretty(), written, "the written form is not a fixed point");
}

fn partial_round_trips(p: &PartialConfig) {
    let written = p.to_yaml();
    let again = config::parse_partial(&written)
        .unwrap_or_else(|errors| panic!("the written partial config is refused: {errors}\n{written}"));
    assert_eq!(&again, p, "the written partial config reads back different\n{written}");
    assert_eq!(again.to_yaml(), written, "the written form is not a fixed point");

    // Merged into an empty `--config`, as the ConfigMap watcher does: accepted whole, and a
    // table can be compiled from the result.
    let layer = Layer {
        id: LayerId {
            created: 1,
            namespace: "ns".into(),
            name: "routes".into(),
        },
        current: Ok(p.clone()),
        previous: None,
    };
    let merged = config::merge(empty_config(), &[layer]);
    assert_eq!(merged.outcomes.len(), 1);
    assert_eq!(
        merged.outcomes[0].1,
        Outcome::Accepted,
        "a valid layer alone was not accepted"
    );
    if let Err(errors) = config::check_built(&merged.config) {
        panic!("a merged valid layer fails check_built: {errors}");
    }
    assert_eq!(merged.config.routes, p.routes);
}

fn parsers_agree(whole: &Result<ProxyConfig, ConfigErrors>, partial: &Result<PartialConfig, ConfigErrors>) {
    match (whole, partial) {
        (Ok(cfg), Ok(p)) => {
            assert_eq!(cfg.routes, p.routes, "the two parsers read different routes");
            assert_eq!(cfg.backends, p.backends, "the two parsers read different backends");
        }
        (Ok(_), Err(errors)) => {
            // Only the listener fields, which the whole config may set, may be refused.
            for error in &errors.0 {
                assert!(
                    WHOLE_ONLY.contains(&error.path.as_str()),
                    "a valid whole config is refused as a partial one for {error}"
                );
            }
        }
        (Err(errors), Ok(p)) => {
            let names_a_service = p.backends.values().any(|b| b.service.is_some());
            assert!(
                names_a_service,
                "a valid partial config naming no Service is refused whole: {errors}"
            );
            for error in &errors.0 {
                assert!(
                    error.path.starts_with("backends.") && error.path.ends_with(".service"),
                    "a valid partial config is refused whole for {error}"
                );
            }
        }
        (Err(_), Err(_)) => {}
    }
}

fn empty_config() -> &'static ProxyConfig {
    static EMPTY: OnceLock<ProxyConfig> = OnceLock::new();
    EMPTY.get_or_init(|| config::parse("{}").expect("an empty JSON object is a valid config"))
}
