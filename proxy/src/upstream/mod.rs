//! Upstream connections and per-request balancing over a backend's endpoints.
//!
//! HTTP/1.1 goes through hyper-util's pooled client, shared by all backends. HTTP/2 (h2c, or
//! h2 over TLS) goes through [`h2`]: one multiplexed connection per endpoint, so that the
//! request can carry the client's host as `:authority` while the connection goes to the
//! endpoint's address.

pub mod body;
pub mod failure;
pub mod h2;

pub use body::UpstreamBody;
pub use failure::{BoxError, UpstreamFailure};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Version;
use http::uri::Authority;
use http::uri::Scheme;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Protocol;
use crate::upstream_tls::{TlsConnector, TlsSettings};

/// The client that carries requests upstream. Its pool is keyed by endpoint, so it outlives
/// config reloads: a new table reuses the warm connections of the old one.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// A backend's own client when it speaks TLS: its pool holds TLS connections to its endpoints.
pub type TlsClient = Client<TlsConnector, UpstreamBody>;

/// How long a connection attempt may take before the request fails with `upstream-connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared plain-text HTTP/1.1 client. Its pool is keyed by endpoint, so it outlives
/// config reloads: a new table reuses the warm connections of the old one.
#[derive(Clone, Debug)]
pub struct Upstreams {
    http1: UpstreamClient,
}

impl Upstreams {
    /// Builds the client.
    pub fn new() -> Self {
        Upstreams {
            http1: client_builder().build(http_connector()),
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

/// A client for one HTTP/1.1 TLS backend.
fn tls_client(settings: &TlsSettings) -> TlsClient {
    client_builder().build(settings.connector(http_connector()))
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// How a backend's requests travel.
#[derive(Debug)]
enum Transport {
    /// HTTP/1.1 over the shared plain-text pool.
    Http1,
    /// HTTP/1.1 over TLS, through the backend's own pool.
    Http1Tls(Box<TlsClient>),
    /// HTTP/2, one connection per endpoint (h2c, or h2 over TLS), in endpoint order.
    Http2(Vec<h2::Endpoint>),
}

/// One backend: interchangeable endpoints, balanced round-robin per request.
#[derive(Debug)]
pub struct Backend {
    /// Name from the config.
    pub name: String,
    /// The protocol its endpoints speak.
    pub protocol: Protocol,
    scheme: Scheme,
    transport: Transport,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
}

/// One endpoint of a backend, chosen for a request.
#[derive(Clone, Debug)]
pub struct Pick {
    index: usize,
    /// The endpoint's address.
    pub authority: Authority,
}

impl Backend {
    /// A backend over `endpoints`, which validation guarantees is not empty. `tls` holds the
    /// loaded settings of a backend that speaks TLS.
    pub fn new(name: String, endpoints: Vec<Authority>, protocol: Protocol, tls: Option<&TlsSettings>) -> Self {
        assert!(!endpoints.is_empty(), "validation rejects backends without endpoints");
        let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        let transport = match (protocol, tls) {
            (Protocol::H2 | Protocol::H2c, tls) => {
                let dial = h2::Dial::new(http_connector(), tls);
                Transport::Http2(
                    endpoints
                        .iter()
                        .map(|e| h2::Endpoint::new(e.clone(), dial.clone()))
                        .collect(),
                )
            }
            (Protocol::H1, Some(tls)) => Transport::Http1Tls(Box::new(tls_client(tls))),
            (Protocol::H1, None) => Transport::Http1,
        };
        Backend {
            name,
            protocol,
            scheme,
            transport,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoint for the next request.
    pub fn pick(&self) -> Pick {
        let index = if self.endpoints.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()
        };
        Pick {
            index,
            authority: self.endpoints[index].clone(),
        }
    }

    /// Addresses `req` (whose URI holds the path, and whose `Host` the client's host) to
    /// `endpoint` in this backend's protocol. HTTP/1.1 keeps `Host` and connects to the URI's
    /// authority, the endpoint. HTTP/2 has no `Host`: the client's host becomes `:authority`
    /// (RFC 9113 section 8.3.1; nginx rejects a request whose two disagree), and the
    /// connection is chosen by `endpoint`, not by the URI.
    pub fn address<B>(&self, endpoint: &Pick, req: &mut http::Request<B>) -> Result<(), http::uri::InvalidUriParts> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.path_and_query = Some(path);
        match self.transport {
            Transport::Http2(_) => {
                let host = req
                    .headers_mut()
                    .remove(http::header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok());
                parts.authority = Some(host.unwrap_or_else(|| endpoint.authority.clone()));
                *req.version_mut() = Version::HTTP_2;
            }
            Transport::Http1 | Transport::Http1Tls(_) => {
                parts.authority = Some(endpoint.authority.clone());
                *req.version_mut() = Version::HTTP_11;
            }
        }
        *req.uri_mut() = http::Uri::from_parts(parts)?;
        Ok(())
    }

    /// Sends a request [`address`](Self::address)ed to `endpoint`.
    pub async fn send(
        &self,
        upstreams: &Upstreams,
        endpoint: &Pick,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, UpstreamFailure> {
        match &self.transport {
            Transport::Http1 => upstreams.http1.request(req).await.map_err(UpstreamFailure::of_legacy),
            Transport::Http1Tls(client) => client.request(req).await.map_err(UpstreamFailure::of_legacy),
            Transport::Http2(connections) => connections[endpoint.index].send(req).await,
        }
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
        let picks: Vec<_> = (0..4).map(|_| b.pick().authority.as_str().to_owned()).collect();
        assert_eq!(picks, ["a:1", "b:2", "a:1", "b:2"]);
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    fn request(host: &str) -> http::Request<()> {
        let mut req = http::Request::get("/v1/generate?x=1").body(()).expect("valid");
        req.headers_mut()
            .insert(http::header::HOST, host.parse().expect("valid"));
        req
    }

    #[test]
    fn http1_keeps_host_and_connects_to_the_endpoint() {
        let b = Backend::new(
            "b".into(),
            vec!["10.0.0.7:9001".parse().expect("valid")],
            Protocol::H1,
            None,
        );
        let mut req = request("model.example");
        b.address(&b.pick(), &mut req).expect("addressed");
        assert_eq!(req.uri(), "http://10.0.0.7:9001/v1/generate?x=1");
        assert_eq!(req.headers()[http::header::HOST], "model.example");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[tokio::test]
    async fn http2_sends_the_clients_host_as_authority_and_no_host_header() {
        let b = Backend::new(
            "b".into(),
            vec!["10.0.0.7:9001".parse().expect("valid")],
            Protocol::H2c,
            None,
        );
        let mut req = request("model.example:8080");
        b.address(&b.pick(), &mut req).expect("addressed");
        assert_eq!(req.uri(), "http://model.example:8080/v1/generate?x=1");
        assert!(!req.headers().contains_key(http::header::HOST));
        assert_eq!(req.version(), Version::HTTP_2);

        // Without a usable host, the endpoint's address stands in.
        let mut req = http::Request::get("/").body(()).expect("valid");
        b.address(&b.pick(), &mut req).expect("addressed");
        assert_eq!(req.uri(), "http://10.0.0.7:9001/");
    }
}
