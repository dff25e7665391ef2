use http::StatusCode;
use weir_proxy::config;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_cut_off_after_min_requests_and_stays_off() {
    let stable = Backend::start("stable").await;
    let dead_addr = dead_addr().await;
    let fail_fast = "    failFast: { errorRatio: 0.5, window: 30s, minRequests: 20 }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, dead_addr, 5000, fail_fast)).await;
    let client = h1_client();

    let (mut failed, mut diverted) = (0, 0);
    for _ in 0..200 {
        let (parts, _, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        match parts.status {
            StatusCode::BAD_GATEWAY => failed += 1,
            StatusCode::OK => {
                assert_eq!(parts.headers["x-weir-side"], "stable");
                diverted += usize::from(parts.headers.get("x-weir-fail-fast").is_some_and(|v| v == "1"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        failed, 20,
        "exactly minRequests candidate requests fail before the trip"
    );
    assert_eq!(
        diverted, 80,
        "half of the remaining 180 would have gone to the candidate"
    );

    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(sample(&metrics, r#"weir_fail_fast_trips_total{route="r"}"#), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="r",side="candidate",code="error"}"#
        ),
        Some(20.0)
    );
    let view: serde_json::Value = serde_json::from_str(&admin_text(&proxy, "/config").await).expect("JSON");
    let trip = &view["failFast"]["r"]["tripped"];
    assert_eq!(
        (trip["requests"].as_u64(), trip["errors"].as_u64()),
        (Some(20), Some(20)),
        "{view}"
    );
    assert_eq!(trip["errorRatioLimit"], 0.5);

    // A weight change keeps the trip: the candidate is the same.
    proxy
        .apply(config::parse(&config_yaml(stable.addr, dead_addr, 10_000, fail_fast)).expect("valid"))
        .expect("applies");
    let (parts, _, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!(
        (parts.status, parts.headers["x-weir-side"].as_bytes()),
        (StatusCode::OK, &b"stable"[..])
    );
    assert_eq!(parts.headers["x-weir-fail-fast"], "1");

    // New endpoints for the same candidate keep it: a crash-looping candidate's pods come and
    // go, and that must not clear the trip its failures caused.
    let candidate = Backend::start("candidate").await;
    proxy
        .apply(config::parse(&config_yaml(stable.addr, candidate.addr, 10_000, fail_fast)).expect("valid"))
        .expect("applies");
    let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    assert_eq!(parts.headers["x-weir-fail-fast"], "1");

    // A new revision of the candidate clears it.
    let revised = config_yaml(stable.addr, candidate.addr, 10_000, fail_fast).replace(
        "candidate: { backend: c }",
        "candidate: { backend: c, revision: 5c1a9e }",
    );
    proxy.apply(config::parse(&revised).expect("valid")).expect("applies");
    let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"candidate"[..]));
    assert!(!parts.headers.contains_key("x-weir-fail-fast"));
    let view: serde_json::Value = serde_json::from_str(&admin_text(&proxy, "/config").await).expect("JSON");
    assert!(view["failFast"]["r"]["tripped"].is_null(), "{view}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_sticky_users_go_to_stable_once_tripped() {
    let stable = Backend::start("stable").await;
    let candidate = Backend::start("candidate").await;
    let rules = "    overrides:\n      - { header: x-force, equals: candidate, side: candidate }\n    sticky: { header: x-user-id }\n    failFast: { errorRatio: 0.5, window: 30s, minRequests: 5 }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, rules)).await;
    let client = h1_client();
    for _ in 0..5 {
        let mut req = get(proxy.listen_addr(), "/status/500");
        req.headers_mut()
            .insert("x-force", http::HeaderValue::from_static("candidate"));
        let (parts, _, _) = send(&client, req).await;
        assert_eq!(
            (parts.status, parts.headers["x-weir-side"].as_bytes()),
            (StatusCode::INTERNAL_SERVER_ERROR, &b"candidate"[..])
        );
    }
    let mut req = get(proxy.listen_addr(), "/");
    req.headers_mut()
        .insert("x-force", http::HeaderValue::from_static("candidate"));
    let (parts, body, _) = send(&client, req).await;
    assert_eq!(
        &body[..],
        b"stable",
        "the override no longer reaches the tripped candidate"
    );
    assert_eq!(parts.headers["x-weir-fail-fast"], "1");
    proxy.shutdown().await;
}
