//! The live config: the table in use behind one `ArcSwap`, and the outcome of the last load.
//!
//! Every source (file, in-process handle) funnels through [`ConfigState::apply_text`] or
//! [`ConfigState::apply`], so a rejected config is handled the same way everywhere: the old
//! table keeps serving, the errors are logged, counted and shown in `/config`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::config::{self, ConfigError, ConfigErrors, ProxyConfig};
use crate::metrics::{ProxyMetrics, ReloadResult};
use crate::table::Table;
use crate::upstream::discovery::Discovery;
use crate::upstream::tls::{Refresh, TlsSettings};

/// The outcome of the most recent config load.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// When it happened, RFC 3339.
    pub at: String,
    /// Where the config came from: `file`, `api`.
    pub source: String,
    /// `ok` or `error`.
    pub result: &'static str,
    /// The version now serving after this load.
    pub version: u64,
    /// Every error of a rejected config, with its path.
    pub errors: Vec<ConfigError>,
    /// Changes that were accepted but only take effect at restart.
    pub warnings: Vec<String>,
}

/// One route ConfigMap's part in the table, for `/config`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerStatus {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `ok` (its current version serves), `previous` (its current version was rejected and
    /// the last accepted one serves) or `rejected` (none of it serves).
    pub result: &'static str,
    /// Every error of its current version, with its path.
    pub errors: Vec<ConfigError>,
}

/// Startup values given by flag (`--listen`, `--admin`): they win over every config's, the
/// first and each reload alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The data-plane listen address.
    pub listen: Option<std::net::SocketAddr>,
    /// The admin listen address.
    pub admin: Option<std::net::SocketAddr>,
}

impl Overrides {
    /// `cfg` with these values in place of its own.
    pub fn apply(&self, cfg: &mut ProxyConfig) {
        if let Some(listen) = self.listen {
            cfg.listen = listen;
        }
        if let Some(admin) = self.admin {
            cfg.admin = admin;
        }
    }
}

/// The table in use and the history needed to explain it.
#[derive(Debug)]
pub struct ConfigState {
    table: ArcSwapOption<Table>,
    metrics: ProxyMetrics,
    /// Serialises loads, so versions increase in the order tables are published, and keeps
    /// the last outcome.
    last: Mutex<Option<ReloadStatus>>,
    /// The route ConfigMaps merged into the table, when there are any.
    layers: Mutex<Vec<LayerStatus>>,
    /// A source whose first load readiness waits for (the route ConfigMaps' first list).
    waiting_for: Mutex<Option<String>>,
    /// Startup values given by flag.
    overrides: Overrides,
    /// The endpoints of the Services that backends follow.
    discovery: Arc<Discovery>,
}

impl ConfigState {
    /// The endpoints of the Services that backends follow, for the watcher that keeps them.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// A state with no table yet: the proxy answers 503 `not-ready` until a config is applied.
    pub fn new(metrics: ProxyMetrics) -> Self {
        ConfigState::with_overrides(metrics, Overrides::default())
    }

    /// A state whose every config takes `overrides`' values.
    pub fn with_overrides(metrics: ProxyMetrics, overrides: Overrides) -> Self {
        ConfigState {
            overrides,
            discovery: Arc::default(),
            table: ArcSwapOption::empty(),
            metrics,
            last: Mutex::new(None),
            layers: Mutex::new(Vec::new()),
            waiting_for: Mutex::new(None),
        }
    }

    /// Makes readiness wait until `source` has loaded (`None`: wait no more). A proxy that
    /// took traffic before its route ConfigMaps were read would answer 404 for their routes.
    pub fn wait_for(&self, source: Option<&str>) {
        *self
            .waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = source.map(str::to_owned);
    }

