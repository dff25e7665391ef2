//! Hostile HTTP/1.1 clients and connection-level abuse, over raw sockets: request smuggling,
//! oversized and too many headers, bad targets, slow and silent clients, clients that stop
//! reading, and more connections than the cap. Each gets a clear 4xx or a closed connection,
//! and each is counted in `weir_listener_errors_total{kind}`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Short limits, so each slow-client case ends in well under a second of waiting.
const LIMITS: &str = "limits: { headerTimeout: 400ms, idleTimeout: 400ms, sendTimeout: 400ms }\n";

async fn proxy_with(limits: &str, stable: &Backend, candidate: &Backend) -> weir_proxy::Proxy {
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "")
        .replace("drainTimeout: 5s\n", &format!("drainTimeout: 5s\n{limits}"));
    start_proxy(&yaml).await
}

/// Writes `request` on a new connection and reads until the proxy closes it.
async fn exchange_until_closed(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    within(stream.write_all(request)).await.expect("write");
    read_until_closed(&mut stream).await
}

/// Everything the proxy sends until it closes the connection; a reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one complete response with a `content-length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |n| n.trim().parse::<usize>().expect("a length"));
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let n = within(stream.read(&mut buf)).await.expect("read");
        assert!(n > 0, "the connection closed mid-response: {text:?}");
        answer.extend_from_slice(&buf[..n]);
    }
}

fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    // A front end that believed Content-Length would see one request carrying the second as
    // its body; one that believed Transfer-Encoding, two. The proxy takes the chunked framing
    // (RFC 9112 section 6.3), forwards one request, and closes: the rest never becomes one.
    let answer = exchange_until_closed(
        proxy.listen_addr(),
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then closed: {answer}"
    );
    assert_eq!(stable.hits(), 1, "the smuggled request never reached the backend");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_with_400_and_counted() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    let cases: [&[u8]; 6] = [
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let answer = exchange_until_closed(proxy.listen_addr(), case).await;
        assert_eq!(status_of(&answer), "400", "{}: {answer}", String::from_utf8_lossy(case));
    }
    assert_eq!(stable.hits(), 0, "no ambiguous request reached the backend");
    assert_eq!(listener_errors(&proxy, "bad_request").await, cases.len() as f64);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_the_declared_length_are_the_next_request_never_the_body() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    within(stream.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ))
    .await
    .expect("write");
    let first = read_response(&mut stream).await;
    let mut expected = Digest::new();
    expected.update(b"hello");
    assert!(
        first.ends_with(&expected.answer()),
        "the upload held exactly the declared bytes: {first}"
    );
    let second = read_response(&mut stream).await;
    assert_eq!(status_of(&second), "200", "{second}");
    assert_eq!(stable.hits(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_headers_get_431() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    // Over the proxy's own limit: its 431 names the reason.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nx-big: {}\r\n\r\n",
        "a".repeat(weir_proxy::service::MAX_REQUEST_HEADER_BYTES)
    );
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    within(stream.write_all(big.as_bytes())).await.expect("write");
    let answer = read_response(&mut stream).await;
    assert_eq!(status_of(&answer), "431", "{answer}");
    assert!(answer.contains("x-weir-error: headers-too-large"), "{answer}");
    // Over the parser's buffer, and more header lines than the parser takes: refused before
    // the proxy sees a request, and counted.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nx-huge: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n",
        (0..200).map(|i| format!("x-h{i}: {i}\r\n")).collect::<String>()
    );
    for request in [huge, many] {
        let answer = exchange_until_closed(proxy.listen_addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "431", "{answer}");
    }
    assert_eq!(listener_errors(&proxy, "headers_too_large").await, 2.0);
    assert_eq!(stable.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_methods_get_400_and_connect_gets_405() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    for request in [
        &b"G@T / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET \x7f HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/7.0\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = exchange_until_closed(proxy.listen_addr(), request).await;
        assert_eq!(
            status_of(&answer),
            "400",
            "{}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(listener_errors(&proxy, "bad_request").await, 4.0);

    let answer = exchange_until_closed(
        proxy.listen_addr(),
        b"GET http://user:secret@a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert!(answer.contains("x-weir-error: bad-request"), "{answer}");

    let answer = exchange_until_closed(
        proxy.listen_addr(),
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "405", "{answer}");
    assert!(answer.contains("x-weir-error: connect-not-supported"), "{answer}");
    assert!(answer.contains("allow: "), "{answer}");
    assert!(
        answer.contains("connection: close"),
        "no tunnel bytes are read as requests: {answer}"
    );
    assert_eq!(stable.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_is_routed_and_forwarded_by_its_own_host() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("", &stable, &candidate).await;
    // RFC 9112 section 3.2.2: the target's authority wins over Host. The upstream must see
    // the host the request was routed by, never the other one.
    let answer = exchange_until_closed(
        proxy.listen_addr(),
        b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert!(answer.contains("x-seen-host: b.test"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_closed_at_the_header_timeout_and_counted() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with(LIMITS, &stable, &candidate).await;
    let addr = proxy.listen_addr();
    // Silent from the start.
    let mut silent = within(TcpStream::connect(addr)).await.expect("connect");
    // Slow headers: one byte every 100 ms, each well inside any per-read timeout.
    let slowloris = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for byte in b"GET / HTTP/1.1\r\nHost: a.test\r\nx-slow: 0123456789012345678901234567890123456789" {
            if stream.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    // An HTTP/2 preface, whole or cut short, then silence.
    let mut preface = within(TcpStream::connect(addr)).await.expect("connect");
    within(preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        .await
        .expect("write");
    let mut half_preface = within(TcpStream::connect(addr)).await.expect("connect");
    within(half_preface.write_all(b"PRI * HTTP/2.0\r\n"))
        .await
        .expect("write");

    for stream in [&mut silent, &mut preface, &mut half_preface] {
        read_until_closed(stream).await;
    }
    assert!(within(slowloris).await.expect("task"), "slow headers were cut off");
    assert_eq!(listener_errors(&proxy, "header_timeout").await, 4.0);
    assert_eq!(stable.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_both_protocols_are_closed_after_the_idle_timeout() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with(LIMITS, &stable, &candidate).await;
    // HTTP/1.1 keep-alive: one request, then nothing.
    let mut h1 = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    within(h1.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"))
        .await
        .expect("write");
    assert_eq!(status_of(&read_response(&mut h1).await), "200");
    // HTTP/2: one stream, then a connection with none.
    let tcp = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    let (mut h2, connection) = within(h2::client::handshake(tcp)).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get("http://a.test/").body(()).expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    let response = within(response).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);

    assert_eq!(read_until_closed(&mut h1).await, "", "closed without a word");
    // The client's connection task ends when the proxy closes (GOAWAY, then the socket).
    within(connection).await.expect("task").ok();
    assert_eq!(
        listener_errors(&proxy, "header_timeout").await,
        0.0,
        "an idle close is not a client error"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_send_timeout() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with(LIMITS, &stable, &candidate).await;
    const LEN: u64 = 256 * 1024 * 1024;
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    within(stream.write_all(format!("GET /download/{LEN} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes()))
        .await
        .expect("write");
    eventually("the stalled reader is counted", || async {
        listener_errors(&proxy, "send_timeout").await == 1.0
    })
    .await;
    // What the socket buffers held arrives, then the end: never the whole body.
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n as u64,
        }
    }
    assert!(received < LEN, "received {received} bytes of {LEN}");
    // The response was cut off, not finished: it counts as the client going away.
    let metrics = admin_text(&proxy, "/metrics").await;
    for (code, count) in [("2xx", 0.0), ("cancelled", 1.0)] {
        let series = format!(r#"weir_requests_total{{route="r",side="stable",code="{code}"}}"#);
        assert_eq!(sample(&metrics, &series).unwrap_or(0.0), count, "{series}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_counted_while_open_ones_keep_working() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = proxy_with("limits: { maxConnections: 3 }\n", &stable, &candidate).await;
    let addr = proxy.listen_addr();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
        within(stream.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"))
            .await
            .expect("write");
        assert_eq!(status_of(&read_response(&mut stream).await), "200");
        open.push(stream);
    }
    for _ in 0..2 {
        // The kernel completes the handshake; the proxy closes at once without reading.
        let refused = exchange_until_closed(addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(refused, "");
    }
    assert_eq!(listener_errors(&proxy, "connection_limit").await, 2.0);
    for stream in &mut open {
        within(stream.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"))
            .await
            .expect("write");
        assert_eq!(status_of(&read_response(stream).await), "200");
    }
    drop(open.pop());
    eventually("a closed connection frees its place", || async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
            && status_of(&read_until_closed(&mut stream).await) == "200"
    })
    .await;
    proxy.shutdown().await;
}
