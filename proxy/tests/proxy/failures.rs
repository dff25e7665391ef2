use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends raw bytes on a new connection and returns everything the proxy answers.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    within(stream.write_all(request)).await.expect("write");
    let mut answer = Vec::new();
    // The proxy closes the connection after an error it made for a bad request or we read
    // until the first response is complete enough to judge.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_gives_502_at_once_and_is_counted() {
    let dead_addr = dead_addr().await;
    let candidate = Backend::start("candidate").await;
    let proxy = start_proxy(&config_yaml(dead_addr, candidate.addr, 0, "")).await;
    for client in [h1_client(), h2c_client()] {
        let rsp = tokio::time::timeout(Duration::from_secs(1), client.request(get(proxy.listen_addr(), "/")))
            .await
            .expect("a refused connection is answered within a second, never a hang")
            .expect("response");
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()["x-weir-error"], "upstream-connect");
    }
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_upstream_errors_total{route="r",side="stable",kind="connect"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, r#"weir_requests_total{route="r",side="stable",code="error"}"#),
        Some(2.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_past_the_timeout_gives_504() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "    timeout: 200ms\n");
    let proxy = start_proxy(&yaml).await;
    let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/slow/3000")).await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(parts.headers["x-weir-error"], "upstream-timeout");
    let (parts, body, _) = send(&h1_client(), get(proxy.listen_addr(), "/slow/10")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"slow"[..]));
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_upstream_errors_total{route="r",side="stable",kind="timeout"}"#
        ),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_gives_404() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "").replace("pathPrefix: /", "pathPrefix: /api");
    let proxy = start_proxy(&yaml).await;
    let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/other")).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(parts.headers["x-weir-error"], "no-route");
    let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/api/x")).await;
    assert_eq!(parts.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_never_reach_a_backend() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let addr = proxy.listen_addr();

    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-weir-error: missing-host"),
        "{answer}"
    );

    let big = "a".repeat(70 * 1024);
    let answer = raw_exchange(
        addr,
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-weir-error: headers-too-large"),
        "{answer}"
    );

    // Malformed at the parser: hyper answers 400 itself and closes the connection.
    let answer = raw_exchange(addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    assert_eq!(stable.hits() + candidate.hits(), 0);
    // The listener keeps serving after all that.
    let (parts, _, _) = send(&h1_client(), get(addr, "/")).await;
    assert_eq!(parts.status, StatusCode::OK);
    proxy.shutdown().await;
}
