//! Upstream connections and per-request balancing over a backend's endpoints.
//!
//! Both protocols choose the connection by endpoint, and the request keeps the client's host:
//! HTTP/1.1 through [`h1`], keep-alive connections pooled per endpoint (the plain-text pool
//! shared by all backends); HTTP/2 (h2c, or h2 over TLS) through [`h2`], one multiplexed
//! connection per endpoint, so that the request can carry the client's host as `:authority`
//! while the connection goes to the endpoint's address.

pub mod body;
pub mod dial;
pub mod discovery;
pub mod failure;
pub mod h1;
pub mod h2;
pub mod tls;

pub use body::UpstreamBody;
pub use failure::{BoxError, UpstreamFailure};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use http::Version;
use http::uri::Authority;
use http::uri::Scheme;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::Protocol;
use crate::upstream::dial::Dial;
use crate::upstream::tls::TlsSettings;

/// How long a connection attempt may take before the request fails with `upstream-connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared plain-text HTTP/1.1 pool. It is keyed by endpoint, so it outlives config
/// reloads: a new table reuses the warm connections of the old one.
#[derive(Clone, Debug)]
pub struct Upstreams {
    http1: Arc<h1::Pool>,
}

impl Upstreams {
    /// Builds the pool; made on a runtime, it closes idle connections there.
    pub fn new() -> Self {
        Upstreams {
            http1: Arc::new(h1::Pool::new(Dial::Plain(http_connector()), POOL_IDLE_TIMEOUT)),
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

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// The endpoints a backend balances over now. The route table is immutable and swapped whole;
/// this is the one leaf that changes in place, so that discovered endpoints coming and going
/// neither rebuild the table nor reset its split sequences and fail-fast windows. Fixed for a
/// backend of static endpoints; kept current by [`discovery`] for a Service's.
pub type EndpointCell = Arc<ArcSwap<Vec<Authority>>>;

/// A cell holding `endpoints` for good.
pub fn fixed(endpoints: Vec<Authority>) -> EndpointCell {
    Arc::new(ArcSwap::from_pointee(endpoints))
}

/// How a backend's requests travel.
#[derive(Debug)]
enum Transport {
    /// HTTP/1.1 over the shared plain-text pool.
    Http1,
    /// HTTP/1.1 over TLS, through the backend's own pool.
    Http1Tls(h1::Pool),
    /// HTTP/2, one connection per endpoint (h2c, or h2 over TLS), made on first use.
    Http2 {
        dial: Dial,
        connections: Mutex<HashMap<Authority, Arc<h2::Endpoint>>>,
    },
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
    endpoints: EndpointCell,
    next: AtomicUsize,
    /// The TLS settings its connections use, refreshed when the CA file changes.
    tls: Option<TlsSettings>,
}

/// One endpoint of a backend, chosen for a request.
#[derive(Clone, Debug)]
pub struct Pick {
    /// The endpoint's address.
    pub authority: Authority,
}

impl Backend {
    /// A backend over the endpoints in `endpoints`. `tls` holds the loaded settings of a
    /// backend that speaks TLS.
    pub fn new(name: String, endpoints: EndpointCell, protocol: Protocol, tls: Option<&TlsSettings>) -> Self {
        let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        let transport = match (protocol, tls) {
            (Protocol::H2 | Protocol::H2c, tls) => Transport::Http2 {
                dial: Dial::new(http_connector(), tls),
                connections: Mutex::new(HashMap::new()),
            },
            (Protocol::H1, Some(tls)) => {
                Transport::Http1Tls(h1::Pool::new(Dial::new(http_connector(), Some(tls)), POOL_IDLE_TIMEOUT))
            }
            (Protocol::H1, None) => Transport::Http1,
        };
        Backend {
            name,
            protocol,
            scheme,
            transport,
            endpoints,
            next: AtomicUsize::new(0),
            tls: tls.cloned(),
        }
    }

    /// The TLS settings of a backend that speaks TLS.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// The endpoint for the next request, or `None` while the backend has none (a Service
    /// with no ready endpoints).
    pub fn pick(&self) -> Option<Pick> {
        let endpoints = self.endpoints.load();
        let index = match endpoints.len() {
            0 => return None,
            1 => 0,
            n => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        Some(Pick {
            authority: endpoints[index].clone(),
        })
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Arc<Vec<Authority>> {
        self.endpoints.load_full()
    }

    /// The HTTP/2 connection to `authority`, made on first use. Connections to endpoints that
    /// are gone are dropped when a new one is made.
    fn connection(
        &self,
        dial: &Dial,
        connections: &Mutex<HashMap<Authority, Arc<h2::Endpoint>>>,
        authority: &Authority,
    ) -> Arc<h2::Endpoint> {
        let mut connections = connections.lock().expect("no panics while holding the connections");
        if let Some(connection) = connections.get(authority) {
            return Arc::clone(connection);
        }
        let current = self.endpoints.load();
        connections.retain(|a, _| current.contains(a));
        let connection = Arc::new(h2::Endpoint::new(authority.clone(), dial.clone()));
        connections.insert(authority.clone(), Arc::clone(&connection));
        connection
    }

    /// Addresses `req` (whose URI holds the path, and whose `Host` the client's host) in this
    /// backend's protocol; [`send`](Self::send) chooses the connection by `endpoint`, not by
    /// the URI. HTTP/1.1 keeps `Host` and the origin-form target (a server is sent the
    /// absolute form only through a forward proxy). HTTP/2 has no `Host`: the client's host
    /// becomes `:authority` (RFC 9113 section 8.3.1; nginx rejects a request whose two
    /// disagree).
    pub fn address<B>(&self, endpoint: &Pick, req: &mut http::Request<B>) -> Result<(), http::uri::InvalidUriParts> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path);
        match self.transport {
            Transport::Http2 { .. } => {
                let host = req
                    .headers_mut()
                    .remove(http::header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok());
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(host.unwrap_or_else(|| endpoint.authority.clone()));
                *req.version_mut() = Version::HTTP_2;
            }
            Transport::Http1 | Transport::Http1Tls(_) => *req.version_mut() = Version::HTTP_11,
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
            Transport::Http1 => upstreams.http1.send(&endpoint.authority, req).await,
            Transport::Http1Tls(pool) => pool.send(&endpoint.authority, req).await,
            // Boxed: an HTTP/2 send keeps a copy of the request to send again, which would
            // make every request's future (HTTP/1.1's too) that much larger to move.
            Transport::Http2 { dial, connections } => {
                Box::pin(self.connection(dial, connections, &endpoint.authority).send(req)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_turns() {
        let cell = fixed(vec!["a:1".parse().expect("valid"), "b:2".parse().expect("valid")]);
        let b = Backend::new("b".into(), Arc::clone(&cell), Protocol::H1, None);
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick().expect("an endpoint").authority.as_str().to_owned())
            .collect();
        assert_eq!(picks, ["a:1", "b:2", "a:1", "b:2"]);
        // The cell changes in place: the same backend balances over what it holds now.
        cell.store(Arc::new(vec!["c:3".parse().expect("valid")]));
        assert_eq!(b.pick().expect("an endpoint").authority.as_str(), "c:3");
        cell.store(Arc::new(Vec::new()));
        assert!(b.pick().is_none(), "no endpoint, no pick");
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
    fn http1_keeps_host_and_the_origin_form_target() {
        let b = Backend::new(
            "b".into(),
            fixed(vec!["10.0.0.7:9001".parse().expect("valid")]),
            Protocol::H1,
            None,
        );
        let mut req = request("model.example");
        b.address(&b.pick().expect("an endpoint"), &mut req).expect("addressed");
        assert_eq!(
            req.uri(),
            "/v1/generate?x=1",
            "origin form: the pool connects to the endpoint"
        );
        assert_eq!(req.headers()[http::header::HOST], "model.example");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[tokio::test]
    async fn http2_sends_the_clients_host_as_authority_and_no_host_header() {
        let b = Backend::new(
            "b".into(),
            fixed(vec!["10.0.0.7:9001".parse().expect("valid")]),
            Protocol::H2c,
            None,
        );
        let mut req = request("model.example:8080");
        b.address(&b.pick().expect("an endpoint"), &mut req).expect("addressed");
        assert_eq!(req.uri(), "http://model.example:8080/v1/generate?x=1");
        assert!(!req.headers().contains_key(http::header::HOST));
        assert_eq!(req.version(), Version::HTTP_2);

        // Without a usable host, the endpoint's address stands in.
        let mut req = http::Request::get("/").body(()).expect("valid");
        b.address(&b.pick().expect("an endpoint"), &mut req).expect("addressed");
        assert_eq!(req.uri(), "http://10.0.0.7:9001/");
    }
}
