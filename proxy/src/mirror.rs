//! Mirroring: a copy of a stable-bound request goes to the candidate, its answer is counted
//! under `side="mirror"` and dropped. The client only ever sees the primary answer.
//!
//! The request body is teed as it streams to the primary: each frame is handed to the copy
//! without waiting (a cheap `Bytes` clone, not a copy of the payload). If the copy falls
//! behind, or the body outgrows the mirror's limit, the mirror is abandoned and counted; the
//! primary never waits for it and never holds more than the channel's few frames for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::config::MirrorConfig;
use crate::metrics::{CodeClass, RouteMetrics, SkipReason, UpstreamErrorKind};
use crate::shutdown::{ShutdownSignal, stopped};
use crate::split::{Side, weighted_side};

/// Frames the copy may lag behind the primary before the mirror is abandoned.
const LAG_FRAMES: usize = 16;

/// A route's mirror policy, its selection counter and its copies in flight. The counters
/// are the route's, not the table's: a reload carries them over, so the share stays exact
/// and the cap holds across reloads, as the weight split's sequence does.
#[derive(Debug)]
pub struct Mirror {
    config: MirrorConfig,
    sequence: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

/// A mirrored request's place under the route's `maxInFlight`, held until its exchange ends.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mirror {
    /// A mirror for `config`, continuing `previous` (the same route's mirror in the table
    /// being replaced), if any.
    pub fn new(config: MirrorConfig, previous: Option<&Mirror>) -> Self {
        Mirror {
            config,
            sequence: previous.map_or_else(Arc::default, |p| Arc::clone(&p.sequence)),
            in_flight: previous.map_or_else(Arc::default, |p| Arc::clone(&p.in_flight)),
        }
    }

    /// Whether to mirror the next stable-bound request: exactly `weight` of them, spread
    /// evenly, as the weight split does.
    pub fn select(&self) -> bool {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        weighted_side(n, self.config.weight) == Side::Candidate
    }

    /// A place for one more copy in flight, or `None` at `maxInFlight`.
    pub fn admit(&self) -> Option<InFlight> {
        let limit = usize::try_from(self.config.max_in_flight).unwrap_or(usize::MAX);
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(Arc::clone(&self.in_flight));
        (before < limit).then_some(slot)
    }

    /// Largest body copied.
    pub fn max_body_bytes(&self) -> u64 {
        self.config.max_body_bytes
    }
}

/// The primary's body: the client's, with each frame also offered to the copy.
#[derive(Debug)]
pub struct Tee {
    inner: Incoming,
    copy: Option<mpsc::Sender<Frame<Bytes>>>,
    sent: u64,
    limit: u64,
    skipped: Arc<OnceLock<SkipReason>>,
    metrics: Arc<RouteMetrics>,
}

/// The mirror's body: the frames the tee handed over.
#[derive(Debug)]
pub struct Copy {
    frames: mpsc::Receiver<Frame<Bytes>>,
    skipped: Arc<OnceLock<SkipReason>>,
    hint: SizeHint,
}

/// The mirror was abandoned; its request fails instead of ending short.
#[derive(Debug, thiserror::Error)]
#[error("mirror abandoned: {0:?}")]
pub struct Abandoned(SkipReason);

/// Splits a client body into the primary's tee and the mirror's copy; the flag says whether
/// (and why) the mirror was abandoned.
pub fn tee(body: Incoming, limit: u64, metrics: Arc<RouteMetrics>) -> (Tee, Copy, Arc<OnceLock<SkipReason>>) {
    let (tx, rx) = mpsc::channel(LAG_FRAMES);
    let skipped = Arc::new(OnceLock::new());
    let hint = body.size_hint();
    let copy = Copy {
        frames: rx,
        skipped: Arc::clone(&skipped),
        hint,
    };
    let mut tee = Tee {
        inner: body,
        copy: Some(tx),
        sent: 0,
        limit,
        skipped,
        metrics,
    };
    if hint.lower() > limit {
        tee.skip(SkipReason::body_too_large);
    }
    let flag = Arc::clone(&tee.skipped);
    (tee, copy, flag)
}

/// Sends a mirrored request and drains its answer, counting it under `side="mirror"` of the
/// route's `metrics`. Bounded by the route's `timeout` (for the answer's head, then again for
/// its body) and by shutdown.
pub async fn send(
    response: impl std::future::Future<Output = Result<http::Response<Incoming>, crate::upstream::failure::UpstreamFailure>>,
    metrics: Arc<RouteMetrics>,
    timeout: std::time::Duration,
    skipped: Arc<OnceLock<SkipReason>>,
    shutdown: ShutdownSignal,
    in_flight: InFlight,
) {
    let _in_flight = in_flight;
    let start = Instant::now();
    let metrics = metrics.mirror();
    let exchange = async {
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(rsp)) => {
                metrics.count(CodeClass::of_status(rsp.status()));
                let mut body = rsp.into_body();
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(timeout, drain).await;
            }
            // An abandoned copy fails its request; that is counted as a skip, not an error.
            Ok(Err(_)) if skipped.get().is_some() => {}
            Ok(Err(failure)) => {
                metrics.count(CodeClass::Error);
                metrics.upstream_error(failure.kind);
            }
            Err(_elapsed) => {
                metrics.count(CodeClass::Error);
                metrics.upstream_error(UpstreamErrorKind::timeout);
            }
        }
        metrics.observe_duration(start.elapsed().as_secs_f64());
    };
    tokio::select! {
        () = exchange => {}
        () = stopped(shutdown) => {}
    }
}

impl Tee {
    fn skip(&mut self, reason: SkipReason) {
        if self.copy.take().is_some() && self.skipped.set(reason).is_ok() {
            self.metrics.mirror_skipped(reason);
        }
    }

    fn offer(&mut self, frame: &Frame<Bytes>) {
        let Some(tx) = &self.copy else { return };
        let copy = if let Some(data) = frame.data_ref() {
            self.sent += data.len() as u64;
            if self.sent > self.limit {
                return self.skip(SkipReason::body_too_large);
            }
            Frame::data(data.clone())
        } else if let Some(trailers) = frame.trailers_ref() {
            Frame::trailers(trailers.clone())
        } else {
            return;
        };
        if tx.try_send(copy).is_err() {
            self.skip(SkipReason::mirror_slow);
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.offer(frame);
                // A sized body may not be polled again once its last byte is read.
                if this.inner.is_end_stream() {
                    this.copy = None;
                }
            }
            // The end: dropping the sender ends the copy too.
            Poll::Ready(None) => this.copy = None,
            Poll::Ready(Some(Err(_))) => this.skip(SkipReason::client_error),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    /// A primary dropped before its body ended (its client went away, or its upstream
    /// failed mid-upload) leaves the copy short: it is abandoned, so the candidate sees a
    /// failed request, never a shorter one that looks complete.
    fn drop(&mut self) {
        if self.copy.is_some() && !self.inner.is_end_stream() {
            self.skip(SkipReason::primary_aborted);
        }
    }
}

impl Body for Copy {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Abandoned>>> {
        let this = self.get_mut();
        match this.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(this.skipped.get().map(|reason| Err(Abandoned(*reason)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
