//! A/B/n experiments through the proxy: N-way routes split exactly and stick, and what a
//! model server's users feel beyond the first byte (gaps between streamed frames, frames per
//! response) and the score it reports are counted per route and variant.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tonic_prost::ProstCodec;
use weir_proxy::{Proxy, config};

use crate::grpc::{SayReply, SayRequest};
use crate::support::*;

fn variants_yaml(variants: &[(&str, SocketAddr, u16)], route_extra: &str) -> String {
    let list: Vec<String> = variants
        .iter()
        .map(|(name, _, weight)| format!("{{ name: {name}, backend: {name}, weight: {weight} }}"))
        .collect();
    let backends: String = variants
        .iter()
        .map(|(name, addr, _)| format!("  {name}: {{ endpoints: [\"{addr}\"] }}\n"))
        .collect();
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: ab\n    variants: [{}]\n{route_extra}backends:\n{backends}",
        list.join(", ")
    )
}

async fn side_of(client: &TestClient, proxy: SocketAddr, user: Option<&str>) -> String {
    let mut req = get(proxy, "/");
    if let Some(user) = user {
        req.headers_mut()
            .insert("x-user-id", HeaderValue::from_str(user).expect("ascii"));
    }
    let (parts, _, _) = send(client, req).await;
    let side = parts.headers["x-weir-side"].to_str().expect("ascii").to_owned();
    // The side header names the variant that served, and that variant's backend answered.
    assert_eq!(parts.headers["x-backend"], side.as_str());
    side
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_variants_split_exactly_stick_and_are_counted_by_name() {
    let (large, distilled, quantised) = (
        Backend::start("large").await,
        Backend::start("distilled").await,
        Backend::start("quantised").await,
    );
    let sticky = "    sticky: { header: x-user-id }\n";
    let yaml = |w: [u16; 3]| {
        variants_yaml(
            &[
                ("large", large.addr, w[0]),
                ("distilled", distilled.addr, w[1]),
                ("quantised", quantised.addr, w[2]),
            ],
            sticky,
        )
    };
    let proxy = start_proxy(&yaml([5000, 3000, 2000])).await;
    let client = h1_client();

    // Weight-decided requests: exactly 5:3:2 in every run of 10.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..1000 {
        *counts
            .entry(side_of(&client, proxy.listen_addr(), None).await)
            .or_default() += 1;
        if i % 10 == 9 {
            assert_eq!(counts.values().sum::<u32>(), i + 1);
            assert_eq!(counts["large"] * 10, (i + 1) * 5, "{counts:?} after {}", i + 1);
            assert_eq!(counts["distilled"] * 10, (i + 1) * 3, "{counts:?} after {}", i + 1);
        }
    }
    let metrics = admin_text(&proxy, "/metrics").await;
    for (side, n) in [("large", 500.0), ("distilled", 300.0), ("quantised", 200.0)] {
        let series = format!(r#"weir_requests_total{{route="ab",side="{side}",code="2xx"}}"#);
        assert_eq!(sample(&metrics, &series), Some(n), "{series}");
    }

    // Sticky users: each stays on one variant, the shares follow the weights, and the
    // distinct users per variant are counted.
    let users: Vec<String> = (0..1200).map(|i| format!("user-{i}")).collect();
    let mut placed: HashMap<String, String> = HashMap::new();
    for user in &users {
        let side = side_of(&client, proxy.listen_addr(), Some(user)).await;
        assert_eq!(
            side_of(&client, proxy.listen_addr(), Some(user)).await,
            side,
            "{user} flapped"
        );
        placed.insert(user.clone(), side);
    }
    let metrics = admin_text(&proxy, "/metrics").await;
    for (side, share) in [("large", 0.5), ("distilled", 0.3), ("quantised", 0.2)] {
        let n = placed.values().filter(|s| *s == side).count() as f64;
        assert!((n / 1200.0 - share).abs() < 0.05, "{n} users on {side}");
        let estimate = sample(
            &metrics,
            &format!(r#"weir_sticky_users{{route="ab",side="{side}",epoch=""}}"#),
        )
        .unwrap_or_else(|| panic!("no sticky users series for {side}"));
        assert!(
            (estimate - n).abs() <= n * 0.05 + 2.0,
            "{side}: {estimate} estimated, {n} placed"
        );
    }

    // Growing distilled (the others scaled down by one factor) moves users only into it.
    proxy
        .apply(config::parse(&yaml([2500, 6500, 1000])).expect("valid"))
        .expect("applies");
    for user in &users {
        let now = side_of(&client, proxy.listen_addr(), Some(user)).await;
        let before = &placed[user];
        assert!(
            now == *before || now == "distilled",
            "{user} moved from {before} to {now}"
        );
    }
    proxy.shutdown().await;
}

/// An experiment started again must not count the last one's users: its `usersEpoch` starts
/// each variant's distinct users from 0 in a series labelled with it (the last epoch's series
/// goes, so no reader mistakes it for this one's), while a reload with the same epoch (a weight
/// change) keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_users_epoch_counts_sticky_users_afresh() {
    let (control, variant) = (Backend::start("control").await, Backend::start("variant").await);
    let yaml = |epoch: &str, weights: [u16; 2]| {
        variants_yaml(
            &[
                ("control", control.addr, weights[0]),
                ("variant", variant.addr, weights[1]),
            ],
            &format!("    sticky: {{ header: x-user-id }}\n    usersEpoch: \"{epoch}\"\n"),
        )
    };
    let series = |side: &str, epoch: &str| format!(r#"weir_sticky_users{{route="ab",side="{side}",epoch="{epoch}"}}"#);
    let epoch = std::cell::Cell::new("first");
    let users_of = |metrics: &str, side: &str| {
        sample(metrics, &series(side, epoch.get()))
            .unwrap_or_else(|| panic!("no sticky users series for {side} in epoch {}:\n{metrics}", epoch.get()))
    };
    // Each side's estimate is within 5 % (and 2) of the users placed on it.
    let counted = |metrics: &str, placed: &HashMap<String, u32>| {
        for side in ["control", "variant"] {
            let estimate = users_of(metrics, side);
            let n = f64::from(placed[side]);
            assert!(
                (estimate - n).abs() <= n * 0.05 + 2.0,
                "{side}: {estimate} estimated, {n} placed"
            );
        }
    };
    let proxy = start_proxy(&yaml("first", [5000, 5000])).await;
    let client = h1_client();
    let placed = place_users(&client, proxy.listen_addr(), "old", 200).await;
    counted(&admin_text(&proxy, "/metrics").await, &placed);

    // The same epoch at other weights: a reload, not a new experiment.
    proxy
        .apply(config::parse(&yaml("first", [7000, 3000])).expect("valid"))
        .expect("applies");
    counted(&admin_text(&proxy, "/metrics").await, &placed);

    // A new epoch: both sides start from 0, and count only the users they see from now on.
    proxy
        .apply(config::parse(&yaml("second", [5000, 5000])).expect("valid"))
        .expect("applies");
    epoch.set("second");
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(users_of(&metrics, "control"), 0.0);
    assert_eq!(users_of(&metrics, "variant"), 0.0);
    for side in ["control", "variant"] {
        assert_eq!(
            sample(&metrics, &series(side, "first")),
            None,
            "the first epoch's {side} series is gone"
        );
    }
    let placed = place_users(&client, proxy.listen_addr(), "new", 40).await;
    counted(&admin_text(&proxy, "/metrics").await, &placed);
    proxy.shutdown().await;
}

/// Sends one request for each of `n` users named `{prefix}-{i}`: how many landed on each side.
async fn place_users(client: &TestClient, proxy: SocketAddr, prefix: &str, n: usize) -> HashMap<String, u32> {
    let mut placed = HashMap::new();
    for i in 0..n {
        *placed
            .entry(side_of(client, proxy, Some(&format!("{prefix}-{i}"))).await)
            .or_default() += 1;
    }
    placed
}

/// A backend whose responses are fed by the test, frame by frame: each request takes the
/// next channel handed in, so a test can wait for each frame to reach its client before it
/// sends the next (no two frames can merge on the way).
struct Fed {
    served: Served,
    feeds: Arc<Mutex<Vec<mpsc::Receiver<Frame<Bytes>>>>>,
}

impl Fed {
    async fn start(content_type: &'static str) -> Fed {
        let feeds: Arc<Mutex<Vec<mpsc::Receiver<Frame<Bytes>>>>> = Arc::default();
        let taken = Arc::clone(&feeds);
        let served = Served::start(hyper::service::service_fn(move |_req: Request<Incoming>| {
            let feed = taken.lock().expect("feeds").pop().expect("a feed for every request");
            async move {
                let mut rsp = Response::new(ChannelBody(feed));
                rsp.headers_mut()
                    .insert("content-type", HeaderValue::from_static(content_type));
                Ok::<_, Infallible>(rsp)
            }
        }))
        .await;
        Fed { served, feeds }
    }

    fn feed(&self) -> mpsc::Sender<Frame<Bytes>> {
        let (tx, rx) = mpsc::channel(1);
        self.feeds.lock().expect("feeds").push(rx);
        tx
    }
}

fn one_backend_yaml(addr: SocketAddr, protocol: &str, route_extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: r\n    stable: {{ backend: s }}\n{route_extra}backends:\n  s: {{ endpoints: [\"{addr}\"], protocol: {protocol} }}\n"
    )
}

async fn metric(proxy: &Proxy, series: &str) -> f64 {
    let metrics = admin_text(proxy, "/metrics").await;
    sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_counts_its_frames_and_the_gaps_between_them() {
    const EVENTS: usize = 6;
    let backend = Fed::start("text/event-stream").await;
    let proxy = start_proxy(&one_backend_yaml(backend.served.addr, "h1", "")).await;
    for client in [h1_client(), h2c_client()] {
        let feed = backend.feed();
        let rsp = within(client.request(get(proxy.listen_addr(), "/v1/completions")))
            .await
            .expect("response");
        let mut body = rsp.into_body();
        for i in 0..EVENTS {
            let event = format!("data: token-{i}\n\n");
            feed.send(Frame::data(Bytes::from(event.clone()))).await.expect("fed");
            let frame = within(body.frame()).await.expect("a frame").expect("no error");
            assert_eq!(frame.into_data().expect("data"), event);
        }
        drop(feed);
        while let Some(frame) = within(body.frame()).await {
            let data = frame.expect("no error").into_data().unwrap_or_default();
            assert!(data.is_empty(), "only the end is left, not {data:?}");
        }
    }
    let series = |name: &str| format!(r#"{name}{{route="r",side="stable"}}"#);
    eventually("both responses end", || async {
        metric(&proxy, &series("weir_stream_frames_count")).await == 2.0
    })
    .await;
    assert_eq!(
        metric(&proxy, &series("weir_stream_frames_sum")).await,
        (2 * EVENTS) as f64
    );
    assert_eq!(
        metric(&proxy, &series("weir_stream_gap_seconds_count")).await,
        (2 * (EVENTS - 1)) as f64
    );
    assert!(metric(&proxy, &series("weir_stream_gap_seconds_sum")).await > 0.0);
    proxy.shutdown().await;
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<SayReply, tonic::Status>> + Send>>;

/// A server stream whose messages the test feeds one at a time.
#[derive(Clone)]
struct FedStream(Arc<Mutex<Vec<mpsc::Receiver<SayReply>>>>);

impl tonic::server::ServerStreamingService<SayRequest> for FedStream {
    type Response = SayReply;
    type ResponseStream = ReplyStream;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<ReplyStream>, tonic::Status>> + Send>>;

    fn call(&mut self, _request: tonic::Request<SayRequest>) -> Self::Future {
        let feed = self.0.lock().expect("feeds").pop().expect("a feed for every call");
        let stream = futures::stream::unfold(feed, |mut feed| async move {
            feed.recv().await.map(|reply| (Ok(reply), feed))
        });
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(stream) as ReplyStream)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_server_stream_counts_its_messages_and_the_gaps_between_them() {
    const MESSAGES: u32 = 5;
    let feeds: Arc<Mutex<Vec<mpsc::Receiver<SayReply>>>> = Arc::default();
    let service = FedStream(Arc::clone(&feeds));
    let backend = Served::start(hyper::service::service_fn(move |req: Request<Incoming>| {
        let service = service.clone();
        async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<SayReply, SayRequest>::default());
            Ok::<_, Infallible>(grpc.server_streaming(service, req).await)
        }
    }))
    .await;
    let proxy = start_proxy(&one_backend_yaml(backend.addr, "h2c", "")).await;

    let (feed, rx) = mpsc::channel(1);
    feeds.lock().expect("feeds").push(rx);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut client =
        tonic::client::Grpc::with_origin(http, format!("http://{}", proxy.listen_addr()).parse().expect("origin"));
    within(client.ready()).await.expect("ready");
    let rsp = within(client.server_streaming(
        tonic::Request::new(SayRequest::default()),
        PathAndQuery::from_static("/weir.test.Echo/Stream"),
        ProstCodec::<SayRequest, SayReply>::default(),
    ))
    .await
    .expect("a stream");
    let mut stream = rsp.into_inner();
    for index in 0..MESSAGES {
        feed.send(SayReply {
            side: "stable".into(),
            index,
        })
        .await
        .expect("fed");
        let reply = within(stream.message()).await.expect("a message").expect("not the end");
        assert_eq!(reply.index, index);
    }
    drop(feed);
    assert!(within(stream.message()).await.expect("ends cleanly").is_none());

    let series = |name: &str| format!(r#"{name}{{route="r",side="stable"}}"#);
    eventually("the stream is counted", || async {
        metric(&proxy, &series("weir_stream_frames_count")).await == 1.0
    })
    .await;
    assert_eq!(
        metric(&proxy, &series("weir_stream_frames_sum")).await,
        f64::from(MESSAGES)
    );
    assert_eq!(
        metric(&proxy, &series("weir_stream_gap_seconds_count")).await,
        f64::from(MESSAGES - 1)
    );
    proxy.shutdown().await;
}

/// Answers `/header/V` with header `x-weir-score: V`, and `/trailer/V` with a body and then
/// trailer `x-weir-score: V` (over HTTP/1.1 only to a client that sent `TE: trailers`, which
/// the proxy does on a route with a score).
async fn scoring_backend() -> Served {
    Served::start(hyper::service::service_fn(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let (kind, value) = path[1..].split_once('/').expect("/kind/value");
        let value = HeaderValue::from_str(value).expect("ascii");
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = match kind {
            "header" => vec![Ok(Frame::data(Bytes::from_static(b"answer")))],
            _ => {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-weir-score", value.clone());
                vec![
                    Ok(Frame::data(Bytes::from_static(b"answer"))),
                    Ok(Frame::trailers(trailers)),
                ]
            }
        };
        let mut rsp = Response::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
        if kind == "header" {
            rsp.headers_mut().insert("x-weir-score", value);
        } else {
            // An HTTP/1.1 server announces the trailers it will send (RFC 9110 6.6.2).
            rsp.headers_mut()
                .insert("trailer", HeaderValue::from_static("x-weir-score"));
        }
        Ok::<_, Infallible>(rsp)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_read_from_headers_and_trailers_and_a_bad_one_counts_as_missing() {
    let score = "    score: { header: x-weir-score }\n";
    for protocol in ["h1", "h2c"] {
        let backend = scoring_backend().await;
        let proxy = start_proxy(&one_backend_yaml(backend.addr, protocol, score)).await;
        let series = |name: &str| format!(r#"{name}{{route="r",side="stable"}}"#);
        // Exported from 0 before any response scores.
        assert_eq!(metric(&proxy, &series("weir_score_count")).await, 0.0);
        let client = h1_client();
        for path in [
            "/header/0.5",
            "/header/0.25",
            "/header/good",
            "/trailer/0.75",
            "/trailer/1",
            "/trailer/-3",
            "/trailer/NaN",
        ] {
            let (parts, body, _) = send(&client, get(proxy.listen_addr(), path)).await;
            assert_eq!(parts.status, 200, "{path} over {protocol}");
            assert_eq!(body, "answer");
        }
        eventually("every response is counted", || async {
            metric(&proxy, r#"weir_requests_total{route="r",side="stable",code="2xx"}"#).await == 7.0
        })
        .await;
        assert_eq!(
            metric(&proxy, &series("weir_score_count")).await,
            4.0,
            "over {protocol}"
        );
        assert_eq!(metric(&proxy, &series("weir_score_sum")).await, 2.5, "over {protocol}");
        assert_eq!(
            metric(&proxy, &series("weir_score_squares_sum")).await,
            0.25 + 0.0625 + 0.5625 + 1.0,
            "over {protocol}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variants_route_counts_scores_per_variant() {
    let (a, b) = (scoring_backend().await, scoring_backend().await);
    let yaml = variants_yaml(
        &[("a", a.addr, 5000), ("b", b.addr, 5000)],
        "    score: { header: x-weir-score }\n",
    );
    let proxy = start_proxy(&yaml).await;
    let client = h2c_client();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let (parts, _, _) = send(&client, get(proxy.listen_addr(), "/trailer/0.5")).await;
        seen.insert(parts.headers["x-weir-side"].to_str().expect("ascii").to_owned());
    }
    assert_eq!(seen, HashSet::from(["a".to_owned(), "b".to_owned()]));
    for side in ["a", "b"] {
        let series = format!(r#"weir_score_count{{route="ab",side="{side}"}}"#);
        eventually(&series, || async { metric(&proxy, &series).await == 2.0 }).await;
        let sum = format!(r#"weir_score_sum{{route="ab",side="{side}"}}"#);
        assert_eq!(metric(&proxy, &sum).await, 1.0);
    }
    proxy.shutdown().await;
}
