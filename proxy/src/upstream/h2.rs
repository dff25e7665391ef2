//! HTTP/2 to upstreams (h2c by prior knowledge, or h2 over TLS): one multiplexed connection per
//! endpoint, opened on first use and again once it has closed.
//!
//! hyper-util's pooled client would do the pooling, but it sends the URI it connects to as
//! `:authority`, so the upstream would see the endpoint's address instead of the host the
//! client asked for, next to a `Host` header that disagrees: a malformed request that strict
//! servers (nginx) reject. Here the connection is chosen by endpoint and the request's URI
//! keeps the client's host.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{ClientBodyError, UpstreamBody};
use super::dial::{self, Dial};
use super::failure::UpstreamFailure;
use crate::metrics::UpstreamErrorKind;
use crate::upstream::tls::HandshakeFailed;

/// How many times one request may be sent before its failure is the client's answer. A
/// request is sent again only when it never reached the upstream, so each attempt after the
/// first follows a connection that closed or was retired under it; three allows for a
/// connection retired while the replacement was being opened.
const SEND_ATTEMPTS: u32 = 3;

/// How often an upstream connection is pinged, busy or idle, and how long the answer may take:
/// a connection whose peer vanished without a FIN or RST (a node gone, a NAT entry expired)
/// is closed within their sum, instead of taking the next requests into silence.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    /// Between pings.
    pub interval: Duration,
    /// For the answer.
    pub timeout: Duration,
}

impl KeepAlive {
    /// What upstream connections use.
    pub const DEFAULT: KeepAlive = KeepAlive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(10),
    };
}

/// One endpoint's connection, shared by every request to it.
#[derive(Debug)]
pub struct Endpoint {
    authority: Authority,
    dial: Dial,
    /// The open connection and its generation: cloned under a short lock on the request path.
    live: Mutex<Option<Live>>,
    /// The generation the next connection gets.
    generations: AtomicU64,
    /// Held while connecting, so that concurrent requests wait for one new connection rather
    /// than each opening their own.
    connecting: tokio::sync::Mutex<()>,
    keep_alive: KeepAlive,
}

/// A connection, numbered so that a request that saw it fail retires that connection and not
/// the one another request already opened in its place.
#[derive(Clone, Debug)]
struct Live {
    generation: u64,
    sender: SendRequest<UpstreamBody>,
}

impl Endpoint {
    /// An endpoint not connected yet, pinged as [`KeepAlive::DEFAULT`] says once connected.
    pub fn new(authority: Authority, dial: Dial) -> Self {
        Endpoint::with_keep_alive(authority, dial, KeepAlive::DEFAULT)
    }

