//! Connection supervision: every client connection is closed within a bounded time when its
//! client stops doing its part. A client that connects and never completes a request (slow
//! headers, an HTTP/2 preface and silence), that keeps a connection open with nothing in
//! flight, or that stops reading the response it asked for, would otherwise hold a file
//! descriptor, buffers and an upstream stream for as long as it likes.
//!
//! The service and response bodies report what happens ([`Activity`]); a per-connection task
//! sleeps until the next moment a limit could be crossed and asks [`judge`] what to do. The
//! policy is a pure function of a [`Snapshot`], so it is tested without sockets or clocks.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::time::Instant;

use crate::config::ConnectionLimits;

/// When something last happened, kept as milliseconds since the clock started, so that many
/// tasks can move it forward with one atomic operation and no lock.
#[derive(Debug)]
pub struct LastEvent {
    start: Instant,
    last_ms: AtomicU64,
}

impl LastEvent {
    /// A clock whose last event is now.
    pub fn new() -> Self {
        LastEvent {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Something happened now.
    pub fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last event.
    pub fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Returns once nothing has been stamped for `quiet`.
    pub async fn quiet_for(&self, quiet: Duration) {
        loop {
            let so_far = self.quiet();
            if so_far >= quiet {
                return;
            }
            tokio::time::sleep(quiet - so_far).await;
        }
    }
}

impl Default for LastEvent {
    fn default() -> Self {
        LastEvent::new()
    }
}

/// What one connection's requests and responses are doing, updated as they go.
#[derive(Debug)]
pub struct Activity {
    /// Requests whose handling has begun and whose response body has not been dropped.
    in_flight: AtomicUsize,
    /// Response bodies that handed the connection a frame the client has not yet taken
    /// (the connection has not asked for the next one).
    owed: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// The last change that resets the clocks: a request begun or finished, a frame handed
    /// over or taken (the connection opening, until the first).
    last_event: LastEvent,
    /// Upgraded connections (WebSocket tunnels) still open: the connection's place under
    /// the cap and in the drain is theirs until they close.
    tunnels: AtomicUsize,
    tunnel_closed: tokio::sync::Notify,
    /// Set when the listener drains: HTTP/1.1 answers then say `Connection: close`.
    draining: AtomicBool,
    /// Whether the connection speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
}

/// One look at an [`Activity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests in flight.
    pub in_flight: usize,
    /// Response frames handed over and not yet taken by the client.
    pub owed: usize,
    /// Requests begun since the connection opened.
    pub requests: u64,
    /// Time since the last event (a request begun or finished, a frame handed over or taken);
    /// since the connection opened if there was none.
    pub quiet: Duration,
}

/// What to do with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again after this long at the latest.
    Wait(Duration),
    /// No complete request since the connection opened within the header timeout.
    HeaderTimeout,
    /// Nothing in flight for the idle timeout after a request: close it politely.
    Idle,
    /// The client has not taken response data for the send timeout: close it now.
    SendTimeout,
}

/// The policy: which limit, if any, the connection has crossed, or how long until one could
/// be crossed. A client that takes its data late but before the send timeout, or opens its
/// next request before the idle timeout, is never closed.
pub fn judge(now: &Snapshot, limits: &ConnectionLimits) -> Verdict {
    let check = |limit: Duration, crossed: Verdict| match limit.checked_sub(now.quiet) {
        Some(left) if !left.is_zero() => Verdict::Wait(left),
        _ => crossed,
    };
    if now.owed > 0 {
        return check(limits.send_timeout, Verdict::SendTimeout);
    }
    if now.in_flight > 0 {
        // Waiting on the upstream (the route's timeout bounds that) or on the client's
        // request body. Nothing can be crossed until a frame is handed over, which is an
        // event; look again after the shortest limit in case one was.
        return Verdict::Wait(limits.send_timeout.min(limits.idle_timeout));
    }
    if now.requests == 0 {
        check(limits.header_timeout, Verdict::HeaderTimeout)
    } else {
        check(limits.idle_timeout, Verdict::Idle)
    }
}