    /// Why the proxy is not ready yet, if it is not: no table, or a source not yet loaded.
    pub fn not_ready(&self) -> Option<String> {
        if self.table.load().is_none() {
            return Some("no config loaded yet".to_owned());
        }
        self.waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|source| format!("waiting for {source}"))
    }

    /// The route ConfigMaps merged into the table, and what became of each.
    pub fn layers(&self) -> Vec<LayerStatus> {
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records what became of each route ConfigMap in the last merge.
    pub fn set_layers(&self, layers: Vec<LayerStatus>) {
        *self.layers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = layers;
    }

    /// Logs and counts one part of a config rejected alone (a route ConfigMap), while the
    /// rest was published: `what` names it.
    pub fn count_rejection(&self, source: &str, what: &str, errors: &ConfigErrors, kept_previous: bool) {
        let serving = if kept_previous {
            "its previous version keeps serving"
        } else {
            "none of it serves"
        };
        tracing::error!(source, %what, %errors, "{what} rejected; {serving}");
        self.metrics.record_reload(source, ReloadResult::error);
    }

    /// The table in use, if any. Load once per request and pass it down.
    pub fn table(&self) -> Option<Arc<Table>> {
        self.table.load_full()
    }

    /// The outcome of the last load.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.lock_last().clone()
    }

    /// The reload lock. A panic while it was held leaves the last outcome as it was (it is
    /// replaced whole), so a poisoned lock is still usable: reloads go on.
    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<ReloadStatus>> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metric families, for the admin endpoint.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Parses, validates and publishes `text`; on error the current table stays.
    pub fn apply_text(&self, text: &str, source: &str) -> Result<u64, ConfigErrors> {
        match config::parse(text) {
            Ok(cfg) => self.apply(cfg, source),
            Err(errors) => {
                self.reject(&errors, source);
                Err(errors)
            }
        }
    }

    /// Records a config that could not even be read (a missing file, say) as a rejected load.
    pub fn reject(&self, errors: &ConfigErrors, source: &str) {
        let mut last = self.lock_last();
        let version = self.table.load().as_ref().map_or(0, |t| t.version);
        tracing::error!(source, version, errors = %errors, "config rejected; the previous config keeps serving");
        self.metrics.record_reload(source, ReloadResult::error);
        *last = Some(ReloadStatus {
            at: now(),
            source: source.to_owned(),
            result: "error",
            version,
            errors: errors.0.clone(),
            warnings: Vec::new(),
        });
    }

    /// Loads what a validated config refers to (the upstream CA files of new or changed
    /// backends), then publishes it and returns its version; a file that cannot be used
    /// rejects the config, naming its field. An unchanged backend keeps the TLS settings it
    /// runs with, so a CA file that goes bad later blocks no reload that does not touch it.
    pub fn apply(&self, mut cfg: ProxyConfig, source: &str) -> Result<u64, ConfigErrors> {
        self.overrides.apply(&mut cfg);
        // A config built in code skipped parsing's checks; compiling one that fails them
        // would panic with the reload lock held.
        if let Err(errors) = config::check_built(&cfg) {
            self.reject(&errors, source);
            return Err(errors);
        }
        let last = self.lock_last();
        let previous = self.table.load_full();
        let changed: BTreeMap<String, config::BackendConfig> = cfg
            .backends
            .iter()
            .filter(|(name, b)| {
                previous
                    .as_deref()
                    .is_none_or(|p| p.config.backends.get(*name) != Some(*b))
            })
            .map(|(name, b)| (name.clone(), b.clone()))
            .collect();
        let tls = match load_backend_tls(&changed) {
            Ok(tls) => tls,
            Err(errors) => {
                drop(last);
                self.reject(&errors, source);
                return Err(errors);
            }
        };
        let mut last = last;
        let mut warnings = previous
            .as_deref()
            .map(|p| startup_changes(&p.config, &cfg))
            .unwrap_or_default();
        // Backends carried over unchanged read their CA files again: a reload is how an
        // operator says "take the new files". One that fails keeps the CA it has.
        if let Some(previous) = previous.as_deref() {
            for (name, settings) in previous
                .tls_backends()
                .filter(|(name, _)| cfg.backends.contains_key(*name) && !changed.contains_key(*name))
            {
                match settings.refresh() {
                    Refresh::Unchanged => {}
                    Refresh::Replaced => tracing::info!(backend = name, "upstream CA reloaded"),
                    Refresh::Failed(error) => warnings.push(format!("{error}; the previous CA stays in use")),
                }
            }
        }
        for warning in &warnings {
            tracing::warn!(source, "{warning}");
        }
        let version = previous.as_ref().map_or(1, |t| t.version + 1);
        let table = Table::compile(
            Arc::new(cfg),
            version,
            &self.metrics,
            previous.as_deref(),
            &tls,
            &self.discovery,
        );
        let routes = table.config.routes.len();
        self.table.store(Some(Arc::new(table)));
        self.metrics.record_reload(source, ReloadResult::ok);
        tracing::info!(source, version, routes, "config loaded");
        *last = Some(ReloadStatus {
            at: now(),
            source: source.to_owned(),
            result: "ok",
            version,
            errors: Vec::new(),
            warnings,
        });
        Ok(version)
    }
}

