use std::time::Duration;

use weir_proxy::{Proxy, config, source};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_keeps_the_old_routing_and_a_good_one_is_live_within_two_seconds() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    let good = config_yaml(stable.addr, candidate.addr, 0, "");
    std::fs::write(&path, &good).expect("write config");
    let proxy = Proxy::start(config::parse(&good).expect("valid"), source::file::SOURCE)
        .await
        .expect("start");
    let watcher = tokio::spawn(source::file::watch(
        path.clone(),
        proxy.state().clone(),
        good.clone(),
        proxy.shutdown_signal(),
        false,
    ));

    let bad = config_yaml(stable.addr, candidate.addr, 20_000, "    colour: blue\n")
        .replace("127.0.0.1:0\nadmin", "nowhere\nadmin");
    std::fs::write(&path, &bad).expect("write config");
    eventually("the bad config to be rejected", || async {
        let view: serde_json::Value = serde_json::from_str(&admin_text(&proxy, "/config").await).expect("JSON");
        view["lastReload"]["result"] == "error"
    })
    .await;
    let view: serde_json::Value = serde_json::from_str(&admin_text(&proxy, "/config").await).expect("JSON");
    let errors = view["lastReload"]["errors"].clone();
    let paths: Vec<&str> = errors
        .as_array()
        .expect("errors list")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        ["routes[0].colour", "listen", "routes[0].candidateWeight"],
        "{errors}"
    );
    assert_eq!(view["version"], 1, "the old table is still the one in use");
    assert_eq!(view["config"]["routes"][0]["candidateWeight"], 0);
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(&metrics, r#"weir_config_reloads_total{source="file",result="error"}"#),
        Some(1.0)
    );
    for _ in 0..20 {
        let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
        assert_eq!(parts.headers["x-weir-side"], "stable", "the old routing keeps serving");
    }

    std::fs::write(&path, config_yaml(stable.addr, candidate.addr, 10_000, "")).expect("write config");
    let written = tokio::time::Instant::now();
    eventually("the good config to go live", || async {
        let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
        parts.headers["x-weir-side"] == "candidate"
    })
    .await;
    assert!(
        written.elapsed() < Duration::from_secs(2),
        "live after {:?}",
        written.elapsed()
    );
    let view: serde_json::Value = serde_json::from_str(&admin_text(&proxy, "/config").await).expect("JSON");
    assert_eq!(
        (view["version"].as_u64(), view["lastReload"]["result"].as_str()),
        (Some(2), Some("ok"))
    );
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(&metrics, r#"weir_config_reloads_total{source="file",result="ok"}"#),
        Some(2.0)
    );

    proxy.shutdown().await;
    within(watcher).await.expect("watcher stops with the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_health_readiness_and_openmetrics() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    assert_eq!(admin_text(&proxy, "/healthz").await, "ok\n");
    assert_eq!(admin_text(&proxy, "/readyz").await, "ready\n");
    let mut req = get(proxy.admin_addr(), "/metrics");
    req.headers_mut().insert(
        "accept",
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0"),
    );
    let (parts, body, _) = send(&h1_client(), req).await;
    assert!(
        parts.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text")
    );
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
    let text = admin_text(&proxy, "/metrics").await;
    assert!(text.contains("# TYPE weir_requests_total counter"), "{text}");
    assert!(!text.contains("# EOF"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_built_wrong_in_code_is_refused_and_reloads_go_on() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let good = config::parse(&config_yaml(stable.addr, candidate.addr, 0, "")).expect("valid");
    let proxy = Proxy::start(good.clone(), "api").await.expect("starts");

    // What the controller or the demo might build by mistake: the old code panicked while
    // compiling it, with the reload lock held, and every later reload panicked on the lock.
    let mut bad = good.clone();
    bad.routes[0].stable = "missing".to_owned();
    bad.routes[0].candidate = None;
    bad.routes[0].candidate_weight = weir_proxy::Weight::new(5000).expect("valid");
    bad.routes.push(bad.routes[0].clone());
    let errors = proxy.apply(bad).expect_err("refused").to_string();
    for expected in [
        "routes[0].stable.backend: backend \"missing\" is not defined",
        "routes[0].candidateWeight",
        "routes[1].name: duplicate route name \"r\"",
        "routes[1].match: another route already matches",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in {errors}");
    }
    let (parts, body, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
    assert_eq!(
        (parts.status, &body[..]),
        (http::StatusCode::OK, &b"stable"[..]),
        "the old routing serves"
    );

    let mut next = good;
    next.route_mut("r").expect("route").candidate_weight = weir_proxy::Weight::new(10_000).expect("valid");
    proxy.apply(next).expect("a good config after a bad one is applied");
    let (_, body, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
    assert_eq!(&body[..], b"candidate");
    proxy.shutdown().await;
}
