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
