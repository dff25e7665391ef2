//! Route ConfigMaps merged over the `--config` file's config: holds the file's last good
//! config and each ConfigMap's current text and last accepted version, merges them
//! (`config::merge`), publishes the result, and says which ConfigMaps were rejected so that
//! the Kubernetes source can put an Event on each. No Kubernetes API here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Sink;
use crate::config::{self, ConfigError, ConfigErrors, Layer, LayerId, Outcome, PartialConfig, ProxyConfig};
use crate::state::{ConfigState, LayerStatus};

/// The `source` label of loads caused by a route ConfigMap.
pub const SOURCE: &str = "kubernetes";

/// The ConfigMap data key that holds a partial config.
pub const DATA_KEY: &str = "config.yaml";

/// A ConfigMap rejected by the last merge, newly or with new errors: to be reported once.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// Which ConfigMap.
    pub id: LayerId,
    /// Every error, with its path.
    pub errors: ConfigErrors,
    /// Whether its previous version keeps serving.
    pub kept_previous: bool,
}

/// The file's config and the route ConfigMaps, merged into the live table.
#[derive(Debug)]
pub struct Layers {
    state: Arc<ConfigState>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The file's last accepted config.
    base: ProxyConfig,
    /// Each ConfigMap by namespace/name.
    layers: BTreeMap<(String, String), Layer>,
    /// The errors last reported for each rejected ConfigMap, so each is reported once.
    reported: BTreeMap<(String, String), ConfigErrors>,
}

