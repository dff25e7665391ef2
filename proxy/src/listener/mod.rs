//! Listeners: accept connections, do the TLS handshake where the listener has TLS, serve
//! HTTP/1.1 and HTTP/2 (by ALPN, or h2c by prior knowledge) on the same port, and drain
//! in-flight requests on shutdown. Clients that speak TLS to a plain port, or anything else to
//! a TLS port, are counted and closed; the listener carries on.

pub mod supervise;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::body::ProxyBody;
use crate::config::ConnectionLimits;
use crate::metrics::{ListenerErrorKind, ProxyMetrics};
use crate::recent::Recent;
pub use crate::shutdown::{ShutdownSignal, stopped};
use supervise::{Activity, Supervised, Verdict};

/// Hyper's own parse buffer: above [`crate::service::MAX_REQUEST_HEADER_BYTES`], so that the
/// proxy's check (with its `x-weir-error`) is the one that normally answers oversized headers.
const MAX_PARSE_BUFFER: usize = 256 * 1024;
/// Header list limit advertised to HTTP/2 clients, matching the HTTP/1 buffer.
const MAX_H2_HEADER_LIST: u32 = 256 * 1024;
/// Time a client has, from connecting, to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection closed politely (idle, or no request in time) has to go before it is
/// dropped: an HTTP/2 client that never answers the GOAWAY's ping would otherwise keep it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a draining HTTP/1.1 connection may stay idle before it is closed: a client
/// sending requests meets a `Connection: close` answer well within it. A short drain shortens
/// it (see [`drain_idle_grace`]).
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
/// File descriptors kept back from the default connection cap for listeners, config and
/// certificate files, and the resolver.
const RESERVED_FDS: u64 = 100;
/// The first byte of a TLS record carrying a handshake message, as a ClientHello starts.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Client addresses remembered as already logged for a failed handshake.
const LOGGED_PEERS: usize = 1024;

/// The connection builder shared by the data and admin listeners.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout is the supervisor's (see `supervise`), the same for both protocols.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_PARSE_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_H2_HEADER_LIST);
    builder
}

/// The connection builders a data listener chooses between.
struct Builders {
    /// HTTP/1.1 or HTTP/2, told apart by the connection's first bytes: plain text, and TLS
    /// when ALPN chose nothing or `http/1.1`.
    any: auto::Builder<TokioExecutor>,
    /// HTTP/2 alone, for TLS connections whose ALPN chose `h2`: anything but the HTTP/2
    /// preface on them is a protocol error that closes the connection (RFC 9113 section 3.4),
    /// not an HTTP/1.1 request.
    h2: auto::Builder<TokioExecutor>,
}

/// What a listener does with a connection before HTTP.
#[derive(Clone)]
pub enum Transport {
    /// Straight to HTTP: the admin listener.
    Plain,
    /// The data listener: TLS when `tls` is set, else plain text. A client speaking the wrong
    /// one is counted in `weir_listener_errors_total` and closed.
    Data {
        /// The handshake, with the rotating certificate.
        tls: Option<TlsAcceptor>,
        /// Where failures are counted and logged.
        errors: Arc<ListenerErrors>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            Transport::Data { tls, .. } => f.debug_struct("Data").field("tls", &tls.is_some()).finish(),
        }
    }
}

/// Counts connections closed before any request, and logs them once per client address:
/// a misconfigured client retries in a loop, and one line per attempt would drown the log.
#[derive(Debug)]
pub struct ListenerErrors {
    metrics: ProxyMetrics,
    logged: Mutex<Recent<IpAddr>>,
}

impl ListenerErrors {
    /// Counts into `metrics`.
    pub fn new(metrics: ProxyMetrics) -> Self {
        ListenerErrors {
            metrics,
            logged: Mutex::new(Recent::new(LOGGED_PEERS)),
        }
    }

    fn report(&self, kind: ListenerErrorKind, peer: SocketAddr, error: &dyn std::fmt::Display) {
        self.metrics.listener_error(kind);
        // A poisoned lock only means another thread panicked mid-insert; the set is still a
        // usable hint of who was logged.
        let first = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer.ip());
        if first {
            tracing::warn!(
                peer = %peer.ip(),
                ?kind,
                %error,
                "closed a client connection before any request (logged once per client address)"
            );
        }
    }
}

/// The default connection cap: half the open-file limit `fds` (a client connection may need
/// an upstream one), less a few kept back, and never below 64.
pub fn default_max_connections(fds: u64) -> usize {
    usize::try_from((fds.saturating_sub(RESERVED_FDS) / 2).max(64)).unwrap_or(usize::MAX)
}