impl Activity {
    /// A connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_event: LastEvent::new(),
            tunnels: AtomicUsize::new(0),
            tunnel_closed: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            http2: AtomicBool::new(false),
        })
    }

    /// From now on, every HTTP/1.1 answer on this connection closes it: the way to end an
    /// HTTP/1.1 connection without a race, as the client reads it before sending again.
    /// Returns whether the connection is HTTP/1.1 and has served a request, so that closing
    /// it while idle could race a request on its way.
    pub fn drain(&self) -> bool {
        self.draining.store(true, Ordering::Relaxed);
        self.requests.load(Ordering::Relaxed) > 0 && !self.http2.load(Ordering::Relaxed)
    }

    /// Returns once no tunnel made from this connection is open.
    pub async fn tunnels_closed(&self) {
        loop {
            let closed = self.tunnel_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.tunnels.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            owed: self.owed.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            quiet: self.last_event.quiet(),
        }
    }

    fn event(&self) {
        self.last_event.stamp();
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.event();
        InFlight(Arc::clone(self))
    }
}

/// The connection a request came on, put in the extensions of requests that ask for an
/// upgrade, so that a tunnel made from it keeps the connection's place.
#[derive(Clone, Debug)]
pub struct UpgradeSource {
    activity: Arc<Activity>,
    /// How long a tunnel may carry nothing before it is closed: the idle timeout.
    pub idle: Duration,
}

impl UpgradeSource {
    /// Holds the connection's place until the returned guard drops.
    pub fn hold(&self) -> TunnelHold {
        self.activity.tunnels.fetch_add(1, Ordering::AcqRel);
        TunnelHold(Arc::clone(&self.activity))
    }
}

/// An open tunnel's hold on its connection.
#[derive(Debug)]
pub struct TunnelHold(Arc<Activity>);

impl Drop for TunnelHold {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
        self.0.tunnel_closed.notify_waiters();
    }
}

/// A request in flight, from the service call until its response body is dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.event();
    }
}

/// A service whose requests and response bodies report to the connection's [`Activity`].
#[derive(Clone, Debug)]
pub struct Supervised<S> {
    inner: S,
    activity: Arc<Activity>,
    tunnel_idle: Duration,
}

impl<S> Supervised<S> {
    /// `inner`, reporting to `activity`; tunnels made from its requests close after
    /// `tunnel_idle` without a byte.
    pub fn new(inner: S, activity: Arc<Activity>, tunnel_idle: Duration) -> Self {
        Supervised {
            inner,
            activity,
            tunnel_idle,
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Supervised<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Unpin,
{
    type Response = Response<Watched<B>>;
    type Error = S::Error;
    type Future = SupervisedFuture<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let http1 = req.version() < http::Version::HTTP_2;
        if !http1 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(UpgradeSource {
                activity: Arc::clone(&self.activity),
                idle: self.tunnel_idle,
            });
        }
        SupervisedFuture {
            inner: self.inner.call(req),
            in_flight: Some(self.activity.begin()),
            http1,
        }
    }
}

/// The future of a [`Supervised`] call: the inner response, its body watched.
#[derive(Debug)]
pub struct SupervisedFuture<F> {
    inner: F,
    in_flight: Option<InFlight>,
    http1: bool,
}

impl<F, B, E> std::future::Future for SupervisedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Output = Result<Response<Watched<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut response = std::task::ready!(Pin::new(&mut this.inner).poll(cx))?;
        let in_flight = this
            .in_flight
            .take()
            .expect("a future is not polled after it completed");
        if this.http1
            && in_flight.0.draining.load(Ordering::Relaxed)
            && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response.map(|body| Watched {
            body,
            owes: false,
            in_flight,
        })))
    }
}

/// A response body that tells the connection's [`Activity`] when it hands over a frame and
/// when the connection comes back for the next: the gap is the client not reading.
#[derive(Debug)]
pub struct Watched<B> {
    body: B,
    owes: bool,
    in_flight: InFlight,
}

