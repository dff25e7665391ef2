//! TLS on the data listener: ALPN, rotation, bad clients and bad files, with a CA made at test
//! time and real TLS clients (rustls, and curl where .ci/run installs it).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use weir_proxy::{Proxy, config};

use crate::support::*;

/// A CA made for one test, issuing server certificates for `localhost` and 127.0.0.1.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A server certificate and its key.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "weir test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        Pki {
            ca,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn leaf(&self, common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, self.ca.pem()).expect("write CA");
        path
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Installs a certificate and key as the proxy's files. Each file is replaced by a rename,
    /// so the proxy never reads half a file (it may read a new cert with the old key).
    pub(crate) fn install(&self, cert_pem: &str, key_pem: &str) {
        replace(&self.key_path(), key_pem);
        replace(&self.cert_path(), cert_pem);
    }

    /// The proxy's top-level `tls` config line.
    fn config_line(&self) -> String {
        format!(
            "tls: {{ cert: '{}', key: '{}' }}\n",
            self.cert_path().display(),
            self.key_path().display()
        )
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// One client TLS connection, with what the handshake chose, ready for requests.
struct Https {
    alpn: Option<Vec<u8>>,
    peer: CertificateDer<'static>,
    sender: Sender,
}

enum Sender {
    H1(http1::SendRequest<BoxBody>),
    H2(http2::SendRequest<BoxBody>),
}

/// Connects to `addr` over TLS, trusting only `ca`, offering `alpn`; speaks whatever ALPN chose.
async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> std::io::Result<Https> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("test CA is a valid root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = within(TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = within(TlsConnector::from(Arc::new(cfg)).connect(name, tcp)).await?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server sent a certificate")
        .clone()
        .into_owned();
    let io = TokioIo::new(stream);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = within(http2::handshake(TokioExecutor::new(), io))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = within(http1::handshake(io)).await.expect("h1 handshake");
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok(Https { alpn, peer, sender })
}

impl Https {
    async fn get(&mut self, path: &str) -> (http::response::Parts, Bytes) {
        let empty = || full(Bytes::new());
        let rsp = match &mut self.sender {
            Sender::H1(sender) => {
                within(sender.ready()).await.expect("h1 connection ready");
                let req = Request::get(path)
                    .header("host", "localhost")
                    .body(empty())
                    .expect("request");
                within(sender.send_request(req)).await
            }
            Sender::H2(sender) => {
                within(sender.ready()).await.expect("h2 connection ready");
                let req = Request::get(format!("https://localhost{path}"))
                    .body(empty())
                    .expect("request");
                within(sender.send_request(req)).await
            }
        }
        .expect("response");
        let (parts, body) = rsp.into_parts();
        let body = within(body.collect()).await.expect("body").to_bytes();
        (parts, body)
    }
}

pub(crate) async fn start_tls_proxy(pki: &Pki, stable: SocketAddr, candidate: SocketAddr) -> Proxy {
    start_proxy(&(config_yaml(stable, candidate, 0, "") + &pki.config_line())).await
}

