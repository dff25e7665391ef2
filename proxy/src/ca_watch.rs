//! Upstream CA rotation: the CA files of the backends in use are polled, and a changed one
//! that loads is used for new upstream connections at once, without a reload. A file that
//! changed but cannot be used is logged and counted once per content; the CA in use stays.

use std::collections::HashMap;
use std::sync::Arc;

use crate::listener::tls::POLL_INTERVAL;
use crate::metrics::{ProxyMetrics, ReloadResult, reload_source};
use crate::shutdown::{ShutdownSignal, stopped};
use crate::state::ConfigState;
use crate::upstream::tls::Refresh;

/// Polls until `shutdown`.
pub async fn watch(state: Arc<ConfigState>, metrics: ProxyMetrics, shutdown: ShutdownSignal) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last failure reported per backend, so a bad file is reported once, not per poll.
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let Some(table) = state.table() else { continue };
        if table.tls_backends().next().is_none() {
            continue;
        }
        let outcomes = tokio::task::spawn_blocking(move || {
            table
                .tls_backends()
                .map(|(name, settings)| (name.to_owned(), settings.refresh()))
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(outcomes) = outcomes else {
            tracing::error!("the CA reading task failed");
            continue;
        };
        for (backend, outcome) in outcomes {
            match outcome {
                Refresh::Unchanged => {}
                Refresh::Replaced => {
                    reported.remove(&backend);
                    metrics.record_reload(reload_source::UPSTREAM_CA, ReloadResult::ok);
                    tracing::info!(%backend, "upstream CA rotated; new connections verify against it");
                }
                Refresh::Failed(error) => {
                    let message = error.to_string();
                    if reported.get(&backend) != Some(&message) {
                        metrics.record_reload(reload_source::UPSTREAM_CA, ReloadResult::error);
                        tracing::warn!(%backend, error = %message, "new upstream CA rejected; the previous one stays in use");
                        reported.insert(backend, message);
                    }
                }
            }
        }
    }
}