    /// An endpoint not connected yet, pinged as `keep_alive` says once connected.
    pub fn with_keep_alive(authority: Authority, dial: Dial, keep_alive: KeepAlive) -> Self {
        Endpoint {
            keep_alive,
            authority,
            dial,
            live: Mutex::new(None),
            generations: AtomicU64::new(0),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self) -> Option<Live> {
        self.live().as_ref().filter(|l| !l.sender.is_closed()).cloned()
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Live, UpstreamFailure> {
        if let Some(live) = self.open() {
            return Ok(live);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(live) = self.open() {
            return Ok(live);
        }
        let live = Live {
            // Boxed: connecting is a future many times larger than the rest of a request's,
            // which would otherwise be moved with every request, though few connect.
            sender: Box::pin(self.connect()).await?,
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
        };
        *self.live() = Some(live.clone());
        Ok(live)
    }

    /// Forgets connection `generation` if it is still the stored one: it closed, or the
    /// upstream is retiring it and will open no new stream on it, though hyper may not have
    /// noticed yet (its `is_closed` turns true only once its dispatcher has stopped).
    fn retire(&self, generation: u64) {
        let mut live = self.live();
        if live.as_ref().is_some_and(|l| l.generation == generation) {
            *live = None;
        }
    }
    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamFailure> {
        let (sender, connection) = match &self.dial {
            Dial::Plain(tcp) => handshake(dial::plain(tcp, &self.authority).await?, self.keep_alive).await?,
            Dial::Tls(tls) => {
                let io = dial::tls(tls, &self.authority).await?;
                if !io.negotiated_h2() {
                    return Err(UpstreamFailure {
                        kind: UpstreamErrorKind::tls,
                        source: Box::new(HandshakeFailed(std::io::Error::other(
                            "the upstream did not agree to HTTP/2 by ALPN",
                        ))),
                    });
                }
                handshake(io, self.keep_alive).await?
            }
        };
        let endpoint = self.authority.clone();
        // The connection runs until the upstream closes it or every sender is gone (the
        // backend left the table and its requests finished).
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on this endpoint's connection, and again on a new connection when it never
    /// reached the upstream:
    /// - the connection refused it before sending any of it (it had just closed);
    /// - the upstream was retiring the connection (a graceful GOAWAY, as nginx sends after
    ///   `keepalive_requests`) and left the stream unprocessed, which RFC 9113 section 6.8
    ///   says may be retried. Only a request without a body can be rebuilt for that: a
    ///   request body is streamed, never held.
    pub async fn send(&self, req: http::Request<UpstreamBody>) -> Result<http::Response<Incoming>, UpstreamFailure> {
        use http_body::Body as _;
        let bodyless = req.body().is_end_stream();
        let mut req = req;
        let mut attempt = 1;
        loop {
            let replay = bodyless.then(|| bodyless_copy(&req));
            let Live { generation, mut sender } = self.connection().await?;
            let (error, unsent) = match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                Err(mut error) => {
                    let unsent = error.take_message();
                    (error.into_error(), unsent)
                }
            };
            let again = unsent.or_else(|| replay.filter(|_| unprocessed(&error)));
            match again {
                Some(again) if attempt < SEND_ATTEMPTS => {
                    self.retire(generation);
                    req = again;
                    attempt += 1;
                }
                _ if reset_by_us(&error) => {
                    return Err(UpstreamFailure {
                        kind: UpstreamErrorKind::reset,
                        source: Box::new(ClientBodyError(error)),
                    });
                }
                _ => return Err(reset(error)),
            }
        }
    }
}

type Connection = std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Result<()>> + Send>>;

async fn handshake<T>(io: T, keep_alive: KeepAlive) -> Result<(SendRequest<UpstreamBody>, Connection), UpstreamFailure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(keep_alive.interval)
        .keep_alive_timeout(keep_alive.timeout)
        .keep_alive_while_idle(true)
        .handshake(io)
        .await
        .map_err(reset)?;
    Ok((sender, Box::pin(connection)))
}

/// A copy of a request whose body is empty, for sending again.
fn bodyless_copy(req: &http::Request<UpstreamBody>) -> http::Request<UpstreamBody> {
    let mut copy = http::Request::new(UpstreamBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Whether the upstream said it did not process the stream: a graceful GOAWAY from it that
/// left this stream out.
fn unprocessed(error: &hyper::Error) -> bool {
    crate::cause::find::<h2::Error>(error)
        .is_some_and(|h2| h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
}

/// Whether hyper reset the stream itself, neither the upstream nor the protocol library: it
/// does so when the request body it was sending failed (with INTERNAL_ERROR, or with the
/// client's own reason, CANCEL, when the client reset its stream mid-upload), which is the
/// client's doing, not the upstream's.
fn reset_by_us(error: &hyper::Error) -> bool {
    crate::cause::find::<h2::Error>(error).is_some_and(|h2| h2.is_reset() && !h2.is_remote() && !h2.is_library())
}

fn reset(error: hyper::Error) -> UpstreamFailure {
    UpstreamFailure {
        kind: UpstreamErrorKind::reset,
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An h2c server answering 200 to everything.
    async fn h2c_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A TCP relay to `target` whose connections can be frozen: from then on they carry
    /// nothing either way and never close, as a peer that vanished looks from here.
    /// Connections made after a freeze flow.
    async fn relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<Arc<AtomicBool>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let switches: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let list = Arc::clone(&switches);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                list.lock().expect("lock").push(Arc::clone(&frozen));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [(cr, sw), (sr, cw)] {
                    let frozen = Arc::clone(&frozen);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if frozen.load(Ordering::SeqCst) {
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        (addr, switches)
    }

    fn get() -> http::Request<UpstreamBody> {
        let mut req = http::Request::new(UpstreamBody::Empty);
        *req.uri_mut() = "http://model.test/".parse().expect("uri");
        *req.version_mut() = http::Version::HTTP_2;
        req
    }

    #[tokio::test]
    async fn a_connection_whose_peer_went_silent_is_replaced_before_the_next_request_meets_it() {
        let (addr, switches) = relay(h2c_server().await).await;
        let keep_alive = KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
        };
        let endpoint = Endpoint::with_keep_alive(
            addr.to_string().parse().expect("authority"),
            Dial::Plain(crate::upstream::http_connector()),
            keep_alive,
        );
        let rsp = endpoint.send(get()).await.expect("first request");
        assert_eq!(rsp.status(), 200);
        for frozen in switches.lock().expect("lock").iter() {
            frozen.store(true, Ordering::SeqCst);
        }
        // The ping goes unanswered: the connection is closed within interval + timeout.
        tokio::time::timeout(Duration::from_secs(10), async {
            while endpoint.open().is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the silent connection was closed by its keep-alive");
        // The next request opens a new connection instead of waiting on the dead one.
        let rsp = tokio::time::timeout(Duration::from_secs(10), endpoint.send(get()))
            .await
            .expect("no hang")
            .expect("second request");
        assert_eq!(rsp.status(), 200);
        assert_eq!(switches.lock().expect("lock").len(), 2, "a second connection was made");
    }
}
