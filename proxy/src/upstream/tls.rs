//! TLS to upstreams: a connector that opens TCP with hyper-util's connector, then TLS with
//! rustls, verifying the backend's certificate against the CA the config names and sending the
//! configured SNI. ALPN offers `h2` for `protocol: h2` and `http/1.1` for `h1`, and the
//! connection reports what was negotiated so the client speaks the right version.
//!
//! Loading the CA file is I/O and happens when a config is applied (a bad file rejects the
//! config with the field's path) and when the file is polled for rotation; the connector
//! itself only connects.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{ConfigError, Protocol, UpstreamTls};

/// A TLS handshake with an upstream failed: the `tls` kind of `weir_upstream_errors_total`.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with the upstream failed")]
pub struct HandshakeFailed(#[source] pub io::Error);

/// The client-side TLS settings of one backend, loaded from its config. The CA file is
/// read again at every reload and whenever [`refresh`](Self::refresh) is called (the proxy
/// polls it), so a rotated CA reaches new connections without a restart; connections already
/// open keep the session they verified.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    config: Arc<ArcSwap<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
    source: Arc<CaSource>,
}

/// Where a backend's CA comes from, and what was last read there.
#[derive(Debug)]
struct CaSource {
    backend: String,
    ca: PathBuf,
    protocol: Protocol,
    /// The PEM the config in use was built from.
    loaded: Mutex<Vec<u8>>,
}

/// What a [`TlsSettings::refresh`] found.
#[derive(Debug)]
pub enum Refresh {
    /// The file holds what is in use.
    Unchanged,
    /// The file changed and its CA is now used for new connections.
    Replaced,
    /// The file changed but cannot be used; the previous CA stays in use.
    Failed(ConfigError),
}

impl TlsSettings {
    /// Reads the CA file and builds the client config for `protocol`; errors name
    /// `backends.NAME.tls.ca` (or `.sni`).
    pub fn load(backend: &str, tls: &UpstreamTls, protocol: Protocol) -> Result<TlsSettings, ConfigError> {
        let server_name = tls
            .sni
            .as_deref()
            .map(|sni| {
                ServerName::try_from(sni.to_owned()).map_err(|_| ConfigError {
                    path: format!("backends.{backend}.tls.sni"),
                    message: format!("{sni:?} is not a DNS name or an IP address"),
                })
            })
            .transpose()?;
        let source = CaSource {
            backend: backend.to_owned(),
            ca: tls.ca.clone(),
            protocol,
            loaded: Mutex::new(Vec::new()),
        };
        let pem = source.read()?;
        let config = source.build(&pem)?;
        *source.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = pem;
        Ok(TlsSettings {
            config: Arc::new(ArcSwap::from_pointee(config)),
            server_name,
            source: Arc::new(source),
        })
    }

    /// Reads the CA file again and, when it changed and is usable, uses it for new
    /// connections. File I/O: call it off the runtime's threads.
    pub fn refresh(&self) -> Refresh {
        let source = &self.source;
        let attempt = source.read().and_then(|pem| {
            let mut loaded = source.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *loaded == pem {
                return Ok(false);
            }
            self.config.store(Arc::new(source.build(&pem)?));
            *loaded = pem;
            Ok(true)
        });
        match attempt {
            Ok(false) => Refresh::Unchanged,
            Ok(true) => Refresh::Replaced,
            Err(error) => Refresh::Failed(error),
        }
    }

    /// The CA file.
    pub fn ca_path(&self) -> &Path {
        &self.source.ca
    }

    /// A connector using these settings.
    pub fn connector(&self, http: HttpConnector) -> TlsConnector {
        TlsConnector {
            http,
            config: Arc::clone(&self.config),
            server_name: self.server_name.clone(),
        }
    }
}

impl CaSource {
    fn error(&self, message: String) -> ConfigError {
        ConfigError {
            path: format!("backends.{}.tls.ca", self.backend),
            message,
        }
    }

    fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(&self.ca).map_err(|e| self.error(format!("{}: cannot read: {e}", self.ca.display())))
    }

    fn build(&self, pem: &[u8]) -> Result<ClientConfig, ConfigError> {
        let ca = self.ca.display();
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("{ca}: not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.error(format!("{ca}: holds no PEM certificate")));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| self.error(format!("{ca}: not a usable CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.error(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match self.protocol {
            Protocol::H2 => vec![b"h2".to_vec()],
            Protocol::H1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
        };
        Ok(config)
    }
}

/// Connects TCP, then TLS.
#[derive(Clone)]
pub struct TlsConnector {
    http: HttpConnector,
    /// The backend's current client config, loaded at each connect.
    config: Arc<ArcSwap<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConnection, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let server_name = self.server_name.clone().or_else(|| {
            let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
            ServerName::try_from(host.to_owned()).ok()
        });
        let connecting = self.http.call(uri);
        let tls = tokio_rustls::TlsConnector::from(self.config.load_full());
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let name = server_name.ok_or("the endpoint has no host usable as a TLS server name")?;
            let stream = tls.connect(name, tcp).await.map_err(HandshakeFailed)?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(TlsConnection {
                inner: TokioIo::new(stream),
                h2,
            })
        })
    }
}

/// A TLS connection to an upstream.
#[derive(Debug)]
pub struct TlsConnection {
    inner: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
}

impl TlsConnection {
    /// Whether ALPN agreed on HTTP/2.
    pub fn negotiated_h2(&self) -> bool {
        self.h2
    }
}

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let connected = self.inner.inner().get_ref().0.connected();
        if self.h2 { connected.negotiated_h2() } else { connected }
    }
}

impl hyper::rt::Read for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

/// Whether an upstream failure was a TLS handshake failure.
pub fn is_handshake_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::cause::find::<HandshakeFailed>(error).is_some()
}