async fn metric(proxy: &Proxy, series: &str) -> f64 {
    sample(&admin_text(proxy, "/metrics").await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_or_http1_by_alpn_and_forwards_with_proto_https() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("weir-proxy");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;

    for (offered, chosen, version) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice(), Version::HTTP_2),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice(), Version::HTTP_11),
    ] {
        let mut conn = connect(proxy.listen_addr(), &pki.ca_der(), offered)
            .await
            .expect("TLS handshake");
        assert_eq!(conn.alpn.as_deref(), Some(chosen));
        assert_eq!(conn.peer, leaf.der);
        let (parts, body) = conn.get("/hello").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, version);
        assert_eq!(&body[..], b"stable");
        assert_eq!(parts.headers["x-seen-proto"], "https");
    }
    assert_eq!(stable.hits(), 2, "both requests reached the backend");
    within(proxy.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_while_an_old_one_keeps_working() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let (old, new) = (pki.leaf("weir-proxy-old"), pki.leaf("weir-proxy-new"));
    pki.install(&old.cert_pem, &old.key_pem);
    let proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;
    let ca = pki.ca_der();

    let mut before = connect(proxy.listen_addr(), &ca, &[b"http/1.1"]).await.expect("TLS");
    assert_eq!(before.peer, old.der);
    assert_eq!(before.get("/").await.0.status, StatusCode::OK);

    pki.install(&new.cert_pem, &new.key_pem);
    let addr = proxy.listen_addr();
    eventually("a new connection to get the new certificate", || {
        let (ca, new) = (ca.clone(), new.der.clone());
        async move { connect(addr, &ca, &[b"h2"]).await.is_ok_and(|c| c.peer == new) }
    })
    .await;
    let mut after = connect(addr, &ca, &[b"h2"]).await.expect("TLS");
    assert_eq!(after.peer, new.der);
    assert_eq!(after.get("/").await.0.status, StatusCode::OK);

    let (parts, body) = before.get("/").await;
    assert_eq!(
        parts.status,
        StatusCode::OK,
        "the connection opened before rotation still works"
    );
    assert_eq!(&body[..], b"stable");
    assert_eq!(before.peer, old.der);
    assert!(metric(&proxy, "weir_config_reloads_total{source=\"tls\",result=\"ok\"}").await >= 1.0);
    within(proxy.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_pair_is_counted_and_the_old_certificate_keeps_serving() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let (good, other) = (pki.leaf("good"), pki.leaf("other"));
    pki.install(&good.cert_pem, &good.key_pem);
    let proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;

    // A certificate whose key is not the one on disk: rejected as a pair.
    pki.install(&other.cert_pem, &good.key_pem);
    eventually("the mismatched pair to be rejected", || async {
        metric(&proxy, "weir_config_reloads_total{source=\"tls\",result=\"error\"}").await >= 1.0
    })
    .await;
    let mut conn = connect(proxy.listen_addr(), &pki.ca_der(), &[b"h2"])
        .await
        .expect("TLS");
    assert_eq!(conn.peer, good.der, "the last good certificate keeps serving");
    assert_eq!(conn.get("/").await.0.status, StatusCode::OK);
    within(proxy.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_a_tls_port_and_tls_to_a_plain_port_are_closed_counted_and_survived() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("weir-proxy");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let tls_proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;
    let plain_proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;

    for _ in 0..2 {
        let mut tcp = within(TcpStream::connect(tls_proxy.listen_addr()))
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        // The proxy closes the connection: EOF, or a reset if our bytes were left unread.
        let _ = within(tcp.read_to_end(&mut answer)).await;
        assert!(!answer.starts_with(b"HTTP/"), "no HTTP answer on a TLS port");
    }
    eventually("plain text on the TLS port to be counted", || async {
        metric(&tls_proxy, "weir_listener_errors_total{kind=\"tls_handshake\"}").await == 2.0
    })
    .await;
    let mut conn = connect(tls_proxy.listen_addr(), &pki.ca_der(), &[b"h2"])
        .await
        .expect("TLS");
    assert_eq!(
        conn.get("/").await.0.status,
        StatusCode::OK,
        "the TLS listener keeps serving"
    );

    let refused = connect(plain_proxy.listen_addr(), &pki.ca_der(), &[b"h2"]).await;
    assert!(refused.is_err(), "a TLS handshake to a plain port fails");
    eventually("TLS on the plain port to be counted", || async {
        metric(&plain_proxy, "weir_listener_errors_total{kind=\"tls_on_plain\"}").await == 1.0
    })
    .await;
    let (parts, body, _) = send(&h1_client(), get(plain_proxy.listen_addr(), "/")).await;
    assert_eq!(parts.status, StatusCode::OK, "the plain listener keeps serving");
    assert_eq!(&body[..], b"stable");

    within(tls_proxy.shutdown()).await;
    within(plain_proxy.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_fail_start_naming_the_field() {
    let pki = Pki::new();
    let (leaf, other) = (pki.leaf("a"), pki.leaf("b"));
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let start = |yaml: String| async move {
        let cfg = config::parse(&yaml).expect("valid config");
        within(Proxy::start(cfg, "api"))
            .await
            .map(|_| ())
            .map_err(|e| weir_proxy::error::ErrorChain(&e).to_string())
    };

    pki.install(&leaf.cert_pem, &other.key_pem);
    let error = start(config_yaml(addr, addr, 0, "") + &pki.config_line())
        .await
        .expect_err("a mismatched key is refused");
    assert_eq!(error, "tls.cert: the key does not match this certificate");

    std::fs::remove_file(pki.key_path()).expect("remove key");
    let error = start(config_yaml(addr, addr, 0, "") + &pki.config_line())
        .await
        .expect_err("a missing key is refused");
    let prefix = format!("tls.key: {}: cannot read: ", pki.key_path().display());
    assert!(error.starts_with(&prefix), "{error}");

    pki.install("not a certificate\n", &leaf.key_pem);
    let error = start(config_yaml(addr, addr, 0, "") + &pki.config_line())
        .await
        .expect_err("a file without PEM is refused");
    assert!(error.starts_with("tls.cert: "), "{error}");
}

#[test]
fn the_binary_exits_1_naming_the_field_when_the_key_does_not_match() {
    let pki = Pki::new();
    let (leaf, other) = (pki.leaf("a"), pki.leaf("b"));
    pki.install(&leaf.cert_pem, &other.key_pem);
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let path = pki.dir.path().join("weir.yaml");
    std::fs::write(&path, config_yaml(addr, addr, 0, "") + &pki.config_line()).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-proxy"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir-proxy");
    let exit = wait_for_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(exit.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tls.cert: the key does not match this certificate"),
        "{stderr}"
    );
}

fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            return exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit before the deadline");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_http2_over_tls_through_the_proxy() {
    let curl = weir_test_tools::debian_tool("curl", "curl").unwrap_or_else(|e| panic!("{e:#}"));
    let version = Command::new(&curl)
        .arg("--version")
        .output()
        .expect("run curl --version");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version
            .lines()
            .any(|l| l.starts_with("Features:") && l.contains("HTTP2")),
        "this curl has no HTTP/2 support; Debian's has it ({}):\n{version}",
        weir_test_tools::apt_install_line()
    );

    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("weir-proxy");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;

    let mut curl = Command::new(&curl);
    curl.args(["--http2", "--silent", "--show-error", "--max-time", "20"])
        .arg("--cacert")
        .arg(pki.ca_file())
        .args(["--write-out", "\n%{http_version} %{http_code}"])
        .arg(format!("https://127.0.0.1:{}/", proxy.listen_addr().port()));
    let out = within(tokio::task::spawn_blocking(move || curl.output()))
        .await
        .expect("curl task")
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "stable\n2 200", "the backend's answer over HTTP/2");
    assert_eq!(stable.hits(), 1);
    within(proxy.shutdown()).await;
}