/// The client TLS settings of those of `backends` that speak TLS, or every file that failed.
pub(crate) fn load_backend_tls(
    backends: &BTreeMap<String, config::BackendConfig>,
) -> Result<BTreeMap<String, TlsSettings>, ConfigErrors> {
    let mut loaded = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, backend) in backends {
        if let Some(tls) = &backend.tls {
            match TlsSettings::load(name, tls, backend.protocol) {
                Ok(settings) => {
                    loaded.insert(name.clone(), settings);
                }
                Err(error) => errors.push(error),
            }
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Startup-only fields that differ between the serving config and a new one.
fn startup_changes(old: &ProxyConfig, new: &ProxyConfig) -> Vec<String> {
    let mut changes = Vec::new();
    if old.listen != new.listen {
        changes.push(format!("listen changed to {}; it takes effect at restart", new.listen));
    }
    if old.admin != new.admin {
        changes.push(format!("admin changed to {}; it takes effect at restart", new.admin));
    }
    if old.tls != new.tls {
        changes
            .push("tls changed; it takes effect at restart (the certificate files themselves are reloaded)".to_owned());
    }
    if old.drain_timeout != new.drain_timeout {
        changes.push("drainTimeout changed; it takes effect at restart".to_owned());
    }
    if old.reuse_port != new.reuse_port {
        changes.push("reusePort changed; it takes effect at restart".to_owned());
    }
    if old.limits != new.limits {
        changes.push("limits changed; they take effect at restart".to_owned());
    }
    changes
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    fn state() -> ConfigState {
        ConfigState::new(ProxyMetrics::register(&mut Registry::default()))
    }

    fn config(weight: u16) -> String {
        format!(
            "routes:\n  - {{ name: a, stable: {{ backend: v1 }}, candidate: {{ backend: v2 }}, candidateWeight: {weight} }}\nbackends: {{ v1: {{ endpoints: ['127.0.0.1:1'] }}, v2: {{ endpoints: ['127.0.0.1:2'] }} }}\n"
        )
    }

    #[test]
    fn no_table_until_a_config_is_applied() {
        let s = state();
        assert!(s.table().is_none());
        assert_eq!(s.apply_text(&config(100), "api"), Ok(1));
        assert_eq!(s.table().map(|t| t.version), Some(1));
    }

    #[test]
    fn a_rejected_config_keeps_the_old_table_and_reports_why() {
        let s = state();
        s.apply_text(&config(100), "file").expect("valid");
        let errors = s.apply_text(&config(20_000), "file").expect_err("invalid");
        assert_eq!(errors.0[0].path, "routes[0].candidateWeight");
        let table = s.table().expect("still serving");
        assert_eq!(table.version, 1);
        assert_eq!(table.config.routes[0].candidate_weight.basis_points(), 100);
        let last = s.last_reload().expect("recorded");
        assert_eq!((last.result, last.version), ("error", 1));
    }

    #[test]
    fn weight_sequence_carries_over_a_reload() {
        let s = state();
        s.apply_text(&config(5000), "api").expect("valid");
        let before = s.table().expect("loaded");
        let headers = http::HeaderMap::new();
        let first = before.route("a").expect("route").decide(&headers).0;
        s.apply_text(&config(5000), "api").expect("valid");
        let second = s.table().expect("loaded").route("a").expect("route").decide(&headers).0;
        assert_ne!(first, second, "at 50 % the second request must go to the other side");
    }

    proptest! {
        /// The mirror's share is exact over any run of selections however many reloads fall
        /// inside it, as the weight split's is: its sequence belongs to the route.
        #[test]
        fn the_mirror_share_is_exact_across_reloads(
            weight in 1u16..=10_000,
            reloads in proptest::collection::vec(1usize..400, 1..12),
        ) {
            let s = state();
            let text = format!(
                "routes:\n  - {{ name: a, stable: {{ backend: v1 }}, candidate: {{ backend: v2 }}, mirror: {{ weight: {weight} }} }}\n\
                 backends: {{ v1: {{ endpoints: ['127.0.0.1:1'] }}, v2: {{ endpoints: ['127.0.0.1:2'] }} }}\n"
            );
            s.apply_text(&text, "api").expect("valid");
            let mut selected = 0u64;
            let mut total = 0u64;
            for run in &reloads {
                let table = s.table().expect("loaded");
                let mirror = table.route("a").and_then(|r| r.mirror.as_ref()).expect("mirror");
                for _ in 0..*run {
                    selected += u64::from(mirror.select());
                    total += 1;
                }
                s.apply_text(&text, "api").expect("valid");
            }
            let exact = total * u64::from(weight) / 10_000;
            prop_assert!(selected.abs_diff(exact) <= 1, "{selected} of {total} at {weight} bp");
        }
    }

    #[tokio::test]
    async fn a_trip_survives_a_change_of_the_fail_fast_policy_while_the_candidate_stays() {
        let s = state();
        let config = |ratio: f64, revision: &str| {
            format!(
                "routes:\n  - {{ name: a, stable: {{ backend: v1 }}, candidate: {{ backend: v2, revision: {revision} }}, candidateWeight: 100, \
                 failFast: {{ errorRatio: {ratio}, window: 10s, minRequests: 1 }} }}\n\
                 backends: {{ v1: {{ endpoints: ['127.0.0.1:1'] }}, v2: {{ endpoints: ['127.0.0.1:2'] }} }}\n"
            )
        };
        let tripped = |s: &ConfigState| {
            let table = s.table().expect("loaded");
            table
                .fail_fast()
                .any(|(route, f)| route == "a" && f.tripped().is_some())
        };
        s.apply_text(&config(0.5, "r1"), "api").expect("valid");
        s.table()
            .expect("loaded")
            .route("a")
            .expect("route")
            .record_candidate(true);
        assert!(tripped(&s));
        // A looser limit for the same candidate does not let it back in.
        s.apply_text(&config(0.9, "r1"), "api").expect("valid");
        assert!(tripped(&s), "the same candidate stays cut off");
        // A new revision does.
        s.apply_text(&config(0.9, "r2"), "api").expect("valid");
        assert!(!tripped(&s));
    }

    proptest! {
        #[test]
        fn an_invalid_config_never_replaces_a_valid_one(weights in proptest::collection::vec(0u16..20_000, 1..12)) {
            let s = state();
            let mut serving: Option<u16> = None;
            for w in weights {
                let accepted = s.apply_text(&config(w), "api").is_ok();
                prop_assert_eq!(accepted, w <= 10_000);
                if accepted {
                    serving = Some(w);
                }
                let now = s.table().map(|t| t.config.routes[0].candidate_weight.basis_points());
                prop_assert_eq!(now, serving);
            }
        }
    }
}
