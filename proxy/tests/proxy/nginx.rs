//! Debian's nginx as a real upstream: a strict HTTP/2 peer, where hyper's and tonic's servers
//! are lenient. It rejects a request whose `Host` and `:authority` disagree (RFC 9113
//! section 8.3.1), which no hyper-based test would notice.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// An nginx serving h2c by prior knowledge on a loopback port, from its own prefix directory.
/// Killed when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx answering every request with `host=<the Host it saw>`, retiring each
    /// HTTP/2 connection with a graceful GOAWAY after `keepalive_requests` requests (nginx's
    /// default is 1000).
    pub async fn start_h2c(keepalive_requests: u32) -> Nginx {
        let nginx = weir_test_tools::debian_tool("nginx", "nginx").unwrap_or_else(|e| panic!("{e:#}"));
        let dir = tempfile::tempdir().expect("temp dir");
        // A free port: bound, then released for nginx to take.
        let addr = dead_addr().await;
        let prefix = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {prefix}/access.log;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n  \
             fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  \
             server {{\n    listen {addr} http2;\n    keepalive_requests {keepalive_requests};\n    location / {{ return 200 \"host=$host\\n\"; }}\n    location /connection {{ return 200 \"$connection\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let until = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < until,
                "nginx did not listen on {addr}: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nginx { addr, child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_accepts_what_weir_sends_to_an_h2c_upstream_and_sees_the_clients_host() {
    let nginx = Nginx::start_h2c(1000).await;
    let stable = Backend::start("stable").await;
    let yaml = config_yaml(stable.addr, nginx.addr, 10_000, "").replace(
        &format!("c: {{ endpoints: [\"{}\"] }}", nginx.addr),
        &format!("c: {{ endpoints: [\"{}\"], protocol: h2c }}", nginx.addr),
    );
    assert!(yaml.contains("protocol: h2c"), "{yaml}");
    let proxy = start_proxy(&yaml).await;

    // An HTTP/1.1 client names the model service in Host.
    let client = h1_client();
    for _ in 0..3 {
        let mut req = get(proxy.listen_addr(), "/v1/models");
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("model.example:8080"));
        let (parts, body, _) = send(&client, req).await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "nginx answered {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(&body[..], b"host=model.example\n");
        assert_eq!(parts.headers["x-weir-side"], "candidate");
    }

    // An HTTP/2 client names it in :authority.
    for _ in 0..3 {
        let (status, body) = h2c_get(proxy.listen_addr(), "http://model.example:8080/v1/models").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "nginx answered {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(&body[..], b"host=model.example\n");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_flowing_when_nginx_retires_a_connection() {
    // nginx closes an HTTP/2 connection with a graceful GOAWAY after `keepalive_requests`
    // requests. Requests racing the GOAWAY (sent on the retiring connection, or after it but
    // before weir saw it close) go out again on a new connection; none fails. Retiring every
    // 10 requests makes the race happen dozens of times per run.
    let nginx = Nginx::start_h2c(10).await;
    let stable = Backend::start("stable").await;
    let yaml = config_yaml(stable.addr, nginx.addr, 10_000, "").replace(
        &format!("c: {{ endpoints: [\"{}\"] }}", nginx.addr),
        &format!("c: {{ endpoints: [\"{}\"], protocol: h2c }}", nginx.addr),
    );
    let proxy = start_proxy(&yaml).await;
    let client = h1_client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (client, addr) = (client.clone(), proxy.listen_addr());
        tasks.spawn(async move {
            let (mut failures, mut connections) = (Vec::new(), std::collections::BTreeSet::new());
            for i in 0..300 {
                let (parts, body, _) = send(&client, get(addr, "/connection")).await;
                if parts.status == StatusCode::OK {
                    connections.insert(String::from_utf8_lossy(&body).into_owned());
                } else {
                    failures.push(format!(
                        "worker {worker} request {i}: {} {:?}",
                        parts.status,
                        parts.headers.get("x-weir-error")
                    ));
                }
            }
            (failures, connections)
        });
    }
    let (mut failures, mut connections) = (Vec::new(), std::collections::BTreeSet::new());
    while let Some(done) = tasks.join_next().await {
        let (f, c) = done.expect("worker");
        failures.extend(f);
        connections.extend(c);
    }
    assert!(
        failures.is_empty(),
        "{} of 1200 failed, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        connections.len() >= 100,
        "nginx retired too few connections: {connections:?}"
    );
    proxy.shutdown().await;
}
