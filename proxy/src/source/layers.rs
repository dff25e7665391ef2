//! Route ConfigMaps merged over the `--config` file's config: holds the file's last good
//! config and each ConfigMap's current text and last accepted version, merges them
//! (`config::merge`), publishes the result, and says which ConfigMaps were rejected so that
//! the Kubernetes source can put an Event on each. No Kubernetes API here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::Sink;
use crate::config::{self, ConfigError, ConfigErrors, Layer, LayerId, Outcome, PartialConfig, ProxyConfig};
use crate::state::{ConfigState, LayerStatus};

/// The `source` label of loads caused by a route ConfigMap.
pub const SOURCE: &str = crate::metrics::reload_source::KUBERNETES;

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
    /// Wakes the Kubernetes source when a file reload rejected a ConfigMap.
    rejected: Notify,
}

#[derive(Debug)]
struct Inner {
    /// The file's last accepted config.
    base: ProxyConfig,
    /// Each ConfigMap by namespace/name.
    layers: BTreeMap<(String, String), Layer>,
    /// What was last reported for each rejected ConfigMap (its errors, and whether its kept
    /// version serves), so each rejection is reported once.
    reported: BTreeMap<(String, String), (ConfigErrors, bool)>,
    /// Rejections not yet handed to the Kubernetes source (a file reload's merge can reject a
    /// ConfigMap too).
    pending: Vec<Rejection>,
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
                pending: Vec::new(),
            }),
            rejected: Notify::new(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces every ConfigMap at once (a fresh list from the API server), each with its
    /// `config.yaml` text if it has one, publishes the merge, and returns the rejections to
    /// report.
    pub fn replace_all(&self, config_maps: Vec<(LayerId, Option<String>)>) -> Vec<Rejection> {
        let mut inner = self.inner();
        let mut previous = std::mem::take(&mut inner.layers);
        for (id, text) in config_maps {
            let key = (id.namespace.clone(), id.name.clone());
            let kept = previous.remove(&key).and_then(|l| l.previous);
            inner.layers.insert(key, layer(id, text.as_deref(), kept));
        }
        // Those gone from the list were deleted meanwhile: a new one of the same name is new.
        let Inner { layers, reported, .. } = &mut *inner;
        reported.retain(|key, _| layers.contains_key(key));
        self.publish(&mut inner, SOURCE);
        std::mem::take(&mut inner.pending)
    }

    /// Sets one ConfigMap (added or changed), publishes the merge, and returns the rejections
    /// to report.
    pub fn set(&self, id: LayerId, text: Option<&str>) -> Vec<Rejection> {
        let mut inner = self.inner();
        let key = (id.namespace.clone(), id.name.clone());
        let kept = inner.layers.remove(&key).and_then(|l| l.previous);
        inner.layers.insert(key, layer(id, text, kept));
        self.publish(&mut inner, SOURCE);
        std::mem::take(&mut inner.pending)
    }

    /// Removes one ConfigMap (deleted, or no longer labelled), publishes the merge, and
    /// returns the rejections to report.
    pub fn remove(&self, namespace: &str, name: &str) -> Vec<Rejection> {
        let mut inner = self.inner();
        let key = (namespace.to_owned(), name.to_owned());
        if inner.layers.remove(&key).is_some() {
            inner.reported.remove(&key);
            self.publish(&mut inner, SOURCE);
        }
        std::mem::take(&mut inner.pending)
    }

    /// Rejections made by a file reload's merge, not yet reported.
    pub fn take_rejections(&self) -> Vec<Rejection> {
        std::mem::take(&mut self.inner().pending)
    }

    /// Resolves when a file reload's merge has rejected a ConfigMap.
    pub async fn rejections_waiting(&self) {
        self.rejected.notified().await;
    }

    /// Merges and publishes; records each ConfigMap's outcome and queues the rejections not
    /// reported before. False if the merged config could not be published (a CA file of a
    /// changed backend of the base cannot be used): the previous table keeps serving.
    fn publish(&self, inner: &mut Inner, source: &str) -> bool {
        let all: Vec<Layer> = inner.layers.values().map(with_files_checked).collect();
        let merged = config::merge(&inner.base, &all);
        if self.state.apply(merged.config, source).is_err() {
            return false;
        }
        let mut statuses = Vec::with_capacity(merged.outcomes.len());
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
            let Some(errors) = errors else {
                inner.reported.remove(&key);
                continue;
            };
            let kept_previous = matches!(outcome, Outcome::KeptPrevious(_));
            let now = (errors.clone(), kept_previous);
            if inner.reported.get(&key) != Some(&now) {
                // A ConfigMap's rejection is counted as a Kubernetes load, whatever caused
                // the merge (a file reload can reject one too).
                self.state
                    .count_rejection(SOURCE, &id.to_string(), errors, kept_previous);
                inner.reported.insert(key, now);
                inner.pending.push(Rejection {
                    id,
                    errors: errors.clone(),
                    kept_previous,
                });
            }
        }
        self.state.set_layers(statuses);
        true
    }
}