/// The process's open-file limit (the soft one, which is what `accept` runs into).
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// How a listener bounds its connections.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Open connections at most.
    pub max_connections: usize,
    /// The timeouts each connection is supervised with.
    pub limits: ConnectionLimits,
}

impl Bounds {
    /// `limits` with the cap resolved: the configured one, or the default for this process.
    pub fn resolve(limits: ConnectionLimits) -> Self {
        let max_connections = match limits.max_connections {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => default_max_connections(open_file_limit()),
        };
        Bounds {
            max_connections,
            limits,
        }
    }
}

/// Open connections of one listener, against its cap.
#[derive(Debug)]
struct Gate {
    open: AtomicUsize,
    max: usize,
    /// Set while connections are being refused, so one refusal in a row is logged.
    refusing: AtomicBool,
}

/// A place under the cap, given back when the connection's task ends.
struct Admitted(Arc<Gate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// A place for one more connection, or `None` at the cap (the first refusal of a run
    /// is logged).
    fn admit(self: &Arc<Self>, name: &str) -> Option<Admitted> {
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        if open < self.max {
            self.refusing.store(false, Ordering::Relaxed);
            return Some(Admitted(Arc::clone(self)));
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        if !self.refusing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                listener = name,
                max = self.max,
                "connection cap reached: closing new connections until some close (logged once per run of refusals)"
            );
        }
        None
    }
}

/// How a listener's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection closed within the drain timeout.
    Drained,
    /// The timeout passed with connections still open; they are dropped.
    TimedOut,
}

/// The idle grace of a draining HTTP/1.1 connection under a drain of `drain`: at most half of
/// it, so a keep-alive connection that stays idle (a metrics scraper keeps one open to the
/// admin listener) closes well before the drain times out instead of holding it to the end.
fn drain_idle_grace(drain: Duration) -> Duration {
    DRAIN_IDLE_GRACE.min(drain / 2)
}

/// Accepts on `listener` until `shutdown`, then closes the listener (new connections are
/// refused), lets open connections finish their requests for up to `drain`, and returns how
/// the drain ended.
/// Every connection task is watched by the drain or ends on `shutdown`, so none outlives this
/// function by more than the drain timeout. At most `bounds.max_connections` are open at
/// once, and each is closed when its client stops doing its part (see [`supervise`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, F>(
    listener: TcpListener,
    transport: Transport,
    make_service: F,
    shutdown: ShutdownSignal,
    drain: Duration,
    bounds: Bounds,
    name: &'static str,
) -> Drain
where
    F: Fn(SocketAddr) -> S,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + Unpin + 'static,
{
    let builders = Arc::new(Builders {
        any: builder(),
        h2: builder().http2_only(),
    });
    let graceful = GracefulShutdown::new();
    let gate = Arc::new(Gate {
        open: AtomicUsize::new(0),
        max: bounds.max_connections,
        refusing: AtomicBool::new(false),
    });
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(admitted) = gate.admit(name) else {
                        if let Transport::Data { errors, .. } = &transport {
                            errors.metrics.listener_error(ListenerErrorKind::connection_limit);
                        }
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let activity = Activity::new();
                    let service = Supervised::new(make_service(peer), Arc::clone(&activity), bounds.limits.idle_timeout);
                    let conn = Conn {
                        watcher: graceful.watcher(),
                        activity,
                        limits: bounds.limits,
                        drain_idle_grace: drain_idle_grace(drain),
                        shutdown: shutdown.clone(),
                        peer,
                        admitted,
                    };
                    match &transport {
                        Transport::Plain => {
                            let http = builders.any.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                            tokio::spawn(conn.run(http, None));
                        }
                        Transport::Data { tls, errors } => {
                            // The first bytes are awaited in the connection's own task, so a
                            // slow client never holds up the accept loop.
                            tokio::spawn(open_data_connection(
                                Arc::clone(&builders),
                                conn,
                                stream,
                                tls.clone(),
                                Arc::clone(errors),
                                service,
                            ));
                        }
                    }
                }
                Err(error) => {
                    // Running out of file descriptors is the usual cause; back off briefly
                    // instead of spinning.
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop => break,
        }
    }
    drop(listener);
    tracing::info!(listener = name, "stopped accepting; draining open connections");
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!(listener = name, "drained");
            Drain::Drained
        }
        () = tokio::time::sleep(drain) => {
            tracing::warn!(listener = name, ?drain, "drain timeout passed with requests in flight");
            Drain::TimedOut
        }
    }
}

/// What a data connection's first byte says about its client.
enum Opening {
    /// The client closed (or went quiet) without sending anything: a TCP probe, not an error.
    Nothing,
    /// A TLS handshake record.
    Tls,
    /// Anything else: plain HTTP, or garbage that the HTTP parser will refuse.
    Other,
}

