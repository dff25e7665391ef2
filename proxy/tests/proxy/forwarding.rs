use http::{HeaderValue, StatusCode, Version};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2c_requests_reach_the_right_side_with_headers_intact() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let overrides = "    overrides:\n      - { header: x-weir-side, equals: candidate, side: candidate }\n";
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, overrides)).await;

    for (client, version) in [(h1_client(), Version::HTTP_11), (h2c_client(), Version::HTTP_2)] {
        let mut req = get(proxy.listen_addr(), "/hello?x=1");
        req.headers_mut().insert("x-custom", HeaderValue::from_static("kept"));
        let (parts, body, _) = send(&client, req).await;
        assert_eq!(parts.version, version);
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"stable");
        assert_eq!(parts.headers["x-weir-side"], "stable");
        assert_eq!(parts.headers["x-seen-custom"], "kept");
        assert_eq!(
            parts.headers["x-seen-host"],
            proxy.listen_addr().to_string().as_str(),
            "Host is kept"
        );
        assert_eq!(parts.headers["x-seen-xff"], "127.0.0.1");
        assert_eq!(parts.headers["x-seen-version"], "HTTP/1.1", "upstream speaks HTTP/1.1");
        let via = parts.headers["x-seen-via"].to_str().expect("ascii");
        assert!(via == "1.1 weir" || via == "2 weir", "via {via}");
        assert!(
            !parts.headers.contains_key("connection"),
            "hop-by-hop response header is stripped"
        );
        assert!(
            parts
                .headers
                .get_all("via")
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.ends_with("weir")))
        );

        let mut req = get(proxy.listen_addr(), "/");
        req.headers_mut()
            .insert("x-weir-side", HeaderValue::from_static("candidate"));
        let (parts, body, _) = send(&client, req).await;
        assert_eq!(&body[..], b"candidate");
        assert_eq!(parts.headers["x-weir-side"], "candidate");
    }
    assert_eq!((stable.hits(), candidate.hits()), (2, 2));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_trailers_pass_through_on_h1_and_h2c() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    for client in [h1_client(), h2c_client()] {
        let mut req = get(proxy.listen_addr(), "/trailers");
        req.headers_mut().insert("te", HeaderValue::from_static("trailers"));
        let (parts, body, trailers) = send(&client, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"hello");
        let trailers = trailers.expect("trailers arrive");
        assert_eq!(trailers["x-checksum"], "42");

        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/status/503")).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&body[..], b"stable");
        assert!(
            !parts.headers.contains_key("x-weir-error"),
            "an upstream 503 is relayed, not proxy-made"
        );
    }
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(&metrics, r#"weir_requests_total{route="r",side="stable",code="5xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, r#"weir_requests_total{route="r",side="stable",code="2xx"}"#),
        Some(2.0)
    );
    assert!(metrics.contains("weir_request_duration_seconds_bucket{"), "{metrics}");
    assert_eq!(
        sample(&metrics, r#"weir_candidate_weight_basis_points{route="r"}"#),
        Some(0.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_named_headers_do_not_reach_the_upstream() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let mut req = get(proxy.listen_addr(), "/");
    req.headers_mut()
        .insert("connection", HeaderValue::from_static("x-secret"));
    req.headers_mut().insert("x-secret", HeaderValue::from_static("1"));
    let (parts, _, _) = send(&h1_client(), req).await;
    assert!(!parts.headers.contains_key("x-seen-secret"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_header_can_be_renamed_or_turned_off() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "");
    let proxy = start_proxy(&yaml.replace("drainTimeout: 5s\n", "drainTimeout: 5s\nsideHeader: x-served-by\n")).await;
    let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
    assert_eq!(parts.headers["x-served-by"], "stable");
    assert!(!parts.headers.contains_key("x-weir-side"));
    proxy
        .apply(
            weir_proxy::config::parse(&yaml.replace("drainTimeout: 5s\n", "drainTimeout: 5s\nsideHeader: null\n"))
                .expect("valid"),
        )
        .expect("applies");
    let (parts, _, _) = send(&h1_client(), get(proxy.listen_addr(), "/")).await;
    assert!(!parts.headers.contains_key("x-served-by") && !parts.headers.contains_key("x-weir-side"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_only_from_trusted_peers() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "");
    for (extra, xff, proto) in [
        ("", "127.0.0.1", "http"),
        ("trustForwardedFrom: [10.0.0.0/8]\n", "127.0.0.1", "http"),
        ("trustForwardedFrom: [127.0.0.0/8]\n", "203.0.113.9, 127.0.0.1", "https"),
    ] {
        let proxy = start_proxy(&yaml.replace("drainTimeout: 5s\n", &format!("drainTimeout: 5s\n{extra}"))).await;
        for client in [h1_client(), h2c_client()] {
            // A client claiming to be someone else, over HTTPS.
            let mut req = get(proxy.listen_addr(), "/");
            req.headers_mut()
                .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
            req.headers_mut()
                .insert("x-forwarded-proto", HeaderValue::from_static("https"));
            let (parts, _, _) = send(&client, req).await;
            assert_eq!(parts.headers["x-seen-xff"], xff, "with {extra:?}");
            assert_eq!(parts.headers["x-seen-proto"], proto, "with {extra:?}");
        }
        proxy.shutdown().await;
    }
}

/// An upstream that answers every request on its first connection with `response`, as raw
/// bytes, then closes.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_framed_both_ways_is_read_as_chunked_and_loses_its_length() {
    // RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length, which must not be
    // passed on: a client believing the length would read the chunk framing as the body,
    // and the bytes after it as the next response.
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = start_proxy(&config_yaml(upstream, upstream, 0, "")).await;
    for client in [h1_client(), h2c_client()] {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"hello");
        assert!(!parts.headers.contains_key("content-length"), "{:?}", parts.headers);
    }
    proxy.shutdown().await;
}
