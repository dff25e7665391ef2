use std::net::SocketAddr;
use std::process::Command;

use http::StatusCode;
use http_body_util::BodyExt;

use crate::binary::start_binary;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_zero() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, config_yaml(stable.addr, candidate.addr, 0, "")).expect("write config");
    let proxy = start_binary(&path, &[], &[]);
    let addr = proxy.listen;

    let client = h1_client();
    let rsp = within(client.request(get(addr, "/stream"))).await.expect("response");
    let mut body = rsp.into_body();
    let first = within(body.frame()).await.expect("frame").expect("no error");
    assert_eq!(first.into_data().expect("data"), "data: first\n\n");

    proxy.signal("TERM");
    eventually("new connections to be refused", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    stable.release();
    let mut rest = Vec::new();
    while let Some(frame) = within(body.frame()).await {
        rest.extend_from_slice(
            &frame
                .expect("the in-flight response completes")
                .into_data()
                .unwrap_or_default(),
        );
    }
    assert_eq!(rest, b"data: second\n\n");

    let (exit, log) = proxy.exited().await;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
}

#[test]
fn check_lists_every_error_of_a_bad_file_and_passes_a_good_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    std::fs::write(&good, config_yaml(addr, addr, 500, "")).expect("write");
    std::fs::write(&bad, config_yaml(addr, addr, 10_001, "    timeout: soon\n")).expect("write");

    let out = Command::new(env!("CARGO_BIN_EXE_weir-proxy"))
        .arg("--check")
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new(env!("CARGO_BIN_EXE_weir-proxy"))
        .arg("--check")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].candidateWeight: 10001 is over 10000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].timeout: \"soon\" is not a duration"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_weir-proxy"))
        .args(["--config"])
        .arg(&good)
        .arg("--check")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "--check without a value checks --config's file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_even_when_unchanged() {
    let stable = Backend::start("stable").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, config_yaml(stable.addr, stable.addr, 0, "")).expect("write config");
    let proxy = start_binary(&path, &[], &[]);
    let admin = proxy.admin;
    let version = || async move {
        let (_, body, _) = send(&h1_client(), get(admin, "/config")).await;
        serde_json::from_slice::<serde_json::Value>(&body).expect("JSON")["version"].as_u64()
    };
    assert_eq!(version().await, Some(1));
    proxy.signal("HUP");
    eventually("SIGHUP to load the file again", || async { version().await == Some(2) }).await;
    proxy.signal("TERM");
    let (exit, log) = proxy.exited().await;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_admin_flags_override_the_file_and_survive_its_reloads() {
    // The chart binds admin to the pod's IP by flag, whatever the file says.
    let stable = Backend::start("stable").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, config_yaml(stable.addr, stable.addr, 0, "")).expect("write config");
    let (listen, admin) = (dead_addr().await, dead_addr().await);
    let proxy = start_binary(
        &path,
        &["--listen", &listen.to_string(), "--admin", &admin.to_string()],
        &[],
    );
    assert_eq!((proxy.listen, proxy.admin), (listen, admin));
    let (parts, body, _) = send(&h1_client(), get(listen, "/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"stable"[..]));
    // A reload of the file (still saying 127.0.0.1:0) changes nothing and warns of nothing.
    proxy.signal("HUP");
    let config = || async move {
        let (_, body, _) = send(&h1_client(), get(admin, "/config")).await;
        serde_json::from_slice::<serde_json::Value>(&body).expect("JSON")
    };
    eventually("SIGHUP to load the file again", || async {
        config().await["version"] == 2
    })
    .await;
    let config = config().await;
    assert_eq!(config["config"]["listen"], listen.to_string());
    assert_eq!(config["lastReload"]["warnings"], serde_json::json!([]), "{config}");
    proxy.signal("TERM");
    let (exit, log) = proxy.exited().await;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
}
