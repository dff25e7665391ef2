//! Upstream connections: one pooled HTTP/1.1 client shared by all backends, and per-request
//! balancing over a backend's endpoints.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http::uri::Authority;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Protocol;
use crate::mirror;
use crate::upstream_tls::{TlsConnector, TlsSettings};

/// The client that carries requests upstream. Its pool is keyed by endpoint, so it outlives
/// config reloads: a new table reuses the warm connections of the old one.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// A backend's own client when it speaks TLS: its pool holds TLS connections to its endpoints.
pub type TlsClient = Client<TlsConnector, UpstreamBody>;

/// A request body on its way upstream: the client's own, the client's teed for a mirror, or
/// the mirror's copy.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, passed through.
    Client(Incoming),
    /// The client's body, each frame also offered to a mirror.
    Tee(mirror::Tee),
    /// A mirror's copy of a client's body.
    Copy(mirror::Copy),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Tee(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Copy(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Tee(b) => b.is_end_stream(),
            UpstreamBody::Copy(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Tee(b) => b.size_hint(),
            UpstreamBody::Copy(b) => b.size_hint(),
        }
    }
}

/// How long a connection attempt may take before the request fails with `upstream-connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared clients, one per plain-text protocol. Their pools are keyed by endpoint, so
/// they outlive config reloads: a new table reuses the warm connections of the old one.
#[derive(Clone, Debug)]
pub struct Upstreams {
    http1: UpstreamClient,
    h2c: UpstreamClient,
}

impl Upstreams {
    /// Builds the clients.
    pub fn new() -> Self {
        let connector = http_connector();
        let http1 = client_builder().build(connector.clone());
        // HTTP/2 multiplexes: one connection per endpoint carries every concurrent request.
        let h2c = client_builder().http2_only(true).build(connector);
        Upstreams { http1, h2c }
    }

    /// The plain-text client for `protocol` (`h2` backends always have their own TLS client).
    fn client(&self, protocol: Protocol) -> &UpstreamClient {
        match protocol {
            Protocol::H2c => &self.h2c,
            Protocol::H1 | Protocol::H2 => &self.http1,
        }
    }
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // TLS backends' URIs say https; the TLS connector wraps this one.
    connector.enforce_http(false);
    connector
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // The proxy sets Host itself, from the client's request, so the upstream sees the
        // name the client asked for rather than the endpoint's address.
        .set_host(false);
    builder
}

/// A client for one TLS backend; HTTP/2 is used when ALPN negotiates it.
pub fn tls_client(settings: &TlsSettings) -> TlsClient {
    client_builder().build(settings.connector(http_connector()))
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// One backend: interchangeable endpoints, balanced round-robin per request.
#[derive(Debug)]
pub struct Backend {
    /// Name from the config.
    pub name: String,
    /// The protocol its endpoints speak.
    pub protocol: Protocol,
    /// Its own client, when it speaks TLS.
    tls: Option<TlsClient>,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
}

impl Backend {
    /// A backend over `endpoints`, which validation guarantees is not empty.
    pub fn new(name: String, endpoints: Vec<Authority>, protocol: Protocol, tls: Option<TlsClient>) -> Self {
        assert!(!endpoints.is_empty(), "validation rejects backends without endpoints");
        Backend {
            name,
            protocol,
            tls,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The scheme and HTTP version of requests to this backend.
    pub fn wire(&self) -> (Scheme, Version) {
        let scheme = if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let version = match self.protocol {
            Protocol::H2 | Protocol::H2c => Version::HTTP_2,
            Protocol::H1 => Version::HTTP_11,
        };
        (scheme, version)
    }

    /// Sends a request to this backend, through its TLS client or the shared plain one.
    pub fn send(&self, upstreams: &Upstreams, req: http::Request<UpstreamBody>) -> ResponseFuture {
        match &self.tls {
            Some(client) => client.request(req),
            None => upstreams.client(self.protocol).request(req),
        }
    }

    /// The endpoint for the next request.
    pub fn pick(&self) -> &Authority {
        if self.endpoints.len() == 1 {
            return &self.endpoints[0];
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[n % self.endpoints.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_turns() {
        let b = Backend::new(
            "b".into(),
            vec!["a:1".parse().expect("valid"), "b:2".parse().expect("valid")],
            Protocol::H1,
            None,
        );
        let picks: Vec<_> = (0..4).map(|_| b.pick().as_str().to_owned()).collect();
        assert_eq!(picks, ["a:1", "b:2", "a:1", "b:2"]);
    }
}
