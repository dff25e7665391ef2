//! A demo model server: a real HTTP/1.1 server on loopback that streams a few tokens per
//! request, with an error rate and a latency distribution that can change at run time (a
//! Deployment rolling to a new template changes its backend's behaviour).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// How a version of the model server behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behavior {
    /// The version's name; two versions that behave alike are still two templates.
    pub version: &'static str,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Median time to the first token, in milliseconds.
    pub latency_ms: f64,
    /// Mean quality of its answers (0 to 1), sent as the trailer `x-weir-score` at the end
    /// of each stream; `None` sends no score.
    pub score: Option<f64>,
    /// Time between streamed tokens, in milliseconds.
    pub token_gap_ms: f64,
}

/// The trailer a demo model server reports its answer's score in.
pub const SCORE_HEADER: &str = "x-weir-score";
/// Spread of one answer's score around its version's mean.
const SCORE_SPREAD: f64 = 0.15;

impl Behavior {
    /// A short stable hash, standing in for a pod template hash.
    pub fn template_hash(&self) -> String {
        let text = format!(
            "{}/{}/{}/{:?}/{}",
            self.version, self.error_rate, self.latency_ms, self.score, self.token_gap_ms
        );
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{:08x}", hash as u32)
    }
}

/// Tokens streamed per answer.
const TOKENS: usize = 4;
/// Spread of latency around its median (log-normal sigma): p99 is about 2.3x the median.
const LATENCY_SIGMA: f64 = 0.35;

/// A running demo backend.
pub struct DemoBackend {
    /// Its address.
    pub addr: SocketAddr,
    behavior: Arc<Mutex<Behavior>>,
}

impl DemoBackend {
    /// Starts a backend on a free loopback port; it stops when `shutdown` flips.
    pub async fn start(behavior: Behavior, seed: u64, shutdown: watch::Receiver<bool>) -> std::io::Result<DemoBackend> {
        DemoBackend::start_on(([127, 0, 0, 1], 0).into(), behavior, seed, shutdown).await
    }

    /// As [`DemoBackend::start`], listening on `addr`.
    pub async fn start_on(
        addr: SocketAddr,
        behavior: Behavior,
        seed: u64,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let behavior = Arc::new(Mutex::new(behavior));
        let rng = Arc::new(Mutex::new(SmallRng::seed_from_u64(seed)));
        let shared = Arc::clone(&behavior);
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let (behavior, rng) = (Arc::clone(&shared), Arc::clone(&rng));
                        let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&behavior), Arc::clone(&rng)));
                        conns.spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                        while conns.try_join_next().is_some() {}
                    }
                }
            }
            conns.abort_all();
        });
        Ok(DemoBackend { addr, behavior })
    }

    /// Changes how the backend behaves from the next request on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.behavior.lock().expect("no panics while holding the behavior lock") = behavior;
    }
}

async fn answer(
    _req: Request<Incoming>,
    behavior: Arc<Mutex<Behavior>>,
    rng: Arc<Mutex<SmallRng>>,
) -> Result<Response<Tokens>, Infallible> {
    let b = *behavior.lock().expect("no panics while holding the behavior lock");
    let (fail, delay, score) = {
        let mut rng = rng.lock().expect("no panics while holding the rng lock");
        let fail = rng.random::<f64>() < b.error_rate;
        let latency = LogNormal::new(b.latency_ms.max(0.1).ln(), LATENCY_SIGMA).expect("sigma is positive");
        let delay = Duration::from_secs_f64(latency.sample(&mut *rng) / 1000.0);
        let score = b.score.map(|mean| {
            let noise = rand_distr::Normal::new(0.0, SCORE_SPREAD).expect("spread is positive");
            (mean + noise.sample(&mut *rng)).clamp(0.0, 1.0)
        });
        (fail, delay, score)
    };
    tokio::time::sleep(delay).await;
    if fail {
        let mut rsp = Response::new(Tokens::error());
        *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(rsp);
    }
    let (tx, rx) = mpsc::channel(TOKENS + 1);
    let gap = Duration::from_secs_f64(b.token_gap_ms.max(0.0) / 1000.0);
    tokio::spawn(async move {
        for i in 0..TOKENS {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if tx
                .send(Frame::data(Bytes::from(format!("data: token {i}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
        if let Some(score) = score {
            // A streaming server knows its answer's quality only at the end: a trailer.
            let mut trailers = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_str(&format!("{score:.4}")) {
                trailers.insert(SCORE_HEADER, value);
                let _ = tx.send(Frame::trailers(trailers)).await;
            }
        }
    });
    let mut rsp = Response::new(Tokens::Stream(rx));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    if b.score.is_some() {
        // An HTTP/1.1 server announces its trailers (and sends them only to a client that
        // asked for them with `TE: trailers`, as the proxy does on a route with a score).
        rsp.headers_mut()
            .insert(http::header::TRAILER, http::HeaderValue::from_static(SCORE_HEADER));
    }
    Ok(rsp)
}

/// A streamed answer, or a one-frame error body.
enum Tokens {
    Stream(mpsc::Receiver<Frame<Bytes>>),
    Error(Option<Bytes>),
}

impl Tokens {
    fn error() -> Self {
        Tokens::Error(Some(Bytes::from_static(b"model error\n")))
    }
}

impl Body for Tokens {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Tokens::Stream(rx) => rx.poll_recv(cx).map(|frame| frame.map(Ok)),
            Tokens::Error(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }
}
