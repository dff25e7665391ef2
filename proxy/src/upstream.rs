//! Upstream connections: one pooled HTTP/1.1 client shared by all backends, and per-request
//! balancing over a backend's endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The client that carries requests upstream. Its pool is keyed by endpoint, so it outlives
/// config reloads: a new table reuses the warm connections of the old one.
pub type UpstreamClient = Client<HttpConnector, Incoming>;

/// How long a connection attempt may take before the request fails with `upstream-connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the upstream client.
pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        // The proxy sets Host itself, from the client's request, so the upstream sees the
        // name the client asked for rather than the endpoint's address.
        .set_host(false)
        .build(connector)
}

/// One backend: interchangeable endpoints, balanced round-robin per request.
#[derive(Debug)]
pub struct Backend {
    /// Name from the config.
    pub name: String,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
}

impl Backend {
    /// A backend over `endpoints`, which validation guarantees is not empty.
    pub fn new(name: String, endpoints: Vec<Authority>) -> Self {
        assert!(!endpoints.is_empty(), "validation rejects backends without endpoints");
        Backend {
            name,
            endpoints,
            next: AtomicUsize::new(0),
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
        );
        let picks: Vec<_> = (0..4).map(|_| b.pick().as_str().to_owned()).collect();
        assert_eq!(picks, ["a:1", "b:2", "a:1", "b:2"]);
    }
}