impl Layers {
    /// Layers over `base`, the config `state` serves now; none yet.
    pub fn new(state: Arc<ConfigState>, base: ProxyConfig) -> Self {
        Layers {
            state,
            inner: Mutex::new(Inner {
                base,
                layers: BTreeMap::new(),
                reported: BTreeMap::new(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces every ConfigMap at once (a fresh list from the API server), each with its
    /// `config.yaml` text if it has one, and publishes the merge.
    pub fn replace_all(&self, config_maps: Vec<(LayerId, Option<String>)>) -> Vec<Rejection> {
        let mut inner = self.inner();
        let mut previous = std::mem::take(&mut inner.layers);
        for (id, text) in config_maps {
            let key = (id.namespace.clone(), id.name.clone());
            let kept = previous.remove(&key).and_then(|l| l.previous);
            inner.layers.insert(key, layer(id, text.as_deref(), kept));
        }
        self.publish(&mut inner, SOURCE)
    }

    /// Sets one ConfigMap (added or changed) and publishes the merge.
    pub fn set(&self, id: LayerId, text: Option<&str>) -> Vec<Rejection> {
        let mut inner = self.inner();
        let key = (id.namespace.clone(), id.name.clone());
        let kept = inner.layers.remove(&key).and_then(|l| l.previous);
        inner.layers.insert(key, layer(id, text, kept));
        self.publish(&mut inner, SOURCE)
    }

    /// Removes one ConfigMap (deleted, or no longer labelled) and publishes the merge.
    pub fn remove(&self, namespace: &str, name: &str) -> Vec<Rejection> {
        let mut inner = self.inner();
        let key = (namespace.to_owned(), name.to_owned());
        if inner.layers.remove(&key).is_none() {
            return Vec::new();
        }
        inner.reported.remove(&key);
        self.publish(&mut inner, SOURCE)
    }

    /// Merges, publishes, records each ConfigMap's outcome, and returns the rejections not
    /// reported before.
    fn publish(&self, inner: &mut Inner, source: &str) -> Vec<Rejection> {
        // The CA files each version names are read again now: one that went bad since its
        // ConfigMap was accepted rejects that ConfigMap alone, not the merged table.
        let all: Vec<Layer> = inner.layers.values().map(with_files_checked).collect();
        let merged = config::merge(&inner.base, &all);
        if self.state.apply(merged.config, source).is_err() {
            // A file of the base went bad since it was loaded: the state recorded why, and the
            // previous table keeps serving until the file is mended.
            return Vec::new();
        }
        let mut statuses = Vec::with_capacity(merged.outcomes.len());
        let mut fresh = Vec::new();
        for (id, outcome) in merged.outcomes {
            let key = (id.namespace.clone(), id.name.clone());
            let Some(layer) = inner.layers.get_mut(&key) else {
                continue;
            };
            // Only an accepted version replaces the one kept: a rejected ConfigMap whose kept
            // version clashes now (with an older one, for a while) keeps it for later.
            if matches!(outcome, Outcome::Accepted) {
                layer.previous = outcome.serving(layer);
            }
            let (result, errors) = match &outcome {
                Outcome::Accepted => ("ok", None),
                Outcome::KeptPrevious(errors) => ("previous", Some(errors)),
                Outcome::Rejected(errors) => ("rejected", Some(errors)),
            };
            statuses.push(LayerStatus {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                result,
                errors: errors.map(|e| e.0.clone()).unwrap_or_default(),
            });
            match errors {
                None => {
                    inner.reported.remove(&key);
                }
                Some(errors) if inner.reported.get(&key) != Some(errors) => {
                    let kept_previous = matches!(outcome, Outcome::KeptPrevious(_));
                    self.state
                        .count_rejection(source, &id.to_string(), errors, kept_previous);
                    inner.reported.insert(key, errors.clone());
                    fresh.push(Rejection {
                        id,
                        errors: errors.clone(),
                        kept_previous,
                    });
                }
                Some(_) => {}
            }
        }
        self.state.set_layers(statuses);
        fresh
    }
}

impl Sink for Layers {
    /// A new file: it becomes the base the ConfigMaps merge over, once it is valid and the
    /// files it names can be read; otherwise the old base stays.
    fn apply_text(&self, text: &str, source: &str) {
        let checked = config::parse(text).and_then(|base| {
            crate::state::load_backend_tls(&base.backends)?;
            Ok(base)
        });
        match checked {
            Ok(base) => {
                let mut inner = self.inner();
                inner.base = base;
                self.publish(&mut inner, source);
            }
            Err(errors) => self.state.reject(&errors, source),
        }
    }

    fn reject(&self, errors: &ConfigErrors, source: &str) {
        self.state.reject(errors, source);
    }
}

/// One ConfigMap's layer: its text parsed.
fn layer(id: LayerId, text: Option<&str>, previous: Option<PartialConfig>) -> Layer {
    let current = match text {
        None => Err(ConfigErrors(vec![ConfigError {
            path: format!("data.{DATA_KEY}"),
            message: "is missing: a route ConfigMap holds its routes and backends there".into(),
        }])),
        Some(text) => config::parse_partial(text),
    };
    Layer { id, current, previous }
}

/// `layer` with the upstream CA files of both its versions read: a version naming a file
/// that cannot be used is rejected (the current one with the file's error; a kept one is
/// dropped), so a bad file rejects its ConfigMap alone rather than the merged table.
fn with_files_checked(layer: &Layer) -> Layer {
    let usable = |partial: &PartialConfig| crate::state::load_backend_tls(&partial.backends).map(|_| ());
    Layer {
        id: layer.id.clone(),
        current: layer
            .current
            .clone()
            .and_then(|partial| usable(&partial).map(|()| partial)),
        previous: layer.previous.clone().filter(|partial| usable(partial).is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::metrics::ProxyMetrics;

    const FILE: &str =
        "routes:\n  - { name: default, stable: { backend: d } }\nbackends:\n  d: { endpoints: ['127.0.0.1:1'] }\n";

    fn route(name: &str, host: &str, weight: u32) -> String {
        format!(
            "routes:\n  - {{ name: {name}, match: {{ host: {host} }}, stable: {{ backend: {name}.stable }}, \
             candidate: {{ backend: {name}.candidate }}, candidateWeight: {weight} }}\n\
             backends:\n  {name}.stable: {{ endpoints: ['127.0.0.1:2'] }}\n  {name}.candidate: {{ endpoints: ['127.0.0.1:3'] }}\n"
        )
    }

    fn id(created: i64, name: &str) -> LayerId {
        LayerId {
            created,
            namespace: "models".into(),
            name: name.into(),
        }
    }

    fn layers() -> (Arc<ConfigState>, Layers) {
        let state = Arc::new(ConfigState::new(ProxyMetrics::register(&mut Registry::default())));
        let base = config::parse(FILE).expect("valid");
        state.apply(base.clone(), "file").expect("loads");
        let layers = Layers::new(Arc::clone(&state), base);
        (state, layers)
    }

    fn weight(state: &ConfigState, route: &str) -> Option<u16> {
        let table = state.table().expect("a table");
        table.config.route(route).map(|r| r.candidate_weight.basis_points())
    }

    #[test]
    fn a_bad_config_map_is_reported_once_and_its_previous_version_keeps_serving() {
        let (state, layers) = layers();
        assert!(layers.set(id(1, "a"), Some(&route("a", "a.svc", 500))).is_empty());
        assert_eq!(weight(&state, "a"), Some(500));

        let bad = route("a", "a.svc", 20_000);
        let rejected = layers.set(id(1, "a"), Some(&bad));
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].kept_previous);
        assert_eq!(rejected[0].errors.0[0].path, "routes[0].candidateWeight");
        assert_eq!(weight(&state, "a"), Some(500), "the previous version serves");
        assert_eq!(state.layers()[0].result, "previous");
        // The same bad text seen again (a resync) is not reported again.
        assert!(layers.set(id(1, "a"), Some(&bad)).is_empty());

        // Fixed: it serves and its status clears.
        assert!(layers.set(id(1, "a"), Some(&route("a", "a.svc", 700))).is_empty());
        assert_eq!(weight(&state, "a"), Some(700));
        assert_eq!(state.layers()[0].result, "ok");
    }

    #[test]
    fn a_config_map_without_the_data_key_or_naming_the_files_route_is_rejected_alone() {
        let (state, layers) = layers();
        let rejected = layers.replace_all(vec![
            (id(1, "empty"), None),
            (id(2, "thief"), Some(route("default", "x.svc", 0))),
            (id(3, "good"), Some(route("good", "good.svc", 100))),
        ]);
        let paths: Vec<(String, String)> = rejected
            .iter()
            .map(|r| (r.id.name.clone(), r.errors.0[0].to_string()))
            .collect();
        assert_eq!(
            paths,
            [
                (
                    "empty".to_owned(),
                    "data.config.yaml: is missing: a route ConfigMap holds its routes and backends there".to_owned()
                ),
                (
                    "thief".to_owned(),
                    "routes[0].name: route \"default\" is already defined by the --config file".to_owned()
                ),
            ]
        );
        assert_eq!(weight(&state, "good"), Some(100));
        assert_eq!(weight(&state, "default"), Some(0));
    }

    #[test]
    fn a_missing_ca_file_rejects_its_config_map_or_file_alone() {
        let (state, layers) = layers();
        layers.set(id(1, "a"), Some(&route("a", "a.svc", 500)));
        // A ConfigMap naming a CA file that is not there.
        let tls = route("b", "b.svc", 0).replace(
            "b.stable: { endpoints: ['127.0.0.1:2'] }",
            "b.stable: { endpoints: ['127.0.0.1:2'], tls: { ca: /nonexistent/ca.pem } }",
        );
        assert!(tls.contains("/nonexistent/ca.pem"), "{tls}");
        let rejected = layers.set(id(2, "b"), Some(&tls));
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].errors.0[0].path, "backends.b.stable.tls.ca");
        // A file naming one is refused, and the ConfigMaps keep flowing over the old base.
        let bad_file = FILE.replace(
            "d: { endpoints: ['127.0.0.1:1'] }",
            "d: { endpoints: ['127.0.0.1:1'], tls: { ca: /nonexistent/ca.pem } }",
        );
        Sink::apply_text(&layers, &bad_file, "file");
        assert_eq!(state.last_reload().map(|r| r.result), Some("error"));
        layers.set(id(1, "a"), Some(&route("a", "a.svc", 900)));
        assert_eq!(weight(&state, "a"), Some(900), "a weight write still lands");
        assert_eq!(weight(&state, "default"), Some(0));
    }

    #[test]
    fn a_kept_version_that_clashes_for_a_while_is_not_lost() {
        let (state, layers) = layers();
        layers.set(id(5, "late"), Some(&route("shared", "late.svc", 300)));
        // Its current text goes bad; its kept version serves.
        layers.set(id(5, "late"), Some(&route("shared", "late.svc", 20_000)));
        assert_eq!(weight(&state, "shared"), Some(300));
        // An older ConfigMap takes the route name for a while: nothing of "late" serves...
        layers.set(id(1, "early"), Some(&route("shared", "early.svc", 100)));
        assert_eq!(weight(&state, "shared"), Some(100));
        // ...and once it is gone, the kept version serves again.
        layers.remove("models", "early");
        assert_eq!(weight(&state, "shared"), Some(300));
    }

    #[test]
    fn a_new_file_is_merged_under_the_config_maps_and_a_removed_one_leaves() {
        let (state, layers) = layers();
        layers.set(id(1, "a"), Some(&route("a", "a.svc", 500)));
        let file = FILE.replace("name: default", "name: fallback");
        Sink::apply_text(&layers, &file, "file");
        let table = state.table().expect("a table");
        let names: Vec<&str> = table.config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["fallback", "a"]);
        layers.remove("models", "a");
        assert_eq!(weight(&state, "a"), None);
        assert!(state.layers().is_empty());
    }
}
