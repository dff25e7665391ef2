//! The metrics sources against real peers over loopback: real weir-proxies (two of them, one
//! restarted mid-window) for the proxy source, and Debian's Prometheus scraping a real proxy for
//! the PromQL source.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use weir::counters::Counters;
use weir::decide::Reading;
use weir::ports::{MetricsError, MetricsQuery};
use weir::source::prometheus::PrometheusSource;
use weir::source::proxies::ProxyScrape;
use weir_proxy::Proxy;

const DEADLINE: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("finished before the test deadline")
}

/// A backend answering `ok` (or 500 under `/fail`), on a free loopback port.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let mut rsp = http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
                if req.uri().path() == "/fail" {
                    *rsp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok::<_, std::convert::Infallible>(rsp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn config(stable: SocketAddr, candidate: SocketAddr, weight: u16, admin: &str, extra: &str) -> weir_proxy::ProxyConfig {
    weir_proxy::config::parse(&format!(
        "listen: 127.0.0.1:0\nadmin: {admin}\nroutes:\n  - name: r\n    stable: {{ backend: s }}\n    candidate: {{ backend: c }}\n    candidateWeight: {weight}\n{extra}backends:\n  s: {{ endpoints: [\"{stable}\"] }}\n  c: {{ endpoints: [\"{candidate}\"] }}\n"
    ))
    .expect("valid config")
}

type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &TestClient, proxy: &Proxy, path: &str, n: usize) {
    for _ in 0..n {
        let uri: http::Uri = format!("http://{}{path}", proxy.listen_addr()).parse().expect("uri");
        let rsp = within(client.get(uri)).await.expect("response");
        within(rsp.into_body().collect()).await.expect("body");
    }
}

async fn read(source: &ProxyScrape, since: Option<&weir::status::WindowMark>) -> Result<Reading, MetricsError> {
    let query = MetricsQuery {
        route: "r",
        since,
        promql: &[],
        users_epoch: None,
        now: SystemTime::now(),
    };
    within(source.read(&query)).await
}

fn requests(c: &Counters) -> (u64, u64) {
    (c.stable.requests, c.candidate.requests)
}

/// Item 5 of the review: with two proxies, one restarted mid-window, the window holds exactly
/// the requests sent in it. A difference of the summed counters would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_over_two_proxies_counts_exactly_when_one_restarts_mid_window() {
    let (stable, candidate) = (backend().await, backend().await);
    let a = Proxy::start(config(stable, candidate, 5000, "127.0.0.1:0", ""), "api")
        .await
        .expect("proxy a");
    let b = Proxy::start(config(stable, candidate, 5000, "127.0.0.1:0", ""), "api")
        .await
        .expect("proxy b");
    let b_admin = b.admin_addr();
    let source = ProxyScrape::new(vec![format!("http://{}", a.admin_addr()), format!("http://{b_admin}")]);
    let client = client();
    // History before the window: 400 requests through each.
    send(&client, &a, "/", 400).await;
    send(&client, &b, "/", 400).await;
    let start = read(&source, None).await.expect("metrics");
    assert!(start.window.is_none(), "the first look only marks the start");
    let mark = start.mark;

    // In the window: 100 through a; 30 through b, then b restarts and takes 300 more.
    send(&client, &a, "/", 100).await;
    send(&client, &b, "/", 30).await;
    b.shutdown().await;
    let b = Proxy::start(config(stable, candidate, 5000, &b_admin.to_string(), ""), "api")
        .await
        .expect("proxy b again, on the same admin address");
    send(&client, &b, "/", 300).await;

    let reading = read(&source, Some(&mark)).await.expect("metrics");
    let window = reading.window.expect("a window");
    // b's 30 before the restart are gone with its process; everything it counted since is in.
    assert_eq!(requests(&window), (200, 200), "{window:?}");
    // What subtracting the summed counters says: 800 before and 800 after, so nothing
    // happened, in a window of 430 requests.
    let totals = |m: &weir::status::WindowMark| m.instances.as_ref().expect("instances").total();
    let (before, after) = (totals(&mark), totals(&reading.mark));
    assert_eq!(before.stable.requests + before.candidate.requests, 800);
    assert_eq!(after.stable.requests + after.candidate.requests, 400 + 100 + 300);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_cannot_be_scraped_leaves_the_window_unread_and_says_which() {
    let (stable, candidate) = (backend().await, backend().await);
    let a = Proxy::start(config(stable, candidate, 0, "127.0.0.1:0", ""), "api")
        .await
        .expect("proxy");
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let source = ProxyScrape::new(vec![format!("http://{}", a.admin_addr()), format!("http://{gone}")]);
    let error = read(&source, None).await.expect_err("one proxy is down");
    let summary = error.summary().to_string();
    assert!(
        summary.starts_with(&format!("metrics source down: proxy http://{gone} is down")),
        "{summary}"
    );
    let only_other_routes = ProxyScrape::new(vec![format!("http://{}", a.admin_addr())]);
    let query = MetricsQuery {
        route: "missing",
        since: None,
        promql: &[],
        users_epoch: None,
        now: SystemTime::now(),
    };
    let error = within(only_other_routes.read(&query)).await.expect_err("no such route");
    assert!(matches!(error, MetricsError::NoData { .. }), "{error}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_fast_trip_reaches_the_reading_with_the_proxys_numbers() {
    let stable = backend().await;
    let candidate = backend().await;
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 10 }\n";
    let proxy = Proxy::start(config(stable, candidate, 10_000, "127.0.0.1:0", fail_fast), "api")
        .await
        .expect("proxy");
    let source = ProxyScrape::new(vec![format!("http://{}", proxy.admin_addr())]);
    let mark = read(&source, None).await.expect("metrics").mark;
    send(&client(), &proxy, "/fail", 12).await;
    let reading = read(&source, Some(&mark)).await.expect("metrics");
    assert_eq!(reading.window.expect("window").fail_fast_trips, 1);
    assert_eq!(reading.trips.len(), 1, "{:?}", reading.trips);
    assert!(
        reading.trips[0].ends_with("10 of 10 candidate requests failed within 30s (limit 0.5)"),
        "{:?}",
        reading.trips
    );
    proxy.shutdown().await;
}

/// The PromQL source against Debian's Prometheus, scraping a real proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_exact_windows_per_instance_and_runs_custom_checks() {
    weir_test_tools::debian_tool("prometheus", "prometheus").unwrap_or_else(|e| panic!("{e:#}"));
    let (stable, candidate) = (backend().await, backend().await);
    let proxy = Proxy::start(config(stable, candidate, 5000, "127.0.0.1:0", ""), "api")
        .await
        .expect("proxy");
    let local = within(weir::demo::prometheus::LocalPrometheus::start(&[proxy.admin_addr()]))
        .await
        .expect("Prometheus starts and scrapes the proxy");
    let source = PrometheusSource::new(&local.url).expect("client");
    let first = MetricsQuery {
        route: "r",
        since: None,
        promql: &[],
        users_epoch: None,
        now: SystemTime::now(),
    };
    let start = within(source.read(&first))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", local.log_tail()));
    assert!(start.window.is_none(), "the first look only marks the start");
    let mark = start.mark;
    let client = client();
    // The custom query's increase() sees only what happens between the samples inside its
    // range: wait for a scrape of the quiet proxy to land in the window before the traffic.
    let scraped = vec!["count_over_time(weir_proxy_start_time_seconds[{{window}}])".to_owned()];
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let query = MetricsQuery {
            route: "r",
            since: Some(&mark),
            promql: &scraped,
            users_epoch: None,
            now: SystemTime::now(),
        };
        let reading = within(source.read(&query)).await.expect("metrics");
        if reading.promql[0].as_ref().is_ok_and(|n| *n >= 1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "Prometheus scraped nothing: {}",
            local.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&client, &proxy, "/", 200).await;
    send(&client, &proxy, "/fail", 20).await;
    let promql = vec![
        "sum(increase(weir_requests_total{route=\"{{route}}\",code=\"5xx\"}[{{window}}]))".to_owned(),
        "sum(rate(weir_requests_total{route=\"{{route}}\"}[{{window}}])) +".to_owned(),
        "weir_requests_total{route=\"nothing-like-this\"}".to_owned(),
    ];
    // Wait for Prometheus' last scrape to hold every request.
    let until = tokio::time::Instant::now() + DEADLINE;
    let (reading, window) = loop {
        let query = MetricsQuery {
            route: "r",
            since: Some(&mark),
            promql: &promql,
            users_epoch: None,
            now: SystemTime::now(),
        };
        let reading = within(source.read(&query))
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", local.log_tail()));
        let window = reading.window.clone().expect("window");
        if window.stable.requests + window.candidate.requests >= 220 {
            break (reading, window);
        }
        assert!(tokio::time::Instant::now() < until, "{window:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Differenced per instance from the mark: exactly what was sent, no extrapolation.
    assert_eq!(window.stable.requests + window.candidate.requests, 220, "{window:?}");
    assert_eq!(window.stable.errors + window.candidate.errors, 20, "{window:?}");
    assert_eq!(window.candidate.latency.total(), window.candidate.requests);
    assert_eq!(window.stable.first_byte.total(), window.stable.requests);
    let instances = reading.mark.instances.as_ref().expect("instances");
    assert_eq!(instances.weights(), vec![5000], "the proxy's weight gauge is read");
    assert!(instances.instances.values().all(|i| i.started_at.is_some()));
    // A custom query's increase() does extrapolate: close to, not exactly, 20.
    let five = reading.promql[0].as_ref().expect("a value");
    assert!((15.0..=30.0).contains(five), "{five}");
    let bad = reading.promql[1].as_ref().expect_err("a syntax error");
    assert!(
        bad.contains("metrics source down") && bad.contains("(query \"sum(rate("),
        "{bad}"
    );
    let empty = reading.promql[2].as_ref().expect_err("no data");
    assert!(empty.starts_with("it returned no data (query"), "{empty}");

    // A route Prometheus has never seen is no data, with the query in the reason.
    let query = MetricsQuery {
        route: "missing",
        since: Some(&mark),
        promql: &[],
        users_epoch: None,
        now: SystemTime::now(),
    };
    let error = within(source.read(&query)).await.expect_err("no data");
    let summary = error.summary().to_string();
    assert!(
        summary.starts_with("no metrics for the route: Prometheus at"),
        "{summary}"
    );
    assert!(summary.contains("route=\\\"missing\\\""), "{summary}");

    // A Prometheus that is not there is a source down.
    let gone = PrometheusSource::new("http://127.0.0.1:9").expect("client");
    let error = within(gone.read(&query)).await.expect_err("down");
    assert!(matches!(error, MetricsError::SourceDown { .. }), "{error}");
    proxy.shutdown().await;
}

/// A trip at one proxy must stop the rollout even while another proxy cannot be scraped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_is_reported_even_when_another_proxy_is_down() {
    let (stable, candidate) = (backend().await, backend().await);
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 5 }\n";
    let a = Proxy::start(config(stable, candidate, 10_000, "127.0.0.1:0", fail_fast), "api")
        .await
        .expect("proxy a");
    let b = Proxy::start(config(stable, candidate, 10_000, "127.0.0.1:0", fail_fast), "api")
        .await
        .expect("proxy b");
    let source = ProxyScrape::new(vec![
        format!("http://{}", a.admin_addr()),
        format!("http://{}", b.admin_addr()),
    ]);
    let mark = read(&source, None).await.expect("metrics").mark;
    b.shutdown().await;
    send(&client(), &a, "/fail", 6).await;
    let error = read(&source, Some(&mark)).await.expect_err("b is down");
    match error.summary() {
        weir::decide::MetricsUnavailable::SourceDown { trips, .. } => {
            assert_eq!(trips.len(), 1, "{trips:?}");
            assert!(trips[0].contains("5 of 5 candidate requests failed"), "{trips:?}");
        }
        other => panic!("{other}"),
    }
    a.shutdown().await;
}
