//! The request path: route, split, forward, relay. One [`ProxyService`] per client connection.
//!
//! Order of work for one request, and why:
//! 1. load the table once, so the whole request sees one config;
//! 2. reject what cannot be forwarded (oversized headers, no host) before choosing a side, so
//!    client mistakes never count against either version;
//! 3. decide the side, pick an endpoint, rewrite headers, stream the body up;
//! 4. count the request once, by how it ended ([`crate::outcome`]): a client that leaves before
//!    the head, an upstream that fails, a body that ends or breaks.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::grpc;
use crate::headers;
use crate::metrics::{CodeClass, UpstreamErrorKind};
use crate::mirror;
use crate::outcome::Pending;
use crate::split::Side;
use crate::state::ConfigState;
use crate::table::{Route, Table};
use crate::upstream::{UpstreamBody, Upstreams};

/// Largest total size of request header names and values the proxy forwards. Larger requests
/// get 431 `headers-too-large`. Hyper's own parser limit sits above this, so this check is
/// the one clients normally meet.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;

/// Response header marking a request that fail-fast sent to stable instead of the candidate.
pub const FAIL_FAST_HEADER: http::HeaderName = http::HeaderName::from_static("x-weir-fail-fast");

/// Request header marking a mirrored copy, so the candidate can tell shadow traffic apart.
pub const MIRROR_HEADER: http::HeaderName = http::HeaderName::from_static("x-weir-mirror");

/// What every connection shares: the live config and the upstream client.
#[derive(Debug)]
pub struct Shared {
    /// The live config.
    pub state: Arc<ConfigState>,
    /// The pooled upstream clients.
    pub upstreams: Upstreams,
    /// Upstream endpoints whose TLS handshake failure has been logged.
    pub tls_failures_logged: std::sync::Mutex<crate::recent::Recent<http::uri::Authority>>,
    /// Fires when the proxy shuts down; ends mirror tasks.
    pub shutdown: crate::listener::ShutdownSignal,
}

impl Shared {
    /// Whether this is the first TLS handshake failure with `endpoint` to be logged lately.
    fn first_tls_failure(&self, endpoint: &http::uri::Authority) -> bool {
        // A poisoned lock only means another thread panicked mid-insert; the set is still a
        // usable hint of what was logged.
        self.tls_failures_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(endpoint.clone())
    }
}

/// Serves the requests of one client connection.
#[derive(Clone, Debug)]
pub struct ProxyService {
    shared: Arc<Shared>,
    /// The client's address as an `x-forwarded-for` entry, formatted once per connection.
    client_addr: HeaderValue,
    /// The client's address, to check against `trustForwardedFrom`.
    client_ip: std::net::IpAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    proto: &'static str,
}

