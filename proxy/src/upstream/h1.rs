//! HTTP/1.1 to upstreams: keep-alive connections pooled per endpoint.
//!
//! A connection stays in its endpoint's list for its whole life. A request takes the first
//! one whose dispatcher is idle (`is_ready`: its last response has ended) and hands it the
//! request under the same short lock, so nothing is checked out or given back, and a
//! connection in use is simply not ready. hyper-util's pooled client did more per request:
//! it built and hashed a key from the URI, checked a connection out, and spawned a task per
//! response to return the connection when its body ended (four of the proxy's twelve
//! allocations per keep-alive request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::body::UpstreamBody;
use super::dial::{self, Dial};
use super::failure::UpstreamFailure;
use crate::metrics::UpstreamErrorKind;

/// How many times one request may be sent. It is sent again only when it never left the
/// proxy: the connection it was given had closed under it (the upstream's keep-alive timeout
/// ending as the request arrived).
const SEND_ATTEMPTS: u32 = 3;

/// How often idle connections past the idle timeout are closed, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// One upstream connection.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// When its last request was handed to it: once it is idle again, it has been idle for
    /// at most the time since.
    used_at: Instant,
}

type Endpoints = Mutex<HashMap<Authority, Vec<Conn>>>;

/// Connections to any number of endpoints, opened by one [`Dial`].
#[derive(Debug)]
pub struct Pool {
    dial: Dial,
    endpoints: Arc<Endpoints>,
}

impl Pool {
    /// A pool that opens connections with `dial` and closes those idle for `idle_timeout`
    /// (checked every half timeout or [`SWEEP_EVERY`], on the runtime it was made in; made
    /// outside one, it keeps idle connections until their upstream closes them).
    pub fn new(dial: Dial, idle_timeout: Duration) -> Self {
        let endpoints = Arc::new(Mutex::new(HashMap::new()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&endpoints), idle_timeout));
        }
        Pool { dial, endpoints }
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<Authority, Vec<Conn>>> {
        // Nothing panics while holding the lock; a poisoned map is still a valid one.
        self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `req` (its URI in origin form: the connection is chosen by `endpoint`) on an idle
    /// connection to `endpoint`, or on a new one when none is idle.
    pub async fn send(
        &self,
        endpoint: &Authority,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, UpstreamFailure> {
        let mut req = req;
        let mut attempt = 1;
        loop {
            let on_idle = {
                let mut endpoints = self.endpoints();
                match idle(&mut endpoints, endpoint) {
                    Some(sender) => Ok(sender.try_send_request(req)),
                    None => Err(req),
                }
            };
            let sent = match on_idle {
                Ok(sent) => sent,
                Err(unsent) => {
                    // Boxed: opening (TCP, maybe TLS, the handshake) is a future many
                    // times larger than the rest of a request's, which would otherwise be
                    // moved with every request, though few open a connection.
                    let mut sender = Box::pin(self.open(endpoint)).await?;
                    // A new connection takes one request before its dispatcher first runs.
                    let sent = sender.try_send_request(unsent);
                    self.endpoints().entry(endpoint.clone()).or_default().push(Conn {
                        sender,
                        used_at: Instant::now(),
                    });
                    sent
                }
            };
            match sent.await {
                Ok(rsp) => return Ok(rsp),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if attempt < SEND_ATTEMPTS => {
                        req = unsent;
                        attempt += 1;
                    }
                    _ => {
                        return Err(UpstreamFailure {
                            kind: UpstreamErrorKind::reset,
                            source: Box::new(error.into_error()),
                        });
                    }
                },
            }
        }
    }

    async fn open(&self, endpoint: &Authority) -> Result<SendRequest<UpstreamBody>, UpstreamFailure> {
        match &self.dial {
            Dial::Plain(tcp) => handshake(dial::plain(tcp, endpoint).await?, endpoint).await,
            Dial::Tls(tls) => handshake(dial::tls(tls, endpoint).await?, endpoint).await,
        }
    }

    /// Open connections to `endpoint`, busy or idle.
    #[cfg(test)]
    fn open_connections(&self, endpoint: &Authority) -> usize {
        self.endpoints()
            .get(endpoint)
            .map_or(0, |c| c.iter().filter(|c| !c.sender.is_closed()).count())
    }
}

/// The first idle connection to `endpoint`, marked used; closed ones met on the way are
/// dropped.
fn idle<'a>(
    endpoints: &'a mut HashMap<Authority, Vec<Conn>>,
    endpoint: &Authority,
) -> Option<&'a mut SendRequest<UpstreamBody>> {
    let conns = endpoints.get_mut(endpoint)?;
    let mut i = 0;
    while i < conns.len() {
        if conns[i].sender.is_closed() {
            conns.swap_remove(i);
        } else if conns[i].sender.is_ready() {
            let conn = &mut conns[i];
            conn.used_at = Instant::now();
            return Some(&mut conn.sender);
        } else {
            i += 1;
        }
    }
    None
}

