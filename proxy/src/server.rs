//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c by prior knowledge) on the
//! same port, and drain in-flight requests on shutdown.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::ProxyBody;

/// Hyper's own parse buffer: above [`crate::service::MAX_REQUEST_HEADER_BYTES`], so that the
/// proxy's check (with its `x-weir-error`) is the one that normally answers oversized headers.
const MAX_PARSE_BUFFER: usize = 256 * 1024;
/// Header list limit advertised to HTTP/2 clients, matching the HTTP/1 buffer.
const MAX_H2_HEADER_LIST: u32 = 256 * 1024;
/// Time a client has to send a request's headers on HTTP/1.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A shutdown signal: flips to `true` once, when the process is asked to stop.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Waits until `signal` says stop (or its sender is gone, which means the same).
pub async fn stopped(mut signal: ShutdownSignal) {
    let _ = signal.wait_for(|stop| *stop).await;
}

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

/// Accepts on `listener` until `shutdown`, then closes the listener (new connections are
/// refused), lets open connections finish their requests for up to `drain`, and returns.
/// Every connection task is watched by the drain, so none outlives this function by more
/// than the drain timeout.
pub async fn serve<S, F>(
    listener: TcpListener,
    make_service: F,
    shutdown: ShutdownSignal,
    drain: Duration,
    name: &'static str,
) where
    F: Fn(std::net::SocketAddr) -> S,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    serve_connection(&builder, &graceful, stream, make_service(peer));
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

fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    service: S,
) where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(error = %error, "connection ended with an error");
        }
    });
}
