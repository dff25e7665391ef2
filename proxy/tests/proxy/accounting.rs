//! Every request is counted once, by how it ended: a client that leaves before the response
//! head is `cancelled`, a body that breaks after a 2xx head is an `error`, and both feed
//! fail-fast. Real clients and backends over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

fn series(name: &str, side: &str, code: &str) -> String {
    format!(r#"{name}{{route="r",side="{side}",code="{code}"}}"#)
}

async fn metric(proxy: &weir_proxy::Proxy, series: &str) -> Option<f64> {
    sample(&admin_text(proxy, "/metrics").await, series)
}

async fn wait_for_hits(backend: &Backend, n: usize) {
    eventually("the request to reach the backend", || async { backend.hits() >= n }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_leaves_before_the_head_is_counted_cancelled_with_its_time() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    within(stream.write_all(b"GET /slow/20000 HTTP/1.1\r\nhost: model\r\n\r\n"))
        .await
        .expect("write");
    wait_for_hits(&stable, 1).await;
    drop(stream);
    eventually("a cancelled request", || async {
        metric(&proxy, &series("weir_requests_total", "stable", "cancelled")).await == Some(1.0)
    })
    .await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_request_duration_seconds_count{route="r",side="stable"}"#
        ),
        Some(1.0),
        "its elapsed time is observed"
    );
    assert_eq!(
        sample(&metrics, &series("weir_requests_total", "stable", "2xx")),
        Some(0.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_reset_before_the_head_is_counted_cancelled() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 10_000, "")).await;
    let client = h2c_client();
    // Warm the connection, so that dropping the request below resets a stream rather than
    // abandoning a handshake.
    let (parts, _, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let request = tokio::spawn({
        let client = client.clone();
        let req = get(proxy.listen_addr(), "/slow/20000");
        async move { client.request(req).await }
    });
    wait_for_hits(&candidate, 2).await;
    // Dropping the response future makes hyper send RST_STREAM(CANCEL).
    request.abort();
    eventually("a cancelled request", || async {
        metric(&proxy, &series("weir_requests_total", "candidate", "cancelled")).await == Some(1.0)
    })
    .await;
    proxy.shutdown().await;
}

/// A backend that answers every request with a 200 head and one chunk of a chunked body, then
/// closes the connection: a model server dying mid-stream.
async fn dying_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n10\r\ndata: token 0\n\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Gone without the last chunk.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_response_resets_the_h2_clients_stream_and_counts_against_its_side() {
    let stable = Backend::start("stable").await;
    let dying = dying_backend().await;
    let proxy = start_proxy(&config_yaml(stable.addr, dying, 10_000, "")).await;
    let rsp = within(h2c_client().request(get(proxy.listen_addr(), "/v1/generate")))
        .await
        .expect("the head arrives");
    assert_eq!(rsp.status(), StatusCode::OK);
    let broken = within(rsp.into_body().collect())
        .await
        .expect_err("the stream is reset, not ended");
    let reset = weir_proxy::cause::find::<h2::Error>(&broken).and_then(h2::Error::reason);
    assert!(reset.is_some(), "an h2 reset: {broken:?}");
    eventually("the error counted against the candidate", || async {
        metric(&proxy, &series("weir_requests_total", "candidate", "error")).await == Some(1.0)
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_after_a_2xx_head_is_an_error_and_trips_fail_fast() {
    let stable = Backend::start("stable").await;
    let dying = dying_backend().await;
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 3 }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, dying, 10_000, fail_fast)).await;
    let client = h1_client();
    for _ in 0..3 {
        let rsp = within(client.request(get(proxy.listen_addr(), "/v1/generate")))
            .await
            .expect("the head arrives");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["x-weir-side"], "candidate");
        assert!(
            within(rsp.into_body().collect()).await.is_err(),
            "the client sees the stream break, not a clean end"
        );
    }
    eventually("three errors", || async {
        metric(&proxy, &series("weir_requests_total", "candidate", "error")).await == Some(3.0)
    })
    .await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(&metrics, &series("weir_requests_total", "candidate", "2xx")),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"weir_upstream_errors_total{route="r",side="candidate",kind="reset"}"#
        ),
        Some(3.0)
    );
    assert_eq!(sample(&metrics, r#"weir_fail_fast_trips_total{route="r"}"#), Some(1.0));
    let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_candidate_whose_clients_give_up_trips_fail_fast() {
    let stable = Backend::start("stable").await;
    let hung = Backend::start_delayed("candidate", Duration::from_secs(60)).await;
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 4 }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, hung.addr, 10_000, fail_fast)).await;
    let client = h1_client();
    for i in 1..=4 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            client.request(get(proxy.listen_addr(), "/v1/generate")),
        )
        .await;
        assert!(gave_up.is_err(), "the hung candidate never answers");
        wait_for_hits(&hung, i).await;
    }
    eventually("the trip", || async {
        metric(&proxy, r#"weir_fail_fast_trips_total{route="r"}"#).await == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(&proxy, &series("weir_requests_total", "candidate", "cancelled")).await,
        Some(4.0)
    );
    let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    assert_eq!(parts.headers["x-weir-fail-fast"], "1");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pass_its_request_off_as_a_mirror_copy() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let mut req = get(proxy.listen_addr(), "/");
    req.headers_mut()
        .insert("x-weir-mirror", http::HeaderValue::from_static("1"));
    req.headers_mut()
        .insert("x-custom", http::HeaderValue::from_static("kept"));
    let (parts, _, _) = send(&h1_client(), req).await;
    assert_eq!(parts.headers["x-seen-custom"], "kept");
    assert!(
        !parts.headers.contains_key("x-seen-mirror"),
        "the client's x-weir-mirror is stripped"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_request_body_breaks_gets_400_and_no_side_is_blamed() {
    // A malformed chunked body is the client's doing: counted against either side, a client
    // pinned to stable could raise stable's errors and hide a bad candidate.
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    for protocol in ["h1", "h2c"] {
        let yaml = config_yaml(stable.addr, candidate.addr, 0, "").replace(
            &format!("s: {{ endpoints: [\"{}\"] }}", stable.addr),
            &format!("s: {{ endpoints: [\"{}\"], protocol: {protocol} }}", stable.addr),
        );
        let proxy = start_proxy(&yaml).await;
        let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
        within(stream.write_all(BROKEN_UPLOAD)).await.expect("write");
        let mut answer = Vec::new();
        let _ = within(stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{protocol}: {answer}");
        assert!(
            answer.contains("x-weir-error: bad-request-body"),
            "{protocol}: {answer}"
        );
        eventually("the request to be counted", || async {
            metric(&proxy, &series("weir_requests_total", "stable", "cancelled")).await == Some(1.0)
        })
        .await;
        let metrics = admin_text(&proxy, "/metrics").await;
        assert_eq!(
            sample(&metrics, &series("weir_requests_total", "stable", "error")),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &metrics,
                r#"weir_upstream_errors_total{route="r",side="stable",kind="reset"}"#
            ),
            Some(0.0)
        );
        proxy.shutdown().await;
    }

    // Pinned to the candidate, broken bodies trip nothing either.
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 2 }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 10_000, fail_fast)).await;
    for _ in 0..3 {
        let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
        within(stream.write_all(BROKEN_UPLOAD)).await.expect("write");
        let mut answer = Vec::new();
        let _ = within(stream.read_to_end(&mut answer)).await;
    }
    eventually("three cancellations", || async {
        metric(&proxy, &series("weir_requests_total", "candidate", "cancelled")).await == Some(3.0)
    })
    .await;
    assert_eq!(
        metric(&proxy, r#"weir_fail_fast_trips_total{route="r"}"#).await,
        Some(0.0)
    );
    proxy.shutdown().await;
}

/// A chunked upload whose second chunk size is garbage.
const BROKEN_UPLOAD: &[u8] =
    b"POST /slow/2000 HTTP/1.1\r\nhost: model\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n";
