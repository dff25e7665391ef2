//! The demo's traffic: requests at a steady rate through the proxy, each from one of many
//! sticky users, a few of them preview testers. Bounded: it stops when told, and never has
//! more than a fixed number of requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, watch};

/// Users the generator draws from; each keeps its side while the weight holds.
const USERS: u32 = 10_000;
/// Most requests in flight at once; beyond this a request is skipped and counted.
const MAX_IN_FLIGHT: usize = 512;
/// How often a batch of requests is sent.
const TICK: Duration = Duration::from_millis(10);
/// Longest a demo request may take before the generator gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the clients saw, per side as the proxy's side header named it.
#[derive(Debug, Default)]
pub struct ClientTally {
    /// Requests answered by stable.
    pub stable: AtomicU64,
    /// Requests answered by the candidate.
    pub candidate: AtomicU64,
    /// Answers that were not 2xx, or failed.
    pub errors: AtomicU64,
    /// Requests not sent because too many were in flight.
    pub skipped: AtomicU64,
}

/// Sends `rate` requests a second to `proxy` until `stop` flips. `preview` is the share of
/// requests that carry the preview header (testers of a blue-green preview).
pub async fn run(
    proxy: SocketAddr,
    rate: u32,
    preview: f64,
    seed: u64,
    tally: Arc<ClientTally>,
    mut stop: watch::Receiver<bool>,
) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build_http::<Empty<bytes::Bytes>>();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = f64::from(rate) * TICK.as_secs_f64();
    let mut owed = 0.0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tally.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let user = rng.random_range(0..USERS);
            let tester = rng.random::<f64>() < preview;
            let mut req =
                http::Request::get(format!("http://{proxy}/v1/generate")).header("x-user-id", format!("user-{user}"));
            if tester {
                req = req.header(super::PREVIEW_HEADER, "candidate");
            }
            let Ok(req) = req.body(Empty::new()) else {
                continue;
            };
            let (client, tally) = (client.clone(), Arc::clone(&tally));
            in_flight.spawn(async move {
                let _permit = permit;
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let rsp = client.request(req).await.ok()?;
                    let side = rsp.headers().get("x-weir-side").map(|v| v.as_bytes() == b"candidate");
                    let ok = rsp.status().is_success();
                    let body_ok = rsp.into_body().collect().await.is_ok();
                    Some((side, ok && body_ok))
                })
                .await
                .ok()
                .flatten();
                match outcome {
                    Some((side, ok)) => {
                        match side {
                            Some(true) => tally.candidate.fetch_add(1, Ordering::Relaxed),
                            _ => tally.stable.fetch_add(1, Ordering::Relaxed),
                        };
                        if !ok {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while in_flight.try_join_next().is_some() {}
    }
    // Let the requests in flight finish (each is bounded by its timeout), so that stopping
    // the load does not cut them off half way.
    while in_flight.join_next().await.is_some() {}
}
