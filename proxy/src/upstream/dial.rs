//! Opening a connection to one endpoint, plain or TLS: shared by the HTTP/1.1 and HTTP/2
//! upstream pools, which both choose the connection by endpoint, not by the request's URI.

use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::failure::UpstreamFailure;
use crate::metrics::UpstreamErrorKind;
use crate::upstream::tls::{TlsConnection, TlsConnector, TlsSettings};

/// How a connection to an endpoint is opened.
#[derive(Clone, Debug)]
pub enum Dial {
    /// Plain TCP.
    Plain(HttpConnector),
    /// TCP, then TLS offering the backend's protocol by ALPN.
    Tls(TlsConnector),
}

impl Dial {
    /// TLS when `tls` is set, else plain, over `tcp`.
    pub fn new(tcp: HttpConnector, tls: Option<&TlsSettings>) -> Self {
        match tls {
            Some(tls) => Dial::Tls(tls.connector(tcp)),
            None => Dial::Plain(tcp),
        }
    }
}

/// The URI the connectors read an endpoint's host and port from.
fn uri(authority: &Authority) -> http::Uri {
    format!("http://{authority}/")
        .parse()
        .expect("an endpoint's authority makes a valid URI")
}

/// A TCP connection to `authority`; failing, an `upstream-connect` failure.
pub async fn plain(tcp: &HttpConnector, authority: &Authority) -> Result<TokioIo<TcpStream>, UpstreamFailure> {
    tcp.clone().call(uri(authority)).await.map_err(|e| UpstreamFailure {
        kind: UpstreamErrorKind::connect,
        source: Box::new(e),
    })
}

/// A TLS connection to `authority`; failing, an `upstream-tls` failure when the handshake
/// failed and `upstream-connect` when TCP did.
pub async fn tls(tls: &TlsConnector, authority: &Authority) -> Result<TlsConnection, UpstreamFailure> {
    tls.clone().call(uri(authority)).await.map_err(|e| {
        let kind = if crate::upstream::tls::is_handshake_failure(&*e) {
            UpstreamErrorKind::tls
        } else {
            UpstreamErrorKind::connect
        };
        UpstreamFailure { kind, source: e }
    })
}
