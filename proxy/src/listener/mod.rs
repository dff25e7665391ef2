//! Listeners: accept connections, do the TLS handshake where the listener has TLS, serve
//! HTTP/1.1 and HTTP/2 (by ALPN, or h2c by prior knowledge) on the same port, and drain
//! in-flight requests on shutdown. Clients that speak TLS to a plain port, or anything else to
//! a TLS port, are counted and closed; the listener carries on.

pub mod tls;

use std::net::{IpAddr, SocketAddr};
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
use crate::metrics::{ListenerErrorKind, ProxyMetrics};
use crate::recent::Recent;
pub use crate::shutdown::{ShutdownSignal, stopped};

/// Hyper's own parse buffer: above [`crate::service::MAX_REQUEST_HEADER_BYTES`], so that the
/// proxy's check (with its `x-weir-error`) is the one that normally answers oversized headers.
const MAX_PARSE_BUFFER: usize = 256 * 1024;
/// Header list limit advertised to HTTP/2 clients, matching the HTTP/1 buffer.
const MAX_H2_HEADER_LIST: u32 = 256 * 1024;
/// Time a client has to send a request's headers on HTTP/1.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has, from connecting, to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS record carrying a handshake message, as a ClientHello starts.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Client addresses remembered as already logged for a failed handshake.
const LOGGED_PEERS: usize = 1024;

/// The connection builder shared by the data and admin listeners.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
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

/// Accepts on `listener` until `shutdown`, then closes the listener (new connections are
/// refused), lets open connections finish their requests for up to `drain`, and returns.
/// Every connection task is watched by the drain or ends on `shutdown`, so none outlives this
/// function by more than the drain timeout.
pub async fn serve<S, F>(
    listener: TcpListener,
    transport: Transport,
    make_service: F,
    shutdown: ShutdownSignal,
    drain: Duration,
    name: &'static str,
) where
    F: Fn(SocketAddr) -> S,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builders = Arc::new(Builders {
        any: builder(),
        h2: builder().http2_only(),
    });
    let graceful = GracefulShutdown::new();
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = make_service(peer);
                    match &transport {
                        Transport::Plain => {
                            let conn = builders.any.serve_connection(TokioIo::new(stream), service).into_owned();
                            spawn_watched(graceful.watcher(), conn);
                        }
                        Transport::Data { tls, errors } => {
                            // The first bytes are awaited in the connection's own task, so a
                            // slow client never holds up the accept loop.
                            tokio::spawn(open_data_connection(
                                Arc::clone(&builders),
                                graceful.watcher(),
                                stream,
                                peer,
                                tls.clone(),
                                Arc::clone(errors),
                                service,
                                shutdown.clone(),
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
        () = graceful.shutdown() => tracing::info!(listener = name, "drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(listener = name, ?drain, "drain timeout passed with requests in flight"),
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

#[allow(clippy::too_many_arguments)]
async fn open_data_connection<S>(
    builders: Arc<Builders>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    errors: Arc<ListenerErrors>,
    service: S,
    shutdown: ShutdownSignal,
) where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Until the connection is handed to HTTP (and to the drain), shutdown ends it here; the
    // watcher is dropped with it, so the drain does not wait for a client that never spoke.
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let Some(tls) = tls else {
        let opening = tokio::select! {
            () = &mut stop => return,
            opening = tokio::time::timeout(HEADER_READ_TIMEOUT, peek_opening(&stream)) => opening.unwrap_or(Opening::Nothing),
        };
        match opening {
            Opening::Nothing => {}
            Opening::Tls => errors.report(
                ListenerErrorKind::tls_on_plain,
                peer,
                &"the client began a TLS handshake on a plain-text listener",
            ),
            Opening::Other => {
                let conn = builders
                    .any
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                watch_connection(watcher, conn).await;
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
            let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                &builders.h2
            } else {
                &builders.any
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            watch_connection(watcher, conn).await;
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

/// Runs `conn` under the drain: on shutdown it finishes its requests in flight and closes.
async fn watch_connection<C>(watcher: hyper_util::server::graceful::Watcher, conn: C)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

fn spawn_watched<C>(watcher: hyper_util::server::graceful::Watcher, conn: C)
where
    C: hyper_util::server::graceful::GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    tokio::spawn(watch_connection(watcher, conn));
}
