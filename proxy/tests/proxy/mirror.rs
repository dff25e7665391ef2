use std::time::Duration;

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_at_full_weight_copies_every_request_and_the_client_sees_stable() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(
        stable.addr,
        candidate.addr,
        0,
        "    mirror: { weight: 10000 }\n",
    ))
    .await;
    let client = h1_client();
    let expected = Digest::of_generated(100_000);
    for _ in 0..20 {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
        let req = upload(proxy.listen_addr(), 100_000);
        let (_, body, _) = send(&client, req).await;
        assert_eq!(String::from_utf8_lossy(&body), expected.answer());
    }
    eventually("every copy to reach the candidate", || async { candidate.hits() == 40 }).await;
    assert_eq!(stable.hits(), 40);
    eventually("the mirror's answers to be counted", || async {
        let metrics = admin_text(&proxy, "/metrics").await;
        sample(&metrics, r#"weir_requests_total{route="r",side="mirror",code="2xx"}"#) == Some(40.0)
    })
    .await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="r",side="candidate",code="2xx"}"#
        ),
        Some(0.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_sleeps_five_seconds_does_not_slow_the_client() {
    let stable = Backend::start("stable").await;
    let candidate = Backend::start_delayed("candidate", Duration::from_secs(5)).await;
    let proxy = start_proxy(&config_yaml(
        stable.addr,
        candidate.addr,
        0,
        "    mirror: { weight: 10000 }\n",
    ))
    .await;
    let client = h1_client();
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    }
    // Ten requests in all took less than one mirror's sleep: none of them waited for it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    eventually("the copies to arrive", || async { candidate.hits() == 10 }).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_mirror_limit_skips_the_mirror_but_not_the_request() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(
        stable.addr,
        candidate.addr,
        0,
        "    mirror: { weight: 10000, maxBodyBytes: 1024 }\n",
    );
    let proxy = start_proxy(&yaml).await;
    let expected = Digest::of_generated(1_000_000);
    let req = upload(proxy.listen_addr(), 1_000_000);
    let (parts, body, _) = send(&h1_client(), req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&body), expected.answer());
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_mirror_skipped_total{route="r",reason="body_too_large"}"#
        ),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_past_max_in_flight_are_skipped_and_counted() {
    let stable = Backend::start("stable").await;
    let candidate = Backend::start_delayed("candidate", Duration::from_secs(3)).await;
    let yaml = config_yaml(
        stable.addr,
        candidate.addr,
        0,
        "    mirror: { weight: 10000, maxInFlight: 2 }\n",
    );
    let proxy = start_proxy(&yaml).await;
    let client = h1_client();
    for _ in 0..6 {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    }
    eventually("two copies to arrive", || async { candidate.hits() == 2 }).await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_mirror_skipped_total{route="r",reason="max_in_flight"}"#
        ),
        Some(4.0),
        "{metrics}"
    );
    // Once the copies in flight are answered, there is room again.
    eventually("a place frees up", || async {
        send(&client, get(proxy.listen_addr(), "/")).await;
        candidate.hits() == 3
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_primary_ended_before_its_body_never_arrives_complete() {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A candidate that records, for each request, whether its body arrived whole.
    let outcomes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = Arc::clone(&outcomes);
    let candidate = Served::start(hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| {
            let seen = Arc::clone(&seen);
            async move {
                let whole = req.into_body().collect().await.is_ok();
                seen.lock().expect("lock").push(whole);
                Ok::<_, std::convert::Infallible>(http::Response::new(full("candidate")))
            }
        },
    ))
    .await;
    // A stable that answers as soon as the head arrives and closes, leaving the body unread
    // (as a server refusing an upload does): the primary is over before its body is.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stable = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut upstream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = upstream.read(&mut buf).await.expect("read");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = upstream
            .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    let yaml = config_yaml(stable, candidate.addr, 0, "    mirror: { weight: 10000 }\n");
    let proxy = start_proxy(&yaml).await;

    // A chunked upload whose client keeps the connection but has sent half its body.
    let mut client = within(tokio::net::TcpStream::connect(proxy.listen_addr()))
        .await
        .expect("connect");
    within(
        client.write_all(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    )
    .await
    .expect("write");
    let mut answer = [0u8; 12];
    within(client.read_exact(&mut answer))
        .await
        .expect("the primary's answer");
    assert_eq!(&answer, b"HTTP/1.1 413");

    eventually("the copy to be abandoned", || async {
        let metrics = admin_text(&proxy, "/metrics").await;
        sample(
            &metrics,
            r#"weir_mirror_skipped_total{route="r",reason="primary_aborted"}"#,
        ) == Some(1.0)
    })
    .await;
    // The copy may have been abandoned before it reached the candidate at all; what the
    // candidate must never see is a request that looks whole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = outcomes.lock().expect("lock").clone();
    assert!(
        seen.is_empty() || seen == [false],
        "the candidate saw a short request as whole: {seen:?}"
    );
    drop(client);
    proxy.shutdown().await;
}
