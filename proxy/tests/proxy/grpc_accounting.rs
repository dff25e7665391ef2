//! Answers that look fine in their head and are not: a gRPC answer without a status, a
//! `grpc-status: 0` in headers that trailers contradict, a gRPC call answered with HTML, a
//! stream that goes silent after its head. Each is counted against the side that gave it,
//! from a raw HTTP/2 backend that sends exactly those frames.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::support::*;

fn grpc_head(rsp: &mut Response<BoxBody>) {
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
}

/// A body of one data frame, then trailers if given, then its end; or, with `hang`, one data
/// frame and nothing more, ever (the sender is kept alive by the task holding it).
fn frames(trailers: Option<HeaderMap>, hang: bool) -> BoxBody {
    let (tx, rx) = mpsc::channel(2);
    tx.try_send(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("room");
    if let Some(trailers) = trailers {
        tx.try_send(Frame::trailers(trailers)).expect("room");
    }
    if hang {
        tokio::spawn(async move {
            tx.closed().await;
        });
    }
    ChannelBody(rx).boxed()
}

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut rsp = match path.as_str() {
        // DATA with END_STREAM, no trailers: no status at all.
        "/no-status" => Response::new(full(Bytes::from_static(b"\0\0\0\0\0"))),
        // grpc-status 0 in the head, 14 in the trailers that follow.
        "/contradicted" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("14"));
            let mut rsp = Response::new(frames(Some(trailers), false));
            rsp.headers_mut().insert("grpc-status", HeaderValue::from_static("0"));
            rsp
        }
        "/hang" => Response::new(frames(None, true)),
        // A plain answer with a content-length, its end flagged by an empty DATA frame after
        // the last data (as streaming servers send it).
        "/sized" => {
            let (tx, rx) = mpsc::channel(1);
            tx.try_send(Frame::data(Bytes::from_static(b"sized"))).expect("room");
            let mut rsp = Response::new(ChannelBody(rx).boxed());
            rsp.headers_mut()
                .insert("content-length", HeaderValue::from_static("5"));
            return Ok(rsp);
        }
        _ => {
            let mut rsp = Response::new(full("<html>not gRPC</html>"));
            rsp.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/html"));
            return Ok(rsp);
        }
    };
    grpc_head(&mut rsp);
    Ok(rsp)
}

/// An h2c (and h1) backend answering by path with crafted frames; stops when dropped.
async fn crafted() -> Served {
    Served::start(hyper::service::service_fn(answer)).await
}

