//! WebSocket through the proxy, with a real WebSocket client and server (tungstenite): the
//! upgrade goes to the side the route chooses, is counted there, becomes a tunnel that
//! carries frames both ways, holds its connection's place under the cap, and closes when
//! idle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::support::*;

/// A WebSocket echo server: answers each message with `NAME: message`, and remembers the
/// `host` of each handshake it accepted.
struct EchoServer {
    addr: SocketAddr,
    hosts: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start(name: &'static str) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hosts);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    // The handshake library's own callback type, whose error is a response.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, rsp: Response| {
                        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
                        seen.lock().expect("lock").push(host.to_owned());
                        Ok(rsp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        let answer = match message {
                            Message::Text(text) => Message::text(format!("{name}: {text}")),
                            Message::Binary(data) => Message::binary([name.as_bytes(), b": ", &data].concat()),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(answer).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoServer {
            addr,
            hosts,
            _task: task,
        }
    }
}

fn ws_config(stable: SocketAddr, candidate: SocketAddr, weight: u16, limits: &str) -> String {
    config_yaml(stable, candidate, weight, "").replace("drainTimeout: 5s\n", &format!("drainTimeout: 5s\n{limits}"))
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(proxy: SocketAddr) -> (Client, http::Response<Option<Vec<u8>>>) {
    let stream = within(TcpStream::connect(proxy)).await.expect("connect");
    let request = "ws://chat.test/socket".into_client_request().expect("request");
    within(tokio_tungstenite::client_async(request, stream))
        .await
        .expect("the upgrade succeeds through the proxy")
}

async fn echo(ws: &mut Client, message: Message) -> Message {
    within(ws.send(message)).await.expect("send");
    within(ws.next()).await.expect("an answer").expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_goes_to_the_chosen_side_carries_frames_both_ways_and_is_counted() {
    let (stable, candidate) = (EchoServer::start("stable").await, EchoServer::start("candidate").await);
    let proxy = start_proxy(&ws_config(stable.addr, candidate.addr, 10_000, "")).await;
    let (mut ws, response) = connect(proxy.listen_addr()).await;
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-weir-side"], "candidate");
    assert_eq!(
        echo(&mut ws, Message::text("hello")).await,
        Message::text("candidate: hello")
    );
    let big = vec![7u8; 256 * 1024];
    assert_eq!(
        echo(&mut ws, Message::binary(big.clone())).await,
        Message::binary([&b"candidate: "[..], &big].concat())
    );
    within(ws.close(None)).await.expect("close");
    assert_eq!(*candidate.hosts.lock().expect("lock"), ["chat.test"]);
    assert!(stable.hosts.lock().expect("lock").is_empty());

    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="r",side="candidate",code="1xx"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_keeps_its_place_under_the_cap_until_it_goes_idle() {
    let (stable, candidate) = (EchoServer::start("stable").await, EchoServer::start("candidate").await);
    let limits = "limits: { maxConnections: 1, idleTimeout: 500ms }\n";
    let proxy = start_proxy(&ws_config(stable.addr, candidate.addr, 0, limits)).await;
    let (mut ws, _) = connect(proxy.listen_addr()).await;
    assert_eq!(echo(&mut ws, Message::text("a")).await, Message::text("stable: a"));

    // The tunnel holds the one place: another connection is turned away.
    let mut other = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    let _ = other.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let mut buf = [0u8; 64];
    assert!(
        matches!(within(other.read(&mut buf)).await, Ok(0) | Err(_)),
        "refused at the cap"
    );

    // Quiet for the idle timeout: the tunnel closes, and its place is free again.
    match within(ws.next()).await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("expected the idle tunnel to close, got {other:?}"),
    }
    eventually("the place is free again", || async {
        let Ok(stream) = TcpStream::connect(proxy.listen_addr()).await else {
            return false;
        };
        let request = "ws://chat.test/socket".into_client_request().expect("request");
        tokio_tungstenite::client_async(request, stream).await.is_ok()
    })
    .await;
    let metrics = admin_text(&proxy, "/metrics").await;
    assert!(
        sample(&metrics, r#"weir_listener_errors_total{kind="connection_limit"}"#).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_for_an_http2_backend_gets_501() {
    let backend = Backend::start("h2").await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - {{ name: r, stable: {{ backend: b }} }}\n\
         backends:\n  b: {{ endpoints: [\"{}\"], protocol: h2c }}\n",
        backend.addr
    );
    let proxy = start_proxy(&yaml).await;
    let stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    let request = "ws://chat.test/socket".into_client_request().expect("request");
    match within(tokio_tungstenite::client_async(request, stream)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 501);
            assert_eq!(response.headers()["x-weir-error"], "upgrade-needs-http1-backend");
        }
        other => panic!("expected 501, got {other:?}"),
    }
    assert_eq!(backend.hits(), 0);
    proxy.shutdown().await;
}