impl Sink for Layers {
    /// A new file: it becomes the base the ConfigMaps merge over, once it is valid and the
    /// merge with it can be published; otherwise the old base stays.
    fn apply_text(&self, text: &str, source: &str) {
        match config::parse(text) {
            Ok(base) => {
                let mut inner = self.inner();
                let old = std::mem::replace(&mut inner.base, base);
                if !self.publish(&mut inner, source) {
                    inner.base = old;
                }
                let rejected = !inner.pending.is_empty();
                drop(inner);
                if rejected {
                    self.rejected.notify_one();
                }
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

/// `layer` with the upstream CA files of a new current version read: one naming a file that
/// cannot be used is rejected, so a bad file rejects its ConfigMap alone rather than the
/// merged table. The version already serving is not read again: what it loaded keeps serving
/// (the state loads only new or changed backends), so a file that goes bad later takes no
/// route away.
fn with_files_checked(layer: &Layer) -> Layer {
    let current = match &layer.current {
        Ok(partial) if layer.previous.as_ref() != Some(partial) => {
            crate::state::load_backend_tls(&partial.backends).map(|_| partial.clone())
        }
        other => other.clone(),
    };
    Layer {
        id: layer.id.clone(),
        current,
        previous: layer.previous.clone(),
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

    /// A CA certificate file in `dir`.
    fn ca_file(dir: &std::path::Path) -> std::path::PathBuf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.pem()).expect("write CA");
        path
    }

    #[test]
    fn a_ca_file_gone_bad_after_loading_blocks_no_config_map_and_takes_no_route() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca_file(dir.path());
        let state = Arc::new(ConfigState::new(ProxyMetrics::register(&mut Registry::default())));
        let file = FILE.replace(
            "d: { endpoints: ['127.0.0.1:1'] }",
            &format!("d: {{ endpoints: ['127.0.0.1:1'], tls: {{ ca: '{}' }} }}", ca.display()),
        );
        let base = config::parse(&file).expect("valid");
        state.apply(base.clone(), "file").expect("loads");
        let layers = Layers::new(Arc::clone(&state), base);
        let with_tls = route("t", "t.svc", 100).replace(
            "t.stable: { endpoints: ['127.0.0.1:2'] }",
            &format!(
                "t.stable: {{ endpoints: ['127.0.0.1:2'], tls: {{ ca: '{}' }} }}",
                ca.display()
            ),
        );
        assert!(layers.set(id(1, "t"), Some(&with_tls)).is_empty());
        // The Secret behind the file changes under the proxy.
        std::fs::write(&ca, "not a certificate").expect("overwrite CA");
        // A weight write (an abort's weight 0) for another ConfigMap still lands...
        layers.set(id(2, "a"), Some(&route("a", "a.svc", 500)));
        assert!(layers.set(id(2, "a"), Some(&route("a", "a.svc", 0))).is_empty());
        assert_eq!(weight(&state, "a"), Some(0));
        // ...and the routes whose backends named the file keep serving as loaded.
        assert_eq!(weight(&state, "t"), Some(100));
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
    fn every_new_rejection_is_reported_once_whoever_caused_it() {
        let (state, layers) = layers();
        assert!(layers.set(id(1, "a"), Some(&route("a", "a.svc", 500))).is_empty());
        // A file reload that takes route "a"'s name rejects the ConfigMap: queued for its
        // Event.
        let file = FILE.replace("name: default", "name: a");
        Sink::apply_text(&layers, &file, "file");
        let queued = layers.take_rejections();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(!queued[0].kept_previous, "its only version clashes now");
        assert!(layers.take_rejections().is_empty(), "reported once");
        // Deleted while the watch was down and created again with the same text: a new
        // ConfigMap, reported again.
        assert!(layers.replace_all(Vec::new()).is_empty());
        let again = layers.replace_all(vec![(id(3, "a"), Some(route("a", "a.svc", 500)))]);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(weight(&state, "a"), Some(0), "the file's route a serves");
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