async fn handshake<T>(io: T, endpoint: &Authority) -> Result<SendRequest<UpstreamBody>, UpstreamFailure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamFailure {
            kind: UpstreamErrorKind::connect,
            source: Box::new(e),
        })?;
    let endpoint = endpoint.clone();
    // The connection runs until the upstream closes it, or its sender is dropped (idle too
    // long, or the pool gone).
    // With upgrades: a 101 hands the connection to the tunnel (see `crate::upgrade`).
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%endpoint, %error, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Now and then, closes connections idle for longer than `idle_timeout` and forgets endpoints
/// left with none; ends with the pool.
async fn sweep(endpoints: Weak<Endpoints>, idle_timeout: Duration) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY.min(idle_timeout / 2));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(endpoints) = endpoints.upgrade() else { return };
        let now = Instant::now();
        let mut endpoints = endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        endpoints.retain(|_, conns| {
            conns.retain(|c| {
                let expired = c.sender.is_ready() && now.duration_since(c.used_at) > idle_timeout;
                !c.sender.is_closed() && !expired
            });
            !conns.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An upstream answering each request with its target as the body (for `/stream...`, a
    /// chunked body whose end comes 300 ms after its start), counting the connections it
    /// accepted; it closes each connection after `per_connection` requests.
    async fn upstream(per_connection: usize) -> (Authority, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("authority");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept");
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                        if target.starts_with("/stream") {
                            // A body still arriving: its last chunk comes a while later.
                            let start = format!(
                                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{target}\r\n",
                                target.len()
                            );
                            if stream.write_all(start.as_bytes()).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if stream.write_all(b"0\r\n\r\n").await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let rsp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}", target.len());
                        if stream.write_all(rsp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    fn pool() -> Pool {
        Pool::new(Dial::Plain(HttpConnector::new()), Duration::from_secs(90))
    }

    fn get(path: &str) -> http::Request<UpstreamBody> {
        http::Request::get(path)
            .header(http::header::HOST, "model.example")
            .body(UpstreamBody::Empty)
            .expect("valid")
    }

    async fn text(rsp: http::Response<Incoming>) -> String {
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection_and_keep_origin_form() {
        let (endpoint, accepted) = upstream(usize::MAX).await;
        let pool = pool();
        for i in 0..5 {
            let rsp = pool
                .send(&endpoint, get(&format!("/v1/{i}?q=1")))
                .await
                .expect("answered");
            assert_eq!(
                text(rsp).await,
                format!("/v1/{i}?q=1"),
                "the target is sent in origin form"
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_response_is_still_streaming_is_not_given_another_request() {
        let (endpoint, accepted) = upstream(usize::MAX).await;
        let pool = pool();
        let first = pool.send(&endpoint, get("/stream")).await.expect("answered");
        // The first response's body has not ended: its connection is busy.
        let second = pool.send(&endpoint, get("/second")).await.expect("answered");
        assert_eq!(text(second).await, "/second");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(text(first).await, "/stream");
        // Both are idle now, and the next requests reuse them.
        for i in 0..4 {
            let rsp = pool.send(&endpoint, get(&format!("/{i}"))).await.expect("answered");
            assert_eq!(text(rsp).await, format!("/{i}"));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(pool.open_connections(&endpoint), 2);
    }

    #[tokio::test]
    async fn a_request_meeting_a_connection_the_upstream_closed_goes_out_on_a_new_one() {
        // Each connection serves one request and is closed: every later request first meets a
        // pooled connection that is closed or closing.
        let (endpoint, accepted) = upstream(1).await;
        let pool = pool();
        for i in 0..5 {
            let rsp = pool.send(&endpoint, get(&format!("/{i}"))).await.expect("answered");
            assert_eq!(text(rsp).await, format!("/{i}"));
            // Let the upstream's close reach the connection, as it would between real requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(pool.open_connections(&endpoint) <= 1, "closed connections are dropped");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint: Authority = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("authority");
        drop(listener);
        let failure = pool().send(&endpoint, get("/")).await.expect_err("nothing listens");
        assert_eq!(failure.kind, UpstreamErrorKind::connect);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (endpoint, _) = upstream(usize::MAX).await;
        let pool = Pool::new(Dial::Plain(HttpConnector::new()), Duration::from_secs(2));
        let rsp = pool.send(&endpoint, get("/")).await.expect("answered");
        text(rsp).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.open_connections(&endpoint), 1, "idle for less than the timeout");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(pool.open_connections(&endpoint), 0, "idle for longer than the timeout");
        assert!(
            pool.endpoints().is_empty(),
            "an endpoint with no connection is forgotten"
        );
    }
}