async fn peek_opening(stream: &TcpStream) -> Opening {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => Opening::Nothing,
        Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => Opening::Tls,
        Ok(_) => Opening::Other,
    }
}

/// One accepted connection and what supervises it.
struct Conn {
    /// Held while the connection lives, so the drain waits for it.
    watcher: hyper_util::server::graceful::Watcher,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    /// How long it may stay idle once the listener drains (HTTP/1.1).
    drain_idle_grace: Duration,
    shutdown: ShutdownSignal,
    peer: SocketAddr,
    /// Its place under the connection cap.
    admitted: Admitted,
}

impl Conn {
    /// Serves `http` until it ends, closing it politely on shutdown (finishing requests in
    /// flight) or when idle, and at once when its client stops reading. Errors the client
    /// caused are counted in `errors`.
    async fn run<C>(self, http: C, errors: Option<&ListenerErrors>)
    where
        C: HttpConnection,
    {
        let Conn {
            watcher,
            activity,
            limits,
            drain_idle_grace,
            shutdown,
            peer,
            admitted,
        } = self;
        tokio::pin!(http);
        let stop = stopped(shutdown);
        tokio::pin!(stop);
        let mut stopping = false;
        // When a draining HTTP/1.1 connection that stayed idle is closed.
        let mut drain_close = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut drain_armed = false;
        // Set once the connection was asked to close: past it, it is dropped.
        let mut grace_ends: Option<tokio::time::Instant> = None;
        let mut check = Box::pin(tokio::time::sleep(Duration::ZERO));
        loop {
            tokio::select! {
                ended = http.as_mut() => {
                    if let (Err(error), Some(errors)) = (ended, errors) {
                        match client_fault(error.as_ref()) {
                            Some(kind) => errors.report(kind, peer, &error),
                            None => tracing::debug!(%error, "connection ended with an error"),
                        }
                    }
                    // An upgraded connection lives on as a tunnel, which keeps its place.
                    activity.tunnels_closed().await;
                    break;
                }
                () = &mut stop, if !stopping => {
                    stopping = true;
                    if activity.drain() {
                        // HTTP/1.1 has no GOAWAY: closing an idle keep-alive connection races
                        // a request the client may be sending on it. Its next answer says
                        // `Connection: close` instead; one that stays idle closes after a grace.
                        drain_close.as_mut().reset(tokio::time::Instant::now() + drain_idle_grace);
                        drain_armed = true;
                    } else {
                        http.as_mut().close_gently();
                    }
                }
                () = drain_close.as_mut(), if drain_armed => {
                    drain_armed = false;
                    http.as_mut().close_gently();
                }
                () = check.as_mut() => {
                    let now = tokio::time::Instant::now();
                    if grace_ends.is_some_and(|end| now >= end) {
                        break;
                    }
                    match supervise::judge(&activity.snapshot(), &limits) {
                        Verdict::Wait(left) => {
                            let next = grace_ends.map_or(now + left, |end| end.min(now + left));
                            check.as_mut().reset(next);
                        }
                        Verdict::SendTimeout => {
                            if let Some(errors) = errors {
                                errors.report(
                                    ListenerErrorKind::send_timeout,
                                    peer,
                                    &format_args!("the client left response data unread for {:?}", limits.send_timeout),
                                );
                            }
                            break;
                        }
                        verdict @ (Verdict::Idle | Verdict::HeaderTimeout) => {
                            if let (Verdict::HeaderTimeout, Some(errors)) = (verdict, errors) {
                                errors.report(
                                    ListenerErrorKind::header_timeout,
                                    peer,
                                    &format_args!("no complete request within {:?} of connecting", limits.header_timeout),
                                );
                            }
                            if grace_ends.is_none() {
                                http.as_mut().close_gently();
                                grace_ends = Some(now + CLOSE_GRACE);
                                check.as_mut().reset(now + CLOSE_GRACE);
                            }
                        }
                    }
                }
            }
        }
        drop(admitted);
        drop(watcher);
    }
}