fn config(stable: SocketAddr, candidate: SocketAddr, protocol: &str, timeout: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: r\n    stable: {{ backend: s }}\n    candidate: {{ backend: c }}\n    \
         candidateWeight: 10000\n    timeout: {timeout}\nbackends:\n  s: {{ endpoints: [\"{stable}\"] }}\n  \
         c: {{ endpoints: [\"{candidate}\"], protocol: {protocol} }}\n"
    )
}

fn grpc_call(addr: SocketAddr, path: &str) -> Request<BoxBody> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("valid request")
}

async fn candidate_count(proxy: &weir_proxy::Proxy, code: &str) -> Option<f64> {
    let metrics = admin_text(proxy, "/metrics").await;
    sample(
        &metrics,
        &format!(r#"weir_requests_total{{route="r",side="candidate",code="{code}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_whose_verdict_is_missing_or_contradicted_are_grpc_errors() {
    let stable = Backend::start("stable").await;
    let candidate = crafted().await;
    let proxy = start_proxy(&config(stable.addr, candidate.addr, "h2c", "5s")).await;
    let client = h2c_client();
    for path in ["/no-status", "/contradicted", "/html"] {
        let rsp = within(client.request(grpc_call(proxy.listen_addr(), path)))
            .await
            .expect("an answer");
        let _ = within(rsp.into_body().collect()).await;
    }
    eventually("three grpc errors", || async {
        candidate_count(&proxy, "grpc_error").await == Some(3.0)
    })
    .await;
    assert_eq!(candidate_count(&proxy, "2xx").await, Some(0.0));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_goes_silent_after_its_head_is_cut_off_as_an_error() {
    let stable = Backend::start("stable").await;
    // The test backend's /stream sends one event, then waits for a release that never comes.
    let candidate = Backend::start("candidate").await;
    let proxy = start_proxy(&config(stable.addr, candidate.addr, "h1", "1s")).await;
    let rsp = within(h1_client().request(get(proxy.listen_addr(), "/stream")))
        .await
        .expect("the head arrives");
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(
        within(rsp.into_body().collect()).await.is_err(),
        "the client sees the stream cut off, not a hang and not a clean end"
    );
    eventually("the error", || async {
        candidate_count(&proxy, "error").await == Some(1.0)
    })
    .await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_upstream_errors_total{route="r",side="candidate",kind="timeout"}"#
        ),
        Some(1.0)
    );
    assert_eq!(candidate_count(&proxy, "2xx").await, Some(0.0));

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_is_not_cut_off_by_the_route_timeout() {
    // A gRPC server stream may be long-lived, and a bidirectional one waits on its client:
    // silence is theirs to judge, with the call's deadline.
    let stable = Backend::start("stable").await;
    let candidate = crafted().await;
    let proxy = start_proxy(&config(stable.addr, candidate.addr, "h2c", "1s")).await;
    let rsp = within(h2c_client().request(grpc_call(proxy.listen_addr(), "/hang")))
        .await
        .expect("the head arrives");
    let mut body = rsp.into_body();
    within(body.frame()).await.expect("a frame").expect("the first message");
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(2500), body.frame()).await;
    assert!(quiet.is_err(), "still open after twice the route timeout: {quiet:?}");
    drop(body);
    cancelled_not_failed(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_cancelled_but_cuts_nothing_off() {
    // Users stop a generation half way all the time: that is not the candidate failing, so
    // it never trips fail-fast; but a candidate whose streams stall until clients give up
    // shows as more cancellations than stable's.
    let stable = Backend::start("stable").await;
    let candidate = Backend::start("candidate").await;
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 2 }\n";
    let yaml = config(stable.addr, candidate.addr, "h1", "30s").replace("backends:", &format!("{fail_fast}backends:"));
    let proxy = start_proxy(&yaml).await;
    let client = h1_client();
    for _ in 0..3 {
        let rsp = within(client.request(get(proxy.listen_addr(), "/stream")))
            .await
            .expect("the head arrives");
        let mut body = rsp.into_body();
        within(body.frame()).await.expect("a frame").expect("the first event");
        drop(body);
    }
    eventually("three cancellations", || async {
        candidate_count(&proxy, "cancelled").await == Some(3.0)
    })
    .await;
    assert_eq!(candidate_count(&proxy, "2xx").await, Some(0.0));
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(sample(&metrics, r#"weir_fail_fast_trips_total{route="r"}"#), Some(0.0));
    // Streams read to their end are answers.
    candidate.release();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_the_client_set_is_its_own_cancellation_not_an_error_of_the_side() {
    // A client's grpc-timeout of 1 ns is the client giving up, whatever side it is on: it
    // must not raise either side's errors (an attacker pinned to stable could hide a bad
    // candidate behind them).
    let stable = Backend::start("stable").await;
    let candidate = crafted().await;
    let proxy = start_proxy(&config(stable.addr, candidate.addr, "h2c", "5s")).await;
    let mut call = grpc_call(proxy.listen_addr(), "/hang");
    call.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("1n"));
    let (parts, _, trailers) = send(&h2c_client(), call).await;
    assert_eq!(parts.status, StatusCode::OK);
    let status = parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .cloned();
    assert_eq!(status, Some(HeaderValue::from_static("4")), "DEADLINE_EXCEEDED");
    cancelled_not_failed(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sized_answer_read_whole_is_an_answer_even_if_its_end_comes_after_its_bytes() {
    // An HTTP/1.1 client is done once content-length bytes arrived; hyper stops reading the
    // upstream body there, before the h2 upstream's end-of-stream: that is no cancellation.
    let stable = Backend::start("stable").await;
    let candidate = crafted().await;
    let proxy = start_proxy(&config(stable.addr, candidate.addr, "h2c", "5s")).await;
    let client = h1_client();
    for _ in 0..3 {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/sized")).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"sized"[..]));
    }
    eventually("three answers", || async {
        candidate_count(&proxy, "2xx").await == Some(3.0)
    })
    .await;
    assert_eq!(candidate_count(&proxy, "cancelled").await, Some(0.0));
    proxy.shutdown().await;
}

/// Waits for the candidate's one request to be counted `cancelled`, and checks it was not
/// counted an error.
async fn cancelled_not_failed(proxy: &weir_proxy::Proxy) {
    eventually("a cancellation", || async {
        candidate_count(proxy, "cancelled").await == Some(1.0)
    })
    .await;
    assert_eq!(candidate_count(proxy, "error").await, Some(0.0));
}
