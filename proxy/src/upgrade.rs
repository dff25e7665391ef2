//! HTTP/1.1 upgrades (WebSocket): the request goes to its side like any other, with its
//! `Upgrade` kept; when the upstream answers 101, the two connections are joined into a
//! byte tunnel that lives until either end closes or it carries nothing for the idle
//! timeout. Anything but a 101 is an ordinary response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ConnectionLimits;
use crate::listener::supervise::{LastEvent, TunnelHold, UpgradeSource};

/// A tunnel's idle timeout when its connection's is unknown (a service used without the
/// listener's supervision).
const DEFAULT_IDLE: Duration = ConnectionLimits::DEFAULT_IDLE_TIMEOUT;

/// What the client asked to upgrade to, if the request is an HTTP/1.1 upgrade: an `Upgrade`
/// header, named by a `Connection` header (RFC 9110 section 7.8).
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let named = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    named.then(|| upgrade.clone())
}

/// Puts the upgrade back on a message whose hop-by-hop headers were stripped.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The client's side of an upgrade, taken from its request before it is forwarded.
#[derive(Debug)]
pub struct ClientUpgrade {
    on_upgrade: OnUpgrade,
    hold: Option<TunnelHold>,
    idle: Duration,
}

impl ClientUpgrade {
    /// Takes the upgrade out of `req`, and a hold on its connection's place under the cap
    /// and in the drain.
    pub fn take<B>(req: &mut Request<B>) -> Self {
        let source = req.extensions().get::<UpgradeSource>();
        let hold = source.map(UpgradeSource::hold);
        let idle = source.map_or(DEFAULT_IDLE, |s| s.idle);
        ClientUpgrade {
            on_upgrade: hyper::upgrade::on(req),
            hold,
            idle,
        }
    }

    /// Joins the client to `upstream` once both connections are handed over, in a task of
    /// its own; it ends when either side closes or after the connection's idle timeout with
    /// no byte either way.
    pub fn tunnel_to(self, upstream: OnUpgrade, route: &str) {
        let idle = self.idle;
        let route = route.to_owned();
        tokio::spawn(async move {
            let _hold = self.hold;
            let (client, upstream) = match tokio::try_join!(self.on_upgrade, upstream) {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(%route, %error, "an upgrade was answered but a connection went away first");
                    return;
                }
            };
            let clock = Arc::new(LastEvent::new());
            let mut client = Stamped::new(TokioIo::new(client), Arc::clone(&clock));
            let mut upstream = Stamped::new(TokioIo::new(upstream), Arc::clone(&clock));
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                    Ok((up, down)) => tracing::debug!(%route, up, down, "tunnel closed"),
                    Err(error) => tracing::debug!(%route, %error, "tunnel broke"),
                },
                () = clock.quiet_for(idle) => tracing::debug!(%route, ?idle, "tunnel idle; closed"),
            }
        });
    }
}

/// An I/O stream that stamps its tunnel's last event on every byte read.
struct Stamped<T> {
    io: T,
    clock: Arc<LastEvent>,
}

impl<T> Stamped<T> {
    fn new(io: T, clock: Arc<LastEvent>) -> Self {
        Stamped { io, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.stamp();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/ws").version(version).body(()).expect("valid");
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("valid");
            req.headers_mut()
                .append(name, HeaderValue::from_str(value).expect("valid"));
        }
        req
    }

    #[test]
    fn an_upgrade_needs_both_headers_and_http_1_1() {
        let ws = [("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")];
        assert_eq!(
            requested(&request(Version::HTTP_11, &ws))
                .as_ref()
                .map(HeaderValue::as_bytes),
            Some(&b"websocket"[..])
        );
        assert_eq!(requested(&request(Version::HTTP_2, &ws)), None);
        assert_eq!(
            requested(&request(Version::HTTP_11, &[("upgrade", "websocket")])),
            None,
            "not named by Connection"
        );
        assert_eq!(
            requested(&request(Version::HTTP_11, &[("connection", "upgrade")])),
            None,
            "nothing to upgrade to"
        );
        let split = [
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(requested(&request(Version::HTTP_11, &split)).is_some());
    }
}
