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
//!
//! [`Completion`] also sees what a streaming model server's users feel beyond the first byte:
//! the gaps between body frames (inter-token latency) and the frames per response, and the
//! score a response reports in the route's score header or trailer.

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
            frames: 0,
            last_frame: None,
            scored: false,
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
    /// Data frames passed so far; the first is the time to first byte.
    frames: u64,
    /// When the last data frame passed.
    last_frame: Option<Instant>,
    /// The response's score has been read (from its head or its trailers).
    scored: bool,
    /// What is counted unless the body says otherwise: the head's class.
    outcome: CodeClass,
    /// A gRPC answer whose trailers (and so its verdict) have not arrived.
    awaiting_trailers: bool,
    counted: bool,
}

impl Completion {
    /// The response head's headers: a score may be in them.
    pub fn head(&mut self, headers: &HeaderMap) {
        self.take_score(headers);
    }

    /// A body data frame passed: the first one is the time to first byte; every later one
    /// is a gap in the stream.
    pub fn data(&mut self) {
        let now = Instant::now();
        self.frames += 1;
        match self.last_frame.replace(now) {
            Some(last) => self
                .route
                .metrics
                .side(self.side)
                .observe_stream_gap(now.duration_since(last).as_secs_f64()),
            None => self.first_byte(now),
        }
    }

    /// The first body byte passed at `now`.
    fn first_byte(&self, now: Instant) {
        self.route
            .metrics
            .side(self.side)
            .observe_first_byte(now.duration_since(self.start).as_secs_f64());
    }

    /// Counts the route's score if `headers` carry it, once per response. A value that is not
    /// a finite, non-negative number is treated as missing: counting it as 0 would drag the
    /// mean down for a server that failed to score, and the sums must only grow.
    fn take_score(&mut self, headers: &HeaderMap) {
        let Some(name) = &self.route.score else { return };
        if self.scored {
            return;
        }
        let Some(value) = headers.get(name) else { return };
        self.scored = true;
        match parse_score(value.as_bytes()) {
            Some(score) => self.route.metrics.side(self.side).score(score),
            None => {
                tracing::debug!(route = %self.route.name, header = %name, value = ?value, "score is not a non-negative number; counted as missing")
            }
        }
    }

    /// The trailers arrived: a gRPC answer's verdict is its `grpc-status`, and a missing one
    /// is UNKNOWN. A score may be in them too.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        self.take_score(trailers);
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
        if self.frames == 0 {
            self.first_byte(Instant::now());
        }
        let metrics = self.route.metrics.side(self.side);
        metrics.observe_duration(self.start.elapsed().as_secs_f64());
        metrics.observe_stream_frames(self.frames);
    }
}

/// A score as a response reports it: a finite, non-negative decimal number.
pub fn parse_score(value: &[u8]) -> Option<f64> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        // Its square is summed too: a value whose square overflows would poison that sum.
        .filter(|score| score.is_finite() && *score >= 0.0 && (score * score).is_finite())
}

#[cfg(test)]
mod tests {
    use super::parse_score;

    #[test]
    fn scores_are_finite_non_negative_numbers() {
        assert_eq!(parse_score(b"0.83"), Some(0.83));
        assert_eq!(parse_score(b" 1 "), Some(1.0));
        assert_eq!(parse_score(b"0"), Some(0.0));
        assert_eq!(parse_score(b"2e-3"), Some(0.002));
        for bad in [
            &b""[..],
            b"n/a",
            b"NaN",
            b"inf",
            b"-0.5",
            b"0.8 good",
            b"\xff",
            b"1e200",
        ] {
            assert_eq!(parse_score(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
