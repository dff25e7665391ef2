//! Counting each request exactly once, by how it ended, from guards that go wherever the
//! request goes and count when they are dropped, so no path (an early return, a client that
//! goes away, a body that fails) can skip the count.
//!
//! - [`Pending`] lives from the moment the side is chosen until the response head arrives.
//!   Dropped before that, the client went away first: `cancelled`, with its elapsed time, so
//!   a hung candidate whose clients give up shows in the numbers.
//! - [`Completion`] takes over with the head and rides in the response body. The head's class
//!   is only provisional: a body that fails after a 2xx head (a model server dying mid-stream)
//!   or goes silent for the route's timeout is an `error`, a gRPC answer's verdict is in its
//!   trailers, and a client that leaves before the body's end is `cancelled` (without feeding
//!   fail-fast: stopping a generation half way is ordinary).
//!
//! Every candidate outcome also feeds fail-fast.

use std::sync::Arc;

use http::HeaderMap;
use tokio::time::Instant;

use crate::metrics::{CodeClass, UpstreamErrorKind};
use crate::split::Side;
use crate::table::Route;

/// Counts one outcome of a side, and feeds the candidate's to fail-fast.
pub fn count(route: &Route, side: Side, code: CodeClass) {
    route.metrics.side(side).count(code);
    if side == Side::Candidate {
        route.record_candidate(code.is_failure());
    }
}

/// A request on its way to a side, before the response head.
#[derive(Debug)]
pub struct Pending {
    route: Arc<Route>,
    side: Side,
    start: Instant,
    settled: bool,
}

impl Pending {
    /// A request of `route` sent to `side`, received at `start`.
    pub fn new(route: Arc<Route>, side: Side, start: Instant) -> Self {
        Pending {
            route,
            side,
            start,
            settled: false,
        }
    }

    /// The upstream failed before answering: counted as `error` of this side, with its kind.
    pub fn failed(mut self, kind: UpstreamErrorKind) {
        self.settled = true;
        let metrics = self.route.metrics.side(self.side);
        count(&self.route, self.side, CodeClass::Error);
        metrics.upstream_error(kind);
        metrics.observe_duration(self.start.elapsed().as_secs_f64());
    }

    /// The client broke its own request (its body failed on the way upstream): `cancelled`,
    /// with its elapsed time, and no failure of the side for fail-fast, since any client could
    /// otherwise trip it at will.
    pub fn abandoned_by_client(mut self) {
        self.settled = true;
        let metrics = self.route.metrics.side(self.side);
        metrics.count(CodeClass::Cancelled);
        metrics.observe_duration(self.start.elapsed().as_secs_f64());
    }

    /// The response head arrived with this class; `grpc` says its verdict is in the trailers
    /// still to come. The count now waits for the body's end.
    pub fn answered(mut self, head: CodeClass, grpc: bool) -> Completion {
        self.settled = true;
        Completion {
            route: Arc::clone(&self.route),
            side: self.side,
            start: self.start,
            first_byte_seen: false,
            outcome: head,
            awaiting_trailers: grpc,
            counted: false,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.settled {
            count(&self.route, self.side, CodeClass::Cancelled);
            self.route
                .metrics
                .side(self.side)
                .observe_duration(self.start.elapsed().as_secs_f64());
        }
    }
}

/// A response on its way to the client: counted once its body ends, fails, or is dropped.
#[derive(Debug)]
pub struct Completion {
    route: Arc<Route>,
    side: Side,
    start: Instant,
    first_byte_seen: bool,
    /// What is counted unless the body says otherwise: the head's class.
    outcome: CodeClass,
    /// A gRPC answer whose trailers (and so its verdict) have not arrived.
    awaiting_trailers: bool,
    counted: bool,
}

impl Completion {
    /// A body data frame passed: the first one is the time to first byte.
    pub fn data(&mut self) {
        if !self.first_byte_seen {
            self.first_byte_seen = true;
            self.route
                .metrics
                .side(self.side)
                .observe_first_byte(self.start.elapsed().as_secs_f64());
        }
    }

    /// The trailers arrived: a gRPC answer's verdict is its `grpc-status`, and a missing one
    /// is UNKNOWN.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if self.awaiting_trailers {
            self.awaiting_trailers = false;
            self.outcome = crate::grpc::status(trailers).map_or(CodeClass::GrpcError, crate::grpc::classify);
        }
    }

    /// The body ended cleanly. A gRPC answer that ended without trailers has no status: an
    /// error.
    pub fn ended(&mut self) {
        if self.awaiting_trailers {
            self.awaiting_trailers = false;
            self.outcome = CodeClass::GrpcError;
        }
        self.settle();
    }

    /// Every byte the upstream declared has passed. That ends an answer whose verdict is in
    /// hand; a gRPC answer still waits for its trailers.
    pub fn whole(&mut self) {
        if !self.awaiting_trailers {
            self.settle();
        }
    }

    /// The upstream body failed part way: an `error` of this side, whatever the head said.
    pub fn failed(&mut self) {
        self.broke(UpstreamErrorKind::reset);
    }

    /// The upstream body went silent for the route's timeout and was cut off: an `error`.
    pub fn timed_out(&mut self) {
        self.broke(UpstreamErrorKind::timeout);
    }

    fn broke(&mut self, kind: UpstreamErrorKind) {
        if !self.counted {
            self.route.metrics.side(self.side).upstream_error(kind);
            self.outcome = CodeClass::Error;
            self.settle();
        }
    }

    fn settle(&mut self) {
        if !self.counted {
            self.counted = true;
            count(&self.route, self.side, self.outcome);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Not settled: the client went away before the body's end (every end, clean or not,
        // settles). A candidate whose streams stall until clients give up shows as more of
        // these than stable has; but users stop generations half way all the time, so this
        // never feeds fail-fast's absolute limit.
        if !self.counted {
            self.counted = true;
            self.route.metrics.side(self.side).count(CodeClass::Cancelled);
        }
        // A response without a body has its first (and last) byte at its end.
        self.data();
        self.route
            .metrics
            .side(self.side)
            .observe_duration(self.start.elapsed().as_secs_f64());
    }
}