fn tls_backend_config(endpoint: SocketAddr, protocol: &str, ca: &Path) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: t\n    stable: {{ backend: secure }}\nbackends:\n  secure: {{ endpoints: [\"{endpoint}\"], protocol: {protocol}, tls: {{ ca: '{}', sni: localhost }} }}\n",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_over_tls_speak_h2_or_http1_and_an_untrusted_one_fails_with_upstream_tls() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("tls-backend");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    // The TLS backend: a weir-proxy with a TLS listener in front of a plain backend.
    let inner = start_tls_proxy(&pki, stable.addr, candidate.addr).await;
    let ca = pki.ca_file();
    for (protocol, via) in [("h2", "2 weir"), ("h1", "1.1 weir")] {
        let outer = start_proxy(&tls_backend_config(inner.listen_addr(), protocol, &ca)).await;
        let (parts, body, _) = send(&h1_client(), get(outer.listen_addr(), "/")).await;
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, &b"stable"[..]),
            "{protocol}"
        );
        // The outer proxy's Via names the version the TLS backend answered in.
        let vias: Vec<&str> = parts
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(vias.last(), Some(&via), "{protocol}: {vias:?}");
        within(outer.shutdown()).await;
    }

    // A CA that did not issue the backend's certificate: the handshake fails.
    let stranger = Pki::new();
    let outer = start_proxy(&tls_backend_config(inner.listen_addr(), "h2", &stranger.ca_file())).await;
    let (parts, _, _) = send(&h1_client(), get(outer.listen_addr(), "/")).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert_eq!(parts.headers["x-weir-error"], "upstream-tls");
    assert_eq!(
        metric(
            &outer,
            r#"weir_upstream_errors_total{route="t",side="stable",kind="tls"}"#
        )
        .await,
        1.0
    );
    within(outer.shutdown()).await;

    // A CA file that cannot be read rejects the config, naming the field.
    let missing = pki.dir.path().join("missing-ca.crt");
    let cfg = config::parse(&tls_backend_config(inner.listen_addr(), "h2", &missing)).expect("valid config");
    let error = Proxy::start(cfg, "api").await.expect_err("the CA file is missing");
    let message = error.to_string();
    assert!(message.starts_with("backends.secure.tls.ca: "), "{message}");
    assert!(message.contains("cannot read"), "{message}");
    within(inner.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_upstream_ca_is_used_for_new_connections_without_a_reload() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("tls-backend");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let inner = start_tls_proxy(&pki, stable.addr, candidate.addr).await;
    // The CA file at first holds a CA that did not issue the backend's certificate.
    let stranger = Pki::new();
    let ca = stranger.dir.path().join("rotating-ca.crt");
    replace(&ca, &stranger.ca.pem());
    let outer = start_proxy(&tls_backend_config(inner.listen_addr(), "h1", &ca)).await;
    let (parts, _, _) = send(&h1_client(), get(outer.listen_addr(), "/")).await;
    assert_eq!(parts.headers["x-weir-error"], "upstream-tls");

    // Rotation: the file now holds the right CA; no reload.
    replace(&ca, &pki.ca.pem());
    eventually("the rotated CA is used", || async {
        let (parts, _, _) = send(&h1_client(), get(outer.listen_addr(), "/")).await;
        parts.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        metric(&outer, r#"weir_config_reloads_total{source="upstream_ca",result="ok"}"#).await,
        1.0
    );

    // A bad file is reported once and the CA in use stays.
    replace(&ca, "not a certificate\n");
    eventually("the bad CA is reported", || async {
        metric(
            &outer,
            r#"weir_config_reloads_total{source="upstream_ca",result="error"}"#,
        )
        .await
            == 1.0
    })
    .await;
    let (parts, _, _) = send(&h1_client(), get(outer.listen_addr(), "/")).await;
    assert_eq!(parts.status, StatusCode::OK);
    // A reload of the same config re-reads it too, keeps the CA in use, and says why.
    let cfg = config::parse(&tls_backend_config(inner.listen_addr(), "h1", &ca)).expect("valid");
    outer
        .apply(cfg)
        .expect("a CA that went bad blocks no reload of an unchanged backend");
    let status = outer.state().last_reload().expect("recorded");
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.starts_with("backends.secure.tls.ca: ")),
        "{:?}",
        status.warnings
    );
    within(outer.shutdown()).await;
    within(inner.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_shows_no_key_material_changes_nothing_and_binds_loopback_by_default() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let pki = Pki::new();
    let leaf = pki.leaf("weir");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let proxy = start_tls_proxy(&pki, stable.addr, candidate.addr).await;
    let config = admin_text(&proxy, "/config").await;
    assert!(config.contains("tls.key"), "the key file is named: {config}");
    for secret in ["BEGIN", "PRIVATE", &leaf.key_pem[40..80]] {
        assert!(!config.contains(secret), "{secret:?} in /config: {config}");
    }
    // Nothing on the admin listener changes state: anything but GET and HEAD is refused.
    for method in [http::Method::POST, http::Method::PUT, http::Method::DELETE] {
        let mut req = get(proxy.admin_addr(), "/config");
        *req.method_mut() = method.clone();
        let (parts, _, _) = send(&h1_client(), req).await;
        assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    within(proxy.shutdown()).await;
    let defaults = config::parse("routes: []\n").expect("valid");
    assert!(defaults.admin.ip().is_loopback(), "{}", defaults.admin);
}
