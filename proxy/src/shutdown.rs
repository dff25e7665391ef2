//! The shutdown signal every long-lived task of the proxy watches: shared vocabulary, low in
//! the module tree so that listeners, watchers and mirror tasks can all import it.

use tokio::sync::watch;

/// A shutdown signal: flips to `true` once, when the process is asked to stop.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Waits until `signal` says stop (or its sender is gone, which means the same).
pub async fn stopped(mut signal: ShutdownSignal) {
    let _ = signal.wait_for(|stop| *stop).await;
}