impl ProxyService {
    /// A service for a connection from `peer`.
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, proto: &'static str) -> Self {
        let client_addr = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header value");
        ProxyService {
            shared,
            client_addr,
            client_ip: peer.ip().to_canonical(),
            proto,
        }
    }

    async fn handle(self, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        // A gRPC client gets proxy-made errors as gRPC statuses, not bare HTTP errors.
        let grpc = grpc::is_grpc(req.headers());
        let Some(table) = self.shared.state.table() else {
            return ProxyError::NotReady.into_response(grpc);
        };
        match self.forward(&table, req, start, grpc).await {
            Ok(rsp) => rsp,
            Err(error) => {
                // A failing TLS handshake fails every request to that endpoint alike: log it
                // once per endpoint (each one is still counted), not once per request.
                let log = match &error {
                    ProxyError::UpstreamTls { endpoint, .. } => self.shared.first_tls_failure(endpoint),
                    _ => true,
                };
                if log {
                    error.log();
                }
                error.response(grpc)
            }
        }
    }

    async fn forward(
        &self,
        table: &Table,
        mut req: Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let size = headers::size(req.headers());
        if size > MAX_REQUEST_HEADER_BYTES {
            return Err(ProxyError::HeadersTooLarge {
                size,
                limit: MAX_REQUEST_HEADER_BYTES,
            });
        }
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        let version = req.version();
        let host = request_host(&req)?;
        let route = table
            .find(
                host.to_str().map_err(|_| ProxyError::BadRequest("host is not ASCII"))?,
                req.uri().path(),
            )
            .ok_or(ProxyError::NoRoute)?;
        let (decided, _, diverted) = route.decide(req.headers());
        let (backend, side) = route.backend(decided);
        let upgrade = crate::upgrade::requested(&req);
        if upgrade.is_some() && backend.protocol != crate::config::Protocol::H1 {
            return Err(ProxyError::UpgradeNeedsHttp1 {
                route: route.name.clone(),
                backend: backend.name.clone(),
            });
        }
        let Some(endpoint) = backend.pick() else {
            // A Service with no ready endpoint: the side failed to serve, as if none answered.
            Pending::new(Arc::clone(route), side, start).failed(UpstreamErrorKind::connect);
            return Err(ProxyError::NoEndpoint {
                route: route.name.clone(),
                side: route.side_name(side),
                backend: backend.name.clone(),
            });
        };
        let client_upgrade = upgrade.is_some().then(|| crate::upgrade::ClientUpgrade::take(&mut req));
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h);
        if let Some(protocol) = &upgrade {
            crate::upgrade::restore(h, protocol.clone());
        }
        // Only the proxy marks a mirrored copy: a client's own mark would let it pass as
        // shadow traffic, which the candidate may treat differently.
        h.remove(MIRROR_HEADER);
        if route.score.is_some() {
            // A streaming server knows its score only at the end: let it send a trailer (an
            // HTTP/1.1 server sends trailers only to a client that accepts them). An HTTP/1.1
            // client still gets trailers only if it asked for them itself.
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        h.insert(header::HOST, host);
        let trusted = table
            .config
            .trust_forwarded_from
            .iter()
            .any(|net| net.contains(&self.client_ip));
        headers::add_forwarding(h, &self.client_addr, self.proto, version, trusted);
        // The copy is made from the request as the client's host and path name it, before the
        // primary is addressed to its side.
        // An upgrade is never copied: a tunnel cannot be shadowed.
        let mut req = match upgrade {
            None => self.maybe_mirror(route, side, req),
            Some(_) => req.map(UpstreamBody::Client),
        };
        backend
            .address(&endpoint, &mut req)
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        // From here on the request belongs to a side: however it ends, it is counted once.
        let pending = Pending::new(Arc::clone(route), side, start);

        // A gRPC call's own deadline binds when it is shorter than the route's timeout.
        let call_deadline = grpc
            .then(|| grpc::timeout(req.headers()))
            .flatten()
            .filter(|call| *call < route.timeout);
        let deadline = call_deadline.unwrap_or(route.timeout);
        let mut upstream = match before_deadline(deadline, backend.send(&self.shared.upstreams, &endpoint, req)).await {
            Some(Ok(rsp)) => rsp,
            Some(Err(failure)) if crate::upstream::body::caused_by_client_body(&*failure.source) => {
                // The client broke its own request: it gave up on it, as far as the sides
                // are concerned (`cancelled`); neither side failed.
                pending.abandoned_by_client();
                return Err(ProxyError::BadRequestBody {
                    route: route.name.clone(),
                    side: route.side_name(side),
                    endpoint: endpoint.authority.clone(),
                    source: failure.source,
                });
            }
            Some(Err(failure)) => {
                pending.failed(failure.kind);
                let side = route.side_name(side);
                let (route, endpoint, source) = (route.name.clone(), endpoint.authority.clone(), failure.source);
                return Err(match failure.kind {
                    UpstreamErrorKind::tls => ProxyError::UpstreamTls {
                        route,
                        side,
                        endpoint,
                        source,
                    },
                    UpstreamErrorKind::connect => ProxyError::UpstreamConnect {
                        route,
                        side,
                        endpoint,
                        source,
                    },
                    _ => ProxyError::UpstreamReset {
                        route,
                        side,
                        endpoint,
                        source,
                    },
                });
            }
            None => {
                // The client's own deadline passing is the client giving up, as if it had
                // gone away (counted `cancelled`), not an error of the side: any client could
                // otherwise raise either side's errors at will.
                if call_deadline.is_some() {
                    drop(pending);
                } else {
                    pending.failed(UpstreamErrorKind::timeout);
                }
                return Err(ProxyError::UpstreamTimeout {
                    route: route.name.clone(),
                    side: route.side_name(side),
                    endpoint: endpoint.authority.clone(),
                    timeout: deadline,
                });
            }
        };

        let code = CodeClass::of_status(upstream.status());
        let mut completion = match (grpc, code) {
            // A gRPC client fails a 200 that is not gRPC (a misrouted or plain HTTP backend).
            (true, CodeClass::Success) if !grpc::is_grpc(upstream.headers()) => {
                pending.answered(CodeClass::GrpcError, false)
            }
            (true, CodeClass::Success) => match grpc::status(upstream.headers()) {
                // Trailers-only: a head that ends the stream carries the verdict. A status in
                // a head that a body follows is not the verdict: the trailers are.
                Some(status) if http_body::Body::is_end_stream(upstream.body()) => {
                    pending.answered(grpc::classify(status), false)
                }
                _ => pending.answered(code, true),
            },
            _ => pending.answered(code, false),
        };
        completion.head(upstream.headers());
        let tunnel = match client_upgrade {
            Some(client) if upstream.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                let protocol = upstream.headers().get(header::UPGRADE).cloned();
                client.tunnel_to(hyper::upgrade::on(&mut upstream), &route.name);
                protocol
            }
            _ => None,
        };
        let (mut head, body) = upstream.into_parts();
        headers::strip_hop_by_hop(&mut head.headers);
        if let Some(protocol) = tunnel {
            crate::upgrade::restore(&mut head.headers, protocol);
        }
        head.headers.remove(header::TE);
        head.headers.append(header::VIA, headers::via(head.version));
        if let Some(name) = &table.side_header {
            head.headers.insert(name.clone(), route.side_value(side));
        }
        if diverted {
            head.headers.insert(FAIL_FAST_HEADER, HeaderValue::from_static("1"));
        }
        // A gRPC stream may be long-lived or wait on its client (bidirectional): its silence
        // is for the call's deadline to judge, not the route's timeout.
        let idle = (!grpc).then_some(route.timeout);
        Ok(Response::from_parts(head, ProxyBody::upstream(body, completion, idle)))
    }
}

