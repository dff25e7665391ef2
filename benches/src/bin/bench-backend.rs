//! The upstream of the load comparisons: a single-threaded HTTP/1.1 and h2c server that
//! answers small responses as fast as it can, so the proxies in front of it are what is
//! measured.
//!
//! `bench-backend [ADDR]` (default `127.0.0.1:0`) prints `listening on ADDR` once bound.
//! Paths: `/download/N` streams N zero bytes; `/upload` drains the body and answers its
//! length; `/weir.bench.Echo/Say` is a gRPC method (benches/echo.proto) echoing its text;
//! anything else answers a 23-byte body.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const SMALL: &[u8] = b"hello from the backend\n";
const CHUNK: usize = 64 * 1024;

/// Either the small fixed answer or N zero bytes sent in 64 KiB chunks.
enum Answer {
    Small(Option<Bytes>),
    Zeros { remaining: u64, chunk: Bytes },
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(match self.get_mut() {
            Answer::Small(data) => data.take().map(|d| Ok(Frame::data(d))),
            Answer::Zeros { remaining, chunk } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(chunk.len() as u64);
                    *remaining -= n;
                    Some(Ok(Frame::data(chunk.slice(..n as usize))))
                }
            }
        })
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Small(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Answer::Zeros { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, Copy)]
struct Say;

impl tonic::server::UnaryService<SayRequest> for Say {
    type Response = SayReply;
    type Future = std::future::Ready<Result<tonic::Response<SayReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<SayRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(SayReply {
            text: request.into_inner().text,
        })))
    }
}

type AnyAnswer = Either<Answer, tonic::body::Body>;

async fn route(req: Request<Incoming>) -> Result<Response<AnyAnswer>, Infallible> {
    if req.uri().path() == "/weir.bench.Echo/Say" {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<SayReply, SayRequest>::default());
        return Ok(grpc.unary(Say, req).await.map(Either::Right));
    }
    answer(req).await.map(|rsp| rsp.map(Either::Left))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    let path = req.uri().path();
    if let Some(n) = path.strip_prefix("/download/") {
        let remaining = n.parse().unwrap_or(0);
        return Ok(Response::new(Answer::Zeros {
            remaining,
            chunk: Bytes::from(vec![0u8; CHUNK]),
        }));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut len = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            len += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        return Ok(Response::new(Answer::Small(Some(Bytes::from(format!("{len}\n"))))));
    }
    Ok(Response::new(Answer::Small(Some(Bytes::from_static(SMALL)))))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(route);
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