/// A served client connection, as the supervisor drives it.
trait HttpConnection: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> {
    /// Finishes the requests in flight and closes (HTTP/2: GOAWAY).
    fn close_gently(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> HttpConnection for auto::UpgradeableConnection<'static, I, S, TokioExecutor>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioExecutor: auto::HttpServerConnExec<S::Future, B>,
{
    fn close_gently(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> HttpConnection for auto::Connection<'static, I, S, TokioExecutor>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    TokioExecutor: auto::HttpServerConnExec<S::Future, B>,
{
    fn close_gently(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The kind of a connection error the client caused, or `None` for one that says nothing
/// about the client (it went away, or the proxy ended the connection).
fn client_fault(error: &(dyn std::error::Error + 'static)) -> Option<ListenerErrorKind> {
    let hyper = error.downcast_ref::<hyper::Error>()?;
    if hyper.is_parse_too_large() {
        return Some(ListenerErrorKind::headers_too_large);
    }
    if hyper.is_parse() {
        return Some(ListenerErrorKind::bad_request);
    }
    let h2 = std::error::Error::source(hyper)?.downcast_ref::<h2::Error>()?;
    // A GOAWAY this side sent: the client broke the protocol or flooded it.
    (h2.is_go_away() && h2.is_library()).then_some(ListenerErrorKind::h2_protocol)
}

async fn open_data_connection<S>(
    builders: Arc<Builders>,
    conn: Conn,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    errors: Arc<ListenerErrors>,
    service: S,
) where
    S: Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<supervise::Watched<ProxyBody>>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Until the connection is handed to HTTP (and to the drain), shutdown ends it here; the
    // watcher is dropped with it, so the drain does not wait for a client that never spoke.
    let stop = stopped(conn.shutdown.clone());
    tokio::pin!(stop);
    let peer = conn.peer;
    let Some(tls) = tls else {
        let opening = tokio::select! {
            () = &mut stop => return,
            opening = tokio::time::timeout(conn.limits.header_timeout, peek_opening(&stream)) => opening,
        };
        match opening {
            Ok(Opening::Nothing) => {}
            Err(_elapsed) => errors.report(
                ListenerErrorKind::header_timeout,
                peer,
                &format_args!("nothing sent within {:?} of connecting", conn.limits.header_timeout),
            ),
            Ok(Opening::Tls) => errors.report(
                ListenerErrorKind::tls_on_plain,
                peer,
                &"the client began a TLS handshake on a plain-text listener",
            ),
            Ok(Opening::Other) => {
                let http = builders
                    .any
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                conn.run(http, Some(&errors)).await;
            }
        }
        return;
    };
    let handshake = async {
        if let Opening::Nothing = peek_opening(&stream).await {
            return Ok(None);
        }
        tls.accept(stream).await.map(Some)
    };
    let accepted = tokio::select! {
        () = &mut stop => return,
        accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => accepted,
    };
    match accepted {
        Ok(Ok(Some(stream))) => {
            let stream_is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(stream);
            if stream_is_h2 {
                // HTTP/2 has no upgrades, and only this form honours `http2_only`.
                let http = builders.h2.serve_connection(io, service).into_owned();
                conn.run(http, Some(&errors)).await;
            } else {
                let http = builders.any.serve_connection_with_upgrades(io, service).into_owned();
                conn.run(http, Some(&errors)).await;
            }
        }
        Ok(Ok(None)) => {}
        Ok(Err(error)) => errors.report(ListenerErrorKind::tls_handshake, peer, &error),
        Err(_elapsed) => errors.report(
            ListenerErrorKind::tls_handshake,
            peer,
            &format_args!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A scraper's idle keep-alive connection used to hold the admin listener's one-second
    /// drain to its timeout (the idle grace was the whole second), warning of requests in
    /// flight at every shutdown.
    #[tokio::test]
    async fn an_idle_keep_alive_connection_closes_within_the_drain() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, signal) = tokio::sync::watch::channel(false);
        let answer = |_request: hyper::Request<Incoming>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                ProxyBody::full(bytes::Bytes::from_static(b"ok")),
            )))
        };
        let served = tokio::spawn(serve(
            listener,
            Transport::Plain,
            move |_| hyper::service::service_fn(answer),
            signal,
            Duration::from_secs(1),
            Bounds {
                max_connections: 8,
                limits: ConnectionLimits::default(),
            },
            "test",
        ));

        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"ok") {
            let mut chunk = [0u8; 256];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&chunk[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));

        // The connection stays open and idle, as a scraper's does between scrapes.
        stop.send(true).unwrap();
        assert_eq!(served.await.unwrap(), Drain::Drained);
        let mut rest = [0u8; 16];
        assert_eq!(
            client.read(&mut rest).await.unwrap(),
            0,
            "the server closed the idle connection"
        );
    }

    #[test]
    fn the_idle_grace_is_at_most_half_the_drain() {
        assert_eq!(drain_idle_grace(Duration::from_secs(30)), DRAIN_IDLE_GRACE);
        assert_eq!(drain_idle_grace(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(drain_idle_grace(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_default_cap_leaves_an_upstream_fd_per_client_and_a_reserve() {
        assert_eq!(default_max_connections(1024), 462);
        assert_eq!(default_max_connections(1_048_576), 524_238);
        assert_eq!(default_max_connections(200), 64, "never below 64");
        assert_eq!(
            default_max_connections(u64::MAX),
            (u64::MAX / 2 - 50) as usize,
            "unlimited"
        );
    }
}