impl ProxyService {
    /// Gives the request its upstream body: the client's own, or, when the route mirrors this
    /// request, the client's teed to a copy that a separate task sends to the candidate.
    fn maybe_mirror(&self, route: &Arc<Route>, side: Side, req: Request<Incoming>) -> Request<UpstreamBody> {
        let (parts, body) = req.into_parts();
        let tripped = route.fail_fast.as_ref().is_some_and(|f| f.tripped().is_some());
        let target = route
            .mirror
            .as_ref()
            .filter(|_| side == Side::Stable && !tripped)
            .and_then(|m| Some((m, route.candidate_backend()?)))
            .filter(|(m, _)| m.select());
        let Some((mirror, backend)) = target else {
            return Request::from_parts(parts, UpstreamBody::Client(body));
        };
        let Some(in_flight) = mirror.admit() else {
            route.metrics.mirror_skipped(crate::metrics::SkipReason::max_in_flight);
            return Request::from_parts(parts, UpstreamBody::Client(body));
        };
        let Some(endpoint) = backend.pick() else {
            route.metrics.mirror_skipped(crate::metrics::SkipReason::no_endpoint);
            return Request::from_parts(parts, UpstreamBody::Client(body));
        };
        let (tee, copy, skipped) = mirror::tee(body, mirror.max_body_bytes(), Arc::clone(&route.metrics));
        let mut copy_req = Request::new(UpstreamBody::Copy(copy));
        *copy_req.method_mut() = parts.method.clone();
        *copy_req.uri_mut() = parts.uri.clone();
        *copy_req.headers_mut() = parts.headers.clone();
        copy_req
            .headers_mut()
            .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
        let backend = Arc::clone(backend);
        if backend.address(&endpoint, &mut copy_req).is_ok() {
            let upstreams = self.shared.upstreams.clone();
            let response = async move { backend.send(&upstreams, &endpoint, copy_req).await };
            tokio::spawn(mirror::send(
                response,
                Arc::clone(&route.metrics),
                route.timeout,
                skipped,
                self.shared.shutdown.clone(),
                in_flight,
            ));
        }
        Request::from_parts(parts, UpstreamBody::Tee(tee))
    }
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute-form) or the Host
/// header. HTTP/1.1 requires one; HTTP/1.0 may omit it and then matches host-less routes.
fn request_host(req: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
    if let Some(authority) = req.uri().authority() {
        // Credentials in the target are deprecated (RFC 9110 section 4.2.4) and would reach
        // the upstream as part of its Host: refused, not routed.
        if authority.as_str().contains('@') {
            return Err(ProxyError::BadRequest("userinfo in the request target"));
        }
        return HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest("invalid authority"));
    }
    match req.headers().get(header::HOST) {
        Some(host) => Ok(host.clone()),
        None if req.version() == Version::HTTP_10 => Ok(HeaderValue::from_static("")),
        None => Err(ProxyError::MissingHost),
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// `answer` if it comes before `deadline` has passed, `None` otherwise. An answer that is only
/// read once the deadline has passed is as late as none: tokio's own timeout takes an answer
/// that is ready when its timer is (a loaded runtime delivers both at once), which let a gRPC
/// call whose 1 ns deadline had long passed stream its answer to a client that had given up.
async fn before_deadline<F: Future>(deadline: std::time::Duration, answer: F) -> Option<F::Output> {
    let until = Instant::now() + deadline;
    let answered = tokio::time::timeout_at(until, answer).await.ok()?;
    (Instant::now() < until).then_some(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_answer_read_after_the_deadline_is_too_late() {
        // Ready at once, but read 1 ms after a 1 ns deadline: tokio's timeout alone takes it.
        let late = async {
            std::thread::sleep(Duration::from_millis(1));
            "answer"
        };
        assert_eq!(before_deadline(Duration::from_nanos(1), late).await, None);
        assert_eq!(
            before_deadline(Duration::from_secs(5), async { "answer" }).await,
            Some("answer")
        );
        let never = std::future::pending::<()>();
        assert_eq!(before_deadline(Duration::from_millis(10), never).await, None);
    }
}
