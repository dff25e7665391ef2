//! gRPC through the proxy, with tonic on both ends: a tonic service served over h2c by hyper,
//! and tonic's client over hyper's HTTP/2 client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::support::*;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    /// A gRPC status code to fail with; 0 answers normally.
    #[prost(int32, tag = "2")]
    pub fail_with: i32,
    /// Milliseconds to wait before answering.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// Messages a stream sends before it ends (with `fail_with`, if set).
    #[prost(uint32, tag = "4")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayReply {
    #[prost(string, tag = "1")]
    pub side: String,
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

const SAY: &str = "/weir.test.Echo/Say";
const STREAM: &str = "/weir.test.Echo/Stream";

#[derive(Clone)]
struct Say(&'static str);

impl tonic::server::UnaryService<SayRequest> for Say {
    type Response = SayReply;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<SayReply>, Status>> + Send>>;

    fn call(&mut self, request: Request<SayRequest>) -> Self::Future {
        let side = self.0;
        Box::pin(async move {
            let r = request.into_inner();
            tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
            if r.fail_with != 0 {
                return Err(Status::new(Code::from(r.fail_with), "asked to fail"));
            }
            Ok(Response::new(SayReply {
                side: side.into(),
                index: 0,
            }))
        })
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<SayReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<SayRequest> for Say {
    type Response = SayReply;
    type ResponseStream = ReplyStream;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<ReplyStream>, Status>> + Send>>;

    fn call(&mut self, request: Request<SayRequest>) -> Self::Future {
        let side = self.0;
        Box::pin(async move {
            let r = request.into_inner();
            let mut items: Vec<Result<SayReply, Status>> = (0..r.count)
                .map(|index| {
                    Ok(SayReply {
                        side: side.into(),
                        index,
                    })
                })
                .collect();
            if r.fail_with != 0 {
                items.push(Err(Status::new(Code::from(r.fail_with), "stream failed")));
            }
            Ok(Response::new(Box::pin(futures::stream::iter(items)) as ReplyStream))
        })
    }
}

/// A tonic service on 127.0.0.1:0 over h2c; it stops when the handle drops.
async fn grpc_backend(side: &'static str) -> Served {
    Served::start(hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<SayReply, SayRequest>::default());
            let rsp = match req.uri().path() {
                SAY => grpc.unary(Say(side), req).await,
                STREAM => grpc.server_streaming(Say(side), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok::<_, Infallible>(rsp)
        },
    ))
    .await
}

fn grpc_config(stable: SocketAddr, candidate: SocketAddr, weight: u16, route_extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: g\n    stable: {{ backend: s }}\n    candidate: {{ backend: c }}\n    candidateWeight: {weight}\n    overrides:\n      - {{ header: x-weir-side, equals: candidate, side: candidate }}\n{route_extra}backends:\n  s: {{ endpoints: [\"{stable}\"], protocol: h2c }}\n  c: {{ endpoints: [\"{candidate}\"], protocol: h2c }}\n"
    )
}

type GrpcClient = tonic::client::Grpc<Client<hyper_util::client::legacy::connect::HttpConnector, tonic::body::Body>>;

fn client(proxy: SocketAddr) -> GrpcClient {
    let http = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    tonic::client::Grpc::with_origin(http, format!("http://{proxy}").parse().expect("origin"))
}

fn say(text: &str, fail_with: Code, delay_ms: u64, candidate: bool) -> Request<SayRequest> {
    let mut req = Request::new(SayRequest {
        text: text.into(),
        fail_with: fail_with as i32,
        delay_ms,
        count: 3,
    });
    if candidate {
        req.metadata_mut()
            .insert("x-weir-side", "candidate".parse().expect("ascii"));
    }
    req
}

async fn unary(client: &mut GrpcClient, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
    within(client.ready()).await.expect("ready");
    within(client.unary(
        req,
        PathAndQuery::from_static(SAY),
        ProstCodec::<SayRequest, SayReply>::default(),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_reach_the_right_side_with_their_trailers() {
    let (stable, candidate) = (grpc_backend("stable").await, grpc_backend("candidate").await);
    let proxy = start_proxy(&grpc_config(stable.addr, candidate.addr, 0, "")).await;
    let mut c = client(proxy.listen_addr());

    let rsp = unary(&mut c, say("hi", Code::Ok, 0, false))
        .await
        .expect("a unary answer");
    assert_eq!(rsp.get_ref().side, "stable");
    assert_eq!(
        rsp.metadata().get("x-weir-side").map(|v| v.to_str().expect("ascii")),
        Some("stable")
    );
    let rsp = unary(&mut c, say("hi", Code::Ok, 0, true))
        .await
        .expect("a unary answer");
    assert_eq!(rsp.get_ref().side, "candidate");

    within(c.ready()).await.expect("ready");
    let rsp = within(c.server_streaming(
        say("hi", Code::Ok, 0, true),
        PathAndQuery::from_static(STREAM),
        ProstCodec::<SayRequest, SayReply>::default(),
    ))
    .await
    .expect("a stream");
    let mut stream = rsp.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = within(stream.message()).await.expect("a message") {
        got.push((reply.side, reply.index));
    }
    assert_eq!(
        got,
        [
            ("candidate".to_string(), 0),
            ("candidate".to_string(), 1),
            ("candidate".to_string(), 2)
        ]
    );
    let trailers = within(stream.trailers())
        .await
        .expect("trailers")
        .expect("trailers arrive");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().expect("ascii")),
        Some("0")
    );

    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="g",side="candidate",code="2xx"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, r#"weir_requests_total{route="g",side="stable",code="2xx"}"#),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_of_the_candidate_are_counted_from_headers_and_trailers() {
    let (stable, candidate) = (grpc_backend("stable").await, grpc_backend("candidate").await);
    let proxy = start_proxy(&grpc_config(stable.addr, candidate.addr, 0, "")).await;
    let mut c = client(proxy.listen_addr());

    // Trailers-only: the status is in the response head.
    let status = unary(&mut c, say("hi", Code::Unavailable, 0, true))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(status.code(), Code::Unavailable);
    // NOT_FOUND is the caller's business, not an error of the candidate.
    let status = unary(&mut c, say("hi", Code::NotFound, 0, true))
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(status.code(), Code::NotFound);
    // A stream that ends with an error status in its trailers.
    within(c.ready()).await.expect("ready");
    let mut req = say("hi", Code::Internal, 0, true);
    req.get_mut().count = 2;
    let mut stream = within(c.server_streaming(
        req,
        PathAndQuery::from_static(STREAM),
        ProstCodec::<SayRequest, SayReply>::default(),
    ))
    .await
    .expect("a stream")
    .into_inner();
    let mut messages = 0;
    let ended = loop {
        match within(stream.message()).await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert_eq!((messages, ended), (2, Some(Code::Internal)));

    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="g",side="candidate",code="grpc_error"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="g",side="candidate",code="2xx"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_shorter_than_the_backend_gives_deadline_exceeded() {
    let (stable, candidate) = (grpc_backend("stable").await, grpc_backend("candidate").await);
    let proxy = start_proxy(&grpc_config(stable.addr, candidate.addr, 0, "")).await;
    let mut c = client(proxy.listen_addr());
    let mut req = say("slow", Code::Ok, 3000, false);
    req.set_timeout(Duration::from_millis(200));
    let status = unary(&mut c, req).await.expect_err("the deadline passes");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        status
            .metadata()
            .get("x-weir-error")
            .map(|v| v.to_str().expect("ascii")),
        Some("upstream-timeout")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_made_errors_reach_grpc_clients_as_grpc_statuses() {
    let stable = grpc_backend("stable").await;
    let dead_addr = dead_addr().await;
    let proxy = start_proxy(&grpc_config(stable.addr, dead_addr, 0, "")).await;
    let mut c = client(proxy.listen_addr());
    let status = unary(&mut c, say("hi", Code::Ok, 0, true))
        .await
        .expect_err("the candidate is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "upstream-connect");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_reach_h2c_upstreams() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "").replace("\"] }\n", "\"], protocol: h2c }\n");
    let proxy = start_proxy(&yaml).await;
    for client in [h1_client(), h2c_client()] {
        let (parts, body, _) = send(&client, get(proxy.listen_addr(), "/")).await;
        assert_eq!(&body[..], b"stable");
        assert_eq!(
            parts.headers["x-seen-version"], "HTTP/2.0",
            "the upstream was spoken to over h2c"
        );
        let (_, _, trailers) = send(&client, {
            let mut req = get(proxy.listen_addr(), "/trailers");
            req.headers_mut()
                .insert("te", http::HeaderValue::from_static("trailers"));
            req
        })
        .await;
        assert_eq!(trailers.expect("trailers")["x-checksum"], "42");
    }
    proxy.shutdown().await;
}

const ECHO_PROTO: &str = r#"syntax = "proto3";
package weir.test;
service Echo {
  rpc Say(SayRequest) returns (SayReply);
  rpc Stream(SayRequest) returns (stream SayReply);
}
message SayRequest { string text = 1; int32 fail_with = 2; uint64 delay_ms = 3; uint32 count = 4; }
message SayReply { string side = 1; uint32 index = 2; }
"#;

/// grpcurl, pinned, built from Go modules into weir's cache on first use on this machine.
fn grpcurl() -> std::path::PathBuf {
    weir_test_tools::go_tool(weir_test_tools::GRPCURL).unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reaches_both_sides_through_the_proxy() {
    let (stable, candidate) = (grpc_backend("stable").await, grpc_backend("candidate").await);
    let proxy = start_proxy(&grpc_config(stable.addr, candidate.addr, 0, "")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("echo.proto"), ECHO_PROTO).expect("write proto");
    let (dir_path, addr) = (dir.path().to_path_buf(), proxy.listen_addr());
    let run = |data: &'static str, header: Option<&'static str>| {
        let mut cmd = std::process::Command::new(grpcurl());
        // grpcurl bounds itself, so the blocking wait below ends too.
        cmd.args(["-plaintext", "-max-time", "20", "-import-path"])
            .arg(&dir_path)
            .args(["-proto", "echo.proto", "-d", data]);
        if let Some(h) = header {
            cmd.args(["-H", h]);
        }
        cmd.arg(addr.to_string()).arg("weir.test.Echo/Say");
        async move {
            within(tokio::task::spawn_blocking(move || cmd.output()))
                .await
                .expect("grpcurl task")
                .expect("run grpcurl")
        }
    };
    let out = run(r#"{"text": "hi"}"#, None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""side": "stable""#),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(r#"{"text": "hi"}"#, Some("x-weir-side: candidate")).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""side": "candidate""#),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(r#"{"failWith": 14}"#, Some("x-weir-side: candidate")).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unavailable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = admin_text(&proxy, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"weir_requests_total{route="g",side="candidate",code="grpc_error"}"#
        ),
        Some(1.0)
    );
    proxy.shutdown().await;
}
