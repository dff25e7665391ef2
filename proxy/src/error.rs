//! The one error type of the request path, and the rescue that turns it into a response.
//!
//! Every proxy-made response comes from [`ProxyError::into_response`], so each carries
//! `x-weir-error` and each is logged once, here, with its context.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::uri::Authority;
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::grpc;

/// Response header naming the reason of a proxy-made error.
pub const ERROR_HEADER: &str = "x-weir-error";

/// Who caused a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request was malformed or matched nothing.
    Client,
    /// The upstream was unreachable, slow or broke the connection.
    Upstream,
    /// The proxy cannot serve yet.
    Proxy,
}

/// Why the proxy answered a request itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No config has been loaded yet.
    #[error("no config is loaded yet")]
    NotReady,
    /// No route matches the request.
    #[error("no route matches the request")]
    NoRoute,
    /// An HTTP/1.1 request without a Host header.
    #[error("the request has no host")]
    MissingHost,
    /// The request's headers are larger than the proxy accepts.
    #[error("request headers are {size} bytes, over the limit of {limit}")]
    HeadersTooLarge {
        /// Bytes of names and values.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A CONNECT request: the proxy forwards requests, it does not open tunnels.
    #[error("CONNECT is not supported: weir-proxy forwards requests, it does not tunnel")]
    Connect,
    /// An upgrade (WebSocket) request for a backend that does not speak HTTP/1.1, where an
    /// upgrade cannot travel.
    #[error("route {route} sends upgrades to backend {backend}, which does not speak HTTP/1.1 (protocol h1)")]
    UpgradeNeedsHttp1 {
        /// Route name.
        route: String,
        /// The backend.
        backend: String,
    },
    /// A request that cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's request body failed on its way upstream (malformed, or cut short).
    #[error("the request body failed on its way to {endpoint} (route {route}, {side})")]
    BadRequestBody {
        /// Route name.
        route: String,
        /// Side the request went to (a variant's name on an N-way route).
        side: String,
        /// Endpoint it was going to.
        endpoint: Authority,
        /// Why, from below the proxy.
        #[source]
        source: crate::upstream::failure::BoxError,
    },
    /// The side's backend has no ready endpoint (a Service with none ready).
    #[error("backend {backend} has no ready endpoint (route {route}, {side})")]
    NoEndpoint {
        /// Route name.
        route: String,
        /// Side the request was for.
        side: String,
        /// The backend.
        backend: String,
    },
    /// The upstream connection could not be made.
    #[error("connecting to {endpoint} (route {route}, {side})")]
    UpstreamConnect {
        /// Route name.
        route: String,
        /// Side the request went to (a variant's name on an N-way route).
        side: String,
        /// Endpoint tried.
        endpoint: Authority,
        /// Why, from below the proxy.
        #[source]
        source: crate::upstream::failure::BoxError,
    },
    /// The TLS handshake with the upstream failed.
    #[error("TLS with {endpoint} failed (route {route}, {side})")]
    UpstreamTls {
        /// Route name.
        route: String,
        /// Side the request went to (a variant's name on an N-way route).
        side: String,
        /// Endpoint tried.
        endpoint: Authority,
        /// Why, from below the proxy.
        #[source]
        source: crate::upstream::failure::BoxError,
    },
    /// The upstream sent no response headers within the route's timeout.
    #[error("no response from {endpoint} within {timeout:?} (route {route}, {side})")]
    UpstreamTimeout {
        /// Route name.
        route: String,
        /// Side the request went to (a variant's name on an N-way route).
        side: String,
        /// Endpoint tried.
        endpoint: Authority,
        /// The route's timeout.
        timeout: std::time::Duration,
    },
    /// The upstream connection failed after the request was sent.
    #[error("upstream {endpoint} failed before responding (route {route}, {side})")]
    UpstreamReset {
        /// Route name.
        route: String,
        /// Side the request went to (a variant's name on an N-way route).
        side: String,
        /// Endpoint tried.
        endpoint: Authority,
        /// Why, from below the proxy.
        #[source]
        source: crate::upstream::failure::BoxError,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotReady | ProxyError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MissingHost | ProxyError::BadRequest(_) | ProxyError::BadRequestBody { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpgradeNeedsHttp1 { .. } => StatusCode::NOT_IMPLEMENTED,
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamReset { .. } | ProxyError::UpstreamTls { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-weir-error` value: short, stable, for machines.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NotReady => "not-ready",
            ProxyError::NoRoute => "no-route",
            ProxyError::MissingHost => "missing-host",
            ProxyError::HeadersTooLarge { .. } => "headers-too-large",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::Connect => "connect-not-supported",
            ProxyError::UpgradeNeedsHttp1 { .. } => "upgrade-needs-http1-backend",
            ProxyError::BadRequestBody { .. } => "bad-request-body",
            ProxyError::NoEndpoint { .. } => "no-endpoint",
            ProxyError::UpstreamConnect { .. } => "upstream-connect",
            ProxyError::UpstreamTls { .. } => "upstream-tls",
            ProxyError::UpstreamTimeout { .. } => "upstream-timeout",
            ProxyError::UpstreamReset { .. } => "upstream-reset",
        }
    }

    /// Who was at fault.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NotReady | ProxyError::UpgradeNeedsHttp1 { .. } => Fault::Proxy,
            ProxyError::NoRoute
            | ProxyError::MissingHost
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::Connect
            | ProxyError::BadRequest(_)
            | ProxyError::BadRequestBody { .. } => Fault::Client,
            ProxyError::NoEndpoint { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamReset { .. }
            | ProxyError::UpstreamTls { .. } => Fault::Upstream,
        }
    }

    /// The gRPC status a gRPC client gets for this error.
    pub fn grpc_status(&self) -> u32 {
        match self {
            ProxyError::NoRoute | ProxyError::Connect | ProxyError::UpgradeNeedsHttp1 { .. } => {
                grpc::code::UNIMPLEMENTED
            }
            ProxyError::MissingHost
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::BadRequestBody { .. } => grpc::code::INVALID_ARGUMENT,
            ProxyError::UpstreamTimeout { .. } => grpc::code::DEADLINE_EXCEEDED,
            ProxyError::NotReady
            | ProxyError::NoEndpoint { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamReset { .. }
            | ProxyError::UpstreamTls { .. } => grpc::code::UNAVAILABLE,
        }
    }

    /// Logs the error once and builds the response the client gets. Details stay in the log.
    /// A gRPC client gets a trailers-only gRPC answer (HTTP 200 with `grpc-status` and
    /// `grpc-message`), which gRPC libraries understand; others get the HTTP status.
    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        self.log();
        self.response(grpc)
    }

    /// Logs the error, at warn when the upstream or the proxy is at fault.
    pub fn log(&self) {
        let reason = self.reason();
        match self.fault() {
            Fault::Upstream | Fault::Proxy => {
                tracing::warn!(error = %ErrorChain(self), reason, "proxy-made error")
            }
            Fault::Client => tracing::info!(error = %ErrorChain(self), reason, "proxy-made error"),
        }
    }

    /// The response the client gets, without logging (for errors already logged for this peer).
    pub fn response(self, grpc: bool) -> Response<ProxyBody> {
        let reason = self.reason();
        if grpc {
            let mut rsp = Response::new(ProxyBody::full(Bytes::new()));
            let headers = rsp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            headers.insert("grpc-message", HeaderValue::from_static(reason));
            headers.insert(ERROR_HEADER, HeaderValue::from_static(reason));
            return rsp;
        }
        let mut rsp = Response::new(ProxyBody::full(Bytes::from_static(reason.as_bytes())));
        *rsp.status_mut() = self.status();
        let headers = rsp.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(reason));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if let ProxyError::Connect = self {
            // RFC 9110 section 15.5.6: a 405 lists what is allowed. The connection closes:
            // a client that goes on to send tunnel bytes must not have them read as requests.
            let headers = rsp.headers_mut();
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            );
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        rsp
    }
}

/// Displays an error with its sources, `outer: inner: innermost`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
