//! Polling with deadlines: the one way tests wait for the cluster to reach a
//! state. Never a bare sleep as synchronisation.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// Pause between two checks.
const INTERVAL: Duration = Duration::from_millis(100);

/// What one check saw.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds; polling ends with this value.
    Done(T),
    /// Not yet; the text says what was seen, for the timeout message.
    Waiting(String),
}

/// Calls `check` until it returns `Done`, an error, or `timeout` passes. Each
/// call is itself bounded by the time left. The timeout error names `what` and
/// the last state seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = "no check finished".to_owned();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok(Ok(Check::Done(value))) => return Ok(value),
            Ok(Ok(Check::Waiting(state))) => last = state,
            Ok(Err(err)) => return Err(err.context(format!("while waiting for {what}"))),
            Err(_) => last = format!("the last check was still running ({last})"),
        }
        if Instant::now() + INTERVAL >= deadline {
            bail!(
                "timed out after {}s waiting for {what}; last seen: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
