//! The response body the proxy sends: an upstream body passed through frame by frame, or a
//! small body the proxy made itself. Passing through is the whole point: no frame is held
//! back, copied or collected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::metrics::{CodeClass, UpstreamErrorKind};
use crate::split::Side;
use crate::table::Route;

/// A response body on its way to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Upstream {
        body: Incoming,
        completion: Option<Completion>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body made by the proxy.
    pub fn full(data: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full((!data.is_empty()).then_some(data)),
        }
    }

    /// An upstream body, with the observation to finish when it ends or is dropped.
    pub fn upstream(body: Incoming, completion: Completion) -> Self {
        ProxyBody {
            inner: Inner::Upstream {
                body,
                completion: Some(completion),
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Upstream { body, completion } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(c) = completion.as_mut() {
                            if frame.is_data() {
                                c.first_byte();
                            } else if let Some(trailers) = frame.trailers_ref() {
                                // gRPC's verdict is in the trailers; a missing status is UNKNOWN.
                                c.settle(
                                    crate::grpc::status(trailers).map_or(CodeClass::GrpcError, crate::grpc::classify),
                                );
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(mut c) = completion.take() {
                            c.settle(CodeClass::GrpcError);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(mut c) = completion.take() {
                            c.route.metrics.side(c.side).upstream_error(UpstreamErrorKind::reset);
                            c.settle(CodeClass::Error);
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(data) => data.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// Counts a request's outcome and records its duration once its response has ended, however
/// it ends: the last frame, an error, or the client going away (the body is dropped).
///
/// Most outcomes are known from the response head. A gRPC answer's is in its trailers, so it
/// stays pending until they arrive; `settle` counts it then (and feeds fail-fast).
#[derive(Debug)]
pub struct Completion {
    route: Arc<Route>,
    side: Side,
    start: Instant,
    first_byte_seen: bool,
    /// The class to count if the outcome is never settled (the client left mid-stream).
    pending: Option<CodeClass>,
}

impl Completion {
    /// Counts `code` now and starts timing the body of a request that began at `start`.
    pub fn counted(route: Arc<Route>, side: Side, start: Instant, code: CodeClass) -> Self {
        count(&route, side, code);
        Completion {
            route,
            side,
            start,
            first_byte_seen: false,
            pending: None,
        }
    }

    /// Leaves the count to the gRPC trailers; `fallback` is counted if they never come.
    pub fn awaiting_trailers(route: Arc<Route>, side: Side, start: Instant, fallback: CodeClass) -> Self {
        Completion {
            route,
            side,
            start,
            first_byte_seen: false,
            pending: Some(fallback),
        }
    }

    fn settle(&mut self, code: CodeClass) {
        if self.pending.take().is_some() {
            count(&self.route, self.side, code);
        }
    }

    fn first_byte(&mut self) {
        if !self.first_byte_seen {
            self.first_byte_seen = true;
            self.route
                .metrics
                .side(self.side)
                .observe_first_byte(self.start.elapsed().as_secs_f64());
        }
    }
}

/// Counts one outcome of a side, and feeds the candidate's to fail-fast.
pub fn count(route: &Route, side: Side, code: CodeClass) {
    route.metrics.side(side).count(code);
    if side == Side::Candidate {
        route.record_candidate(code.is_error());
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(code) = self.pending.take() {
            count(&self.route, self.side, code);
        }
        // A response without a body has its first (and last) byte at its end.
        self.first_byte();
        self.route
            .metrics
            .side(self.side)
            .observe_duration(self.start.elapsed().as_secs_f64());
    }
}