impl<B> Watched<B> {
    fn settle(&mut self) {
        if self.owes {
            self.owes = false;
            self.in_flight.0.owed.fetch_sub(1, Ordering::Relaxed);
            self.in_flight.0.event();
        }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        this.settle();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.owes = true;
            this.in_flight.0.owed.fetch_add(1, Ordering::Relaxed);
            this.in_flight.0.event();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: None,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(30),
    };

    fn at(in_flight: usize, owed: usize, requests: u64, quiet_s: u64) -> Verdict {
        judge(
            &Snapshot {
                in_flight,
                owed,
                requests,
                quiet: Duration::from_secs(quiet_s),
            },
            &LIMITS,
        )
    }

    #[test]
    fn a_connection_that_never_sends_a_request_is_closed_at_the_header_timeout() {
        assert_eq!(at(0, 0, 0, 3), Verdict::Wait(Duration::from_secs(7)));
        assert_eq!(at(0, 0, 0, 10), Verdict::HeaderTimeout);
    }

    #[test]
    fn a_used_connection_with_nothing_in_flight_is_closed_at_the_idle_timeout() {
        assert_eq!(at(0, 0, 4, 10), Verdict::Wait(Duration::from_secs(50)));
        assert_eq!(at(0, 0, 4, 61), Verdict::Idle);
    }

    #[test]
    fn a_request_waiting_on_its_upstream_is_never_closed_here() {
        // The route's timeout bounds the wait for a response head; quiet time alone says
        // nothing about the client.
        assert_eq!(at(1, 0, 1, 3600), Verdict::Wait(Duration::from_secs(30)));
        assert_eq!(at(1, 0, 0, 3600), Verdict::Wait(Duration::from_secs(30)));
    }

    #[test]
    fn data_left_unread_closes_the_connection_at_the_send_timeout() {
        assert_eq!(at(2, 1, 2, 29), Verdict::Wait(Duration::from_secs(1)));
        assert_eq!(at(2, 1, 2, 30), Verdict::SendTimeout);
    }

    #[test]
    fn the_wait_never_overshoots_the_limit_that_applies() {
        for quiet in 0..120 {
            for (in_flight, owed, requests) in [(0, 0, 0), (0, 0, 3), (1, 0, 1), (1, 1, 1)] {
                if let Verdict::Wait(left) = at(in_flight, owed, requests, quiet) {
                    assert!(!left.is_zero());
                    // Looking again after `left` gives a verdict or a further wait, never
                    // a skipped deadline: the next look lands at or before the crossing.
                    let next = Duration::from_secs(quiet) + left;
                    let limit = if owed > 0 {
                        LIMITS.send_timeout
                    } else if in_flight > 0 {
                        continue;
                    } else if requests == 0 {
                        LIMITS.header_timeout
                    } else {
                        LIMITS.idle_timeout
                    };
                    assert_eq!(next, limit, "quiet {quiet}s, state {in_flight}/{owed}/{requests}");
                }
            }
        }
    }

    #[tokio::test]
    async fn bodies_report_frames_handed_over_and_taken() {
        use http_body_util::BodyExt;
        let activity = Activity::new();
        let in_flight = activity.begin();
        assert_eq!(activity.snapshot().in_flight, 1);
        let mut body = Watched {
            body: http_body_util::Full::new(bytes::Bytes::from_static(b"token")),
            owes: false,
            in_flight,
        };
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert!(frame.is_data());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = activity.snapshot();
        assert_eq!(now.owed, 1);
        assert!(now.quiet >= Duration::from_millis(20), "{now:?}");
        assert!(body.frame().await.is_none());
        assert_eq!(activity.snapshot().owed, 0);
        drop(body);
        let now = activity.snapshot();
        assert_eq!((now.in_flight, now.requests), (0, 1));
    }

    #[tokio::test]
    async fn quiet_for_waits_for_quiet_since_the_last_stamp() {
        let clock = LastEvent::new();
        let idle = Duration::from_millis(60);
        let started = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        clock.stamp();
        clock.quiet_for(idle).await;
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "a stamp restarts the wait"
        );
    }
}
