//! Zero lost requests while the config changes under load: every request sent during 100
//! reloads (weights moving, a route added and removed) gets its answer. The load is bounded
//! in time and count and stops by itself; only loopback is used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use weir_proxy::{Proxy, Weight, config};

use crate::support::*;

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Requests/s the load aims at, over all its connections.
const RATE: u64 = 5000;
/// Connections the load spreads over: half HTTP/1.1 keep-alive, half h2c.
const CONNECTIONS: u64 = 32;

/// Sends GETs to `addr` at up to [`RATE`] requests/s until `until` passes or `max` requests
/// were sent; each must be a 200 from one of the test backends. Returns the first few
/// failures, described.
pub async fn load(addr: SocketAddr, until: Instant, max: u64, tally: Arc<Tally>) -> Vec<String> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS {
        let (tally, sent) = (Arc::clone(&tally), Arc::clone(&sent));
        tasks.spawn(async move {
            let client = if i % 2 == 0 { h1_client() } else { h2c_client() };
            let mut failures = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 * CONNECTIONS / RATE));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < until && sent.fetch_add(1, Ordering::Relaxed) < max {
                ticks.tick().await;
                let outcome = match tokio::time::timeout(Duration::from_secs(10), client.request(get(addr, "/"))).await
                {
                    Ok(Ok(rsp)) => {
                        let status = rsp.status();
                        let backend = rsp.headers().get("x-backend").cloned();
                        match http_body_util::BodyExt::collect(rsp.into_body()).await {
                            Ok(_) if status == StatusCode::OK && backend.is_some() => Ok(()),
                            Ok(_) => Err(format!("status {status}, backend {backend:?}")),
                            Err(error) => Err(format!("body: {error}")),
                        }
                    }
                    Ok(Err(error)) => Err(format!("request: {error:?}")),
                    Err(_) => Err("no answer in 10 s".to_owned()),
                };
                match outcome {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(failure) => {
                        if failures.len() < 5 {
                            failures.push(failure);
                        }
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(task) = tasks.join_next().await {
        failures.extend(task.expect("a load task"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_lose_no_request() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let extra = Backend::start("extra").await;
    let base = config::parse(&config_yaml(stable.addr, candidate.addr, 0, "")).expect("valid");
    // The same, with a second route (and its backend) that comes and goes.
    let mut with_extra = base.clone();
    let extra_part = config::parse_partial(&format!(
        "routes:\n  - {{ name: extra, match: {{ host: extra.test }}, stable: {{ backend: x }} }}\n\
         backends:\n  x: {{ endpoints: [\"{}\"] }}\n",
        extra.addr
    ))
    .expect("valid");
    with_extra.routes.extend(extra_part.routes);
    with_extra.backends.extend(extra_part.backends);
    let proxy = Proxy::start(base.clone(), "api").await.expect("starts");
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let load = tokio::spawn(load(
        proxy.listen_addr(),
        started + Duration::from_secs(9),
        60_000,
        Arc::clone(&tally),
    ));

    for i in 0..100u16 {
        let mut next = if i % 3 == 0 { with_extra.clone() } else { base.clone() };
        next.route_mut("r").expect("route").candidate_weight =
            Weight::new(u16::try_from((u32::from(i) * 997) % 10_001).expect("in range")).expect("in range");
        proxy.apply(next).expect("each reload is accepted");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let failures = within(load).await.expect("load task");
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!(
        "zero loss: {ok} requests in {elapsed:.1} s ({:.0}/s) over 100 reloads, {failed} failed",
        ok as f64 / elapsed
    );
    assert_eq!(failed, 0, "failures: {failures:?}");
    assert!(ok > 1000, "the load ran: {ok}");
    assert_eq!(proxy.state().table().expect("a table").version, 101);
    proxy.shutdown().await;
}
