//! Why an upstream request got no response head: shared vocabulary of the upstream clients,
//! the request path and mirrors.

use crate::metrics::UpstreamErrorKind;

/// An error from anywhere below the proxy: a socket, TLS, hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream request got no response head.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(*.kind))]
pub struct UpstreamFailure {
    /// What kind of failure, as `weir_upstream_errors_total` counts it.
    pub kind: UpstreamErrorKind,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

fn describe(kind: UpstreamErrorKind) -> &'static str {
    match kind {
        UpstreamErrorKind::connect => "could not connect",
        UpstreamErrorKind::tls => "the TLS handshake failed",
        UpstreamErrorKind::timeout => "timed out",
        UpstreamErrorKind::reset => "the connection failed before the response",
    }
}
