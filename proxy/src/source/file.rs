//! The file config source: reads the file when its content changes (polled, which also works
//! for Kubernetes' symlink-swapped volumes, where change events are unreliable) and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Sink;
use crate::config::{ConfigError, ConfigErrors};
use crate::shutdown::{ShutdownSignal, stopped};

/// How often the file is read to look for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The `source` label of loads from a file.
pub const SOURCE: &str = crate::metrics::reload_source::FILE;

/// Reads a config file, naming the file in the error.
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })
}

/// Watches `path` until `shutdown`, handing each new content to `sink`. `initial` is the text
/// already applied at startup, so it is not loaded twice. With `on_sighup`, SIGHUP loads the
/// file again even if unchanged.
pub async fn watch(path: PathBuf, sink: Arc<dyn Sink>, initial: String, shutdown: ShutdownSignal, on_sighup: bool) {
    let mut last: Result<String, String> = Ok(initial);
    let mut hangup = on_sighup.then(hangup_signal).flatten();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if forced {
            tracing::info!(path = %path.display(), "SIGHUP: reloading config");
        }
        let current = tokio::task::spawn_blocking({
            let path = path.clone();
            move || read(&path)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("reading task failed: {e}"),
            }]))
        });
        match current {
            Ok(text) => {
                if forced || last.as_ref() != Ok(&text) {
                    sink.apply_text(&text, SOURCE);
                    last = Ok(text);
                }
            }
            Err(errors) => {
                // A missing file is often a moment in an atomic replace: report it once, keep
                // serving, and load the file when it is back.
                let message = errors.to_string();
                if forced || last.as_ref().err() != Some(&message) {
                    sink.reject(&errors, SOURCE);
                    last = Err(message);
                }
            }
        }
    }
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the file is still reloaded on change");
            None
        }
    }
}
