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
    /// Requests sent again after a GOAWAY refused them unprocessed.
    pub retried: AtomicU64,
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
                let outcome = request(&client, addr, &tally).await;
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

/// One GET, checked. A request that an HTTP/2 GOAWAY refused before it was sent is sent
/// again, once: RFC 9113 section 6.8 says it was not processed and may be retried, and
/// browsers, Go's and gRPC's clients do so by themselves (hyper's pooled client does not).
async fn request(client: &TestClient, addr: SocketAddr, tally: &Tally) -> Result<(), String> {
    let mut retried = false;
    loop {
        let rsp = match tokio::time::timeout(Duration::from_secs(10), client.request(get(addr, "/"))).await {
            Err(_) => return Err("no answer in 10 s".to_owned()),
            Ok(Err(error)) if !retried && refused_unprocessed(&error) => {
                retried = true;
                tally.retried.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Err(error)) => return Err(format!("request: {error:?}")),
            Ok(Ok(rsp)) => rsp,
        };
        let status = rsp.status();
        let backend = rsp.headers().get("x-backend").cloned();
        return match http_body_util::BodyExt::collect(rsp.into_body()).await {
            Ok(_) if status == StatusCode::OK && backend.is_some() => Ok(()),
            Ok(_) => Err(format!("status {status}, backend {backend:?}")),
            Err(error) => Err(format!("body: {error}")),
        };
    }
}

/// Whether a request failed because the server's GOAWAY (a graceful one, NO_ERROR) refused
/// it before it was sent.
fn refused_unprocessed(error: &hyper_util::client::legacy::Error) -> bool {
    weir_proxy::cause::find::<h2::Error>(error)
        .is_some_and(|h2| h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
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

/// Set in the environment of this test binary when it runs inside the network namespace the
/// rolling-restart test made.
const IN_NETNS: &str = "WEIR_TEST_IN_NETNS";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_proxies_sharing_a_port_loses_no_request() {
    const NAME: &str = "zero_loss::a_rolling_restart_of_two_proxies_sharing_a_port_loses_no_request";
    if std::env::var_os(IN_NETNS).is_none() {
        // Linux resets the connections still queued on a listener that closes, unless
        // net.ipv4.tcp_migrate_req hands them to another listener of the port. The setting
        // belongs to a network namespace: the test makes its own (loopback only) and runs
        // itself again inside it.
        let script = "ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && exec \"$@\"";
        let exe = std::env::current_exe().expect("the test binary");
        let output = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sh", "-c", script, "sh"])
            .arg(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads", "1"])
            .env(IN_NETNS, "1")
            .env(
                "PATH",
                format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default()),
            )
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare ({e}): {}", weir_test_tools::apt_install_line()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && text.contains("1 passed"),
            "inside its network namespace (made with unshare and ip: {}):\n{text}",
            weir_test_tools::apt_install_line()
        );
        for line in text.lines().filter(|l| l.starts_with("zero loss")) {
            eprintln!("{line}");
        }
        return;
    }

    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    let yaml = config_yaml(stable.addr, candidate.addr, 5000, "").replace(
        "listen: 127.0.0.1:0\n",
        &format!("listen: 127.0.0.1:{port}\nreusePort: true\n"),
    );
    std::fs::write(&path, yaml).expect("write config");
    let old = crate::binary::start_binary(&path, &[], &[]);
    let new = crate::binary::start_binary(&path, &[], &[]);
    assert_eq!(old.listen, new.listen, "both on one port");

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let load = tokio::spawn(load(
        old.listen,
        started + Duration::from_secs(6),
        60_000,
        Arc::clone(&tally),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    old.signal("TERM");
    let (status, log) = old.exited().await;
    assert!(status.success(), "the old proxy drained and exited 0: {log:#?}");
    let failures = within(load).await.expect("load task");
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!(
        "zero loss: {ok} requests in {:.1} s across a rolling restart, {failed} failed, {} sent again after a GOAWAY refused them unprocessed",
        started.elapsed().as_secs_f64(),
        tally.retried.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "failures: {failures:?}");
    assert!(ok > 1000, "the load ran: {ok}");
    new.signal("TERM");
    let (status, _) = new.exited().await;
    assert!(status.success());
}
