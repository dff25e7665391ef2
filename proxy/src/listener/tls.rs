//! TLS on the data-plane listener: loads the certificate and key (file I/O, an edge), serves
//! whichever pair was last loaded well, and watches the files to rotate it. No HTTP here: the
//! listener ([`super`]) does the handshake with the [`TlsAcceptor`] made here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ListenTls;
use crate::metrics::{ProxyMetrics, ReloadResult};
use crate::shutdown::{ShutdownSignal, stopped};

/// How often the certificate and key files are read to look for a new pair.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The `source` label of certificate reloads in `weir_config_reloads_total`.
pub const RELOAD_SOURCE: &str = crate::metrics::reload_source::TLS;
/// Protocols offered by ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificate or key of the listener cannot be used. Messages start with the config
/// field at fault, like config errors do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{field}: {}: cannot read", path.display())]
    Read {
        /// `tls.cert` or `tls.key`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{field}: {}: not valid PEM", path.display())]
    Pem {
        /// `tls.cert` or `tls.key`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("tls.cert: {}: holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("tls.key: {}: holds no PEM private key", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind the crypto provider cannot sign with.
    #[error("tls.key: {}: unusable private key", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why the provider refused it.
        #[source]
        source: rustls::Error,
    },
    /// The leaf certificate cannot be parsed.
    #[error("tls.cert: {}: unusable certificate", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the leaf certificate.
    #[error("tls.cert: the key does not match this certificate")]
    KeyMismatch,
    /// The crypto provider offers no protocol version rustls accepts.
    #[error("tls: cannot build the server config")]
    Config {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// The bytes of the two files, as read. Kept to notice changes without parsing every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_files(files: &ListenTls) -> Result<PemFiles, TlsError> {
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            field,
            path: path.to_owned(),
            source,
        })
    };
    Ok(PemFiles {
        cert: read("tls.cert", &files.cert)?,
        key: read("tls.key", &files.key)?,
    })
}

/// Parses a pair and checks that the key belongs to the leaf certificate. No I/O.
fn parse(files: &ListenTls, pem: &PemFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            field: "tls.cert",
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&pem.key) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: files.key.clone(),
            });
        }
        Err(source) => {
            return Err(TlsError::Pem {
                field: "tls.key",
                path: files.key.clone(),
                source,
            });
        }
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: files.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half, so there is nothing to compare; the
        // handshake would still fail for clients if it were wrong (rustls does the same).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        Err(source) => Err(TlsError::Certificate {
            path: files.cert.clone(),
            source,
        }),
    }
}

/// Reads and checks the certificate and key named by `files`.
pub fn load(files: &ListenTls, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    parse(files, &read_files(files)?, provider)
}

/// The certificate and key in use, swapped whole on rotation. Each handshake loads it once,
/// so a connection keeps the pair it started with.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store serving `initial`.
    pub fn new(initial: CertifiedKey) -> Self {
        CertStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The pair new connections get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    fn replace(&self, next: CertifiedKey) {
        self.current.store(Arc::new(next));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The listener's TLS: the acceptor for handshakes and what the watcher needs to rotate it.
#[derive(Clone)]
pub struct ListenerTls {
    /// Does the handshakes; offers ALPN `h2` and `http/1.1`.
    pub acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    files: ListenTls,
    provider: Arc<CryptoProvider>,
    loaded: PemFiles,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads the pair named by `files` with the ring provider and builds the server config.
    /// Reads files: call it from a blocking context or at startup.
    pub fn load(files: &ListenTls) -> Result<Self, TlsError> {
        // The provider is passed explicitly rather than installed process-wide, so that the
        // library (and its tests) work whatever the binary installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = read_files(files)?;
        let store = Arc::new(CertStore::new(parse(files, &loaded, &provider)?));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config { source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            files: files.clone(),
            provider,
            loaded,
        })
    }

    /// The pair in use.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// Polls the files until `shutdown`. When their content changes and the new pair loads
    /// and matches, new connections get it (open ones keep theirs); a bad pair is logged and
    /// counted as a `tls` reload error, once per distinct content, and the old pair stays.
    pub async fn watch(self, metrics: ProxyMetrics, shutdown: ShutdownSignal) {
        let ListenerTls {
            store,
            files,
            provider,
            loaded,
            ..
        } = self;
        // What was last seen: the serving pair, or the error of a content that failed, so a
        // pair written in two steps (cert, then key) is reported at most once per state.
        let mut last: Result<PemFiles, String> = Ok(loaded);
        let stop = stopped(shutdown);
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let attempt = tokio::task::spawn_blocking({
                let (files, provider) = (files.clone(), Arc::clone(&provider));
                let previous = last.as_ref().ok().cloned();
                move || {
                    let pem = read_files(&files)?;
                    if previous.as_ref() == Some(&pem) {
                        return Ok(None);
                    }
                    let key = parse(&files, &pem, &provider)?;
                    Ok(Some((pem, key)))
                }
            })
            .await;
            let result: Result<Option<(PemFiles, CertifiedKey)>, TlsError> = match attempt {
                Ok(result) => result,
                Err(error) => {
                    tracing::error!(%error, "the certificate reading task failed");
                    continue;
                }
            };
            match result {
                Ok(None) => {}
                Ok(Some((pem, key))) => {
                    store.replace(key);
                    metrics.record_reload(RELOAD_SOURCE, ReloadResult::ok);
                    tracing::info!(cert = %files.cert.display(), "serving a new listener certificate");
                    last = Ok(pem);
                }
                Err(error) => {
                    let message = crate::error::ErrorChain(&error).to_string();
                    if last.as_ref().err() != Some(&message) {
                        metrics.record_reload(RELOAD_SOURCE, ReloadResult::error);
                        tracing::warn!(error = %message, "new listener certificate rejected; the previous one keeps serving");
                        last = Err(message);
                    }
                }
            }
        }
    }
}
