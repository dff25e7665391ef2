//! weir-proxy: the data plane of weir. It streams requests to the stable or the candidate
//! version of a service (by override, sticky hash or exact weight) and counts what it sees.
//! It knows nothing of rollouts: the controller drives it through its config.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod admin;
pub mod body;
pub mod ca_watch;
pub mod cause;
pub mod config;
pub mod error;
pub mod failfast;
pub mod grpc;
pub mod headers;
pub mod listener;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod recent;
pub mod route;
pub mod service;
pub mod shutdown;
pub mod source;
pub mod split;
pub mod state;
pub mod table;
pub mod upgrade;
pub mod upstream;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ConfigErrors, ProxyConfig};
pub use split::{Side, Weight};
pub use state::ConfigState;

/// How long the admin listener waits for open requests at shutdown.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);
/// Open admin connections at most: scrapers, probes and operators, never a crowd.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Backlog of the data listener when bound with `SO_REUSEPORT` (the kernel caps it at
/// `net.core.somaxconn`), as tokio's own bind uses.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`), so that more than one process may
/// listen on it and the kernel spreads new connections over them.
fn bind_reusing_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {listener} listener")]
pub struct BindError {
    /// `listen` or `admin`.
    pub listener: &'static str,
    /// The address from the config.
    pub addr: SocketAddr,
    /// The socket error.
    #[source]
    pub source: std::io::Error,
}

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The listener's certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] listener::tls::TlsError),
    /// A file the config names (an upstream CA) cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// How a proxy starts, beyond its config.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Values given by flag (`--listen`, `--admin`) in place of the config's, now and at
    /// every reload.
    pub overrides: state::Overrides,
    /// A source whose first load readiness waits for (the route ConfigMaps' first list).
    pub waiting_for: Option<String>,
}

/// A running proxy: both listeners and the live config. Used by the `weir-proxy` binary, the
/// demo and tests alike.
#[derive(Debug)]
pub struct Proxy {
    listen_addr: SocketAddr,
    admin_addr: SocketAddr,
    state: Arc<ConfigState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the listeners of `config` (port 0 picks a free port), publishes the config and
    /// starts serving. `source` labels the first load in metrics and `/config`. With `tls`,
    /// the certificate and key are loaded first (a bad pair is an error naming its field)
    /// and watched for rotation while the proxy runs.
    pub async fn start(config: ProxyConfig, source: &str) -> Result<Proxy, StartError> {
        Proxy::start_with(config, source, StartOptions::default()).await
    }

    /// [`start`](Self::start), with `options`.
    pub async fn start_with(mut config: ProxyConfig, source: &str, options: StartOptions) -> Result<Proxy, StartError> {
        let overrides = options.overrides;
        overrides.apply(&mut config);
        // Two small files read once at startup, before anything is served: not worth a
        // blocking-pool hop. Rotation reads them off the runtime threads.
        let listener_tls = config.tls.as_ref().map(listener::tls::ListenerTls::load).transpose()?;
        let bind = |listener: &'static str, addr: SocketAddr, reuse_port: bool| async move {
            let bound = if reuse_port {
                bind_reusing_port(addr)
            } else {
                TcpListener::bind(addr).await
            };
            bound.map_err(|source| BindError { listener, addr, source })
        };
        let listener = bind("listen", config.listen, config.reuse_port).await?;
        let admin = bind("admin", config.admin, false).await?;
        let local = |l: &TcpListener, name: &'static str, addr| {
            l.local_addr().map_err(|source| BindError {
                listener: name,
                addr,
                source,
            })
        };
        let listen_addr = local(&listener, "listen", config.listen)?;
        let admin_addr = local(&admin, "admin", config.admin)?;

        let mut registry = Registry::default();
        let metrics = metrics::ProxyMetrics::register(&mut registry);
        let state = Arc::new(ConfigState::with_overrides(metrics.clone(), overrides));
        // Before the admin listener serves anything, so no probe sees it ready too early.
        state.wait_for(options.waiting_for.as_deref());
        let drain = config.drain_timeout;
        let bounds = listener::Bounds::resolve(config.limits);
        tracing::info!(max_connections = bounds.max_connections, "connection cap");
        state.apply(config, source)?;

        let (shutdown, signal) = watch::channel(false);
        let shared = Arc::new(service::Shared {
            state: Arc::clone(&state),
            upstreams: upstream::Upstreams::new(),
            tls_failures_logged: std::sync::Mutex::new(recent::Recent::new(1024)),
            shutdown: signal.clone(),
        });
        let proto = if listener_tls.is_some() { "https" } else { "http" };
        let transport = listener::Transport::Data {
            tls: listener_tls.as_ref().map(|t| t.acceptor.clone()),
            errors: Arc::new(listener::ListenerErrors::new(metrics.clone())),
        };
        let data = tokio::spawn(ignore_drain(listener::serve(
            listener,
            transport,
            move |peer| service::ProxyService::new(Arc::clone(&shared), peer, proto),
            signal.clone(),
            drain,
            bounds,
            "listen",
        )));
        let admin_service = admin::AdminService::new(Arc::clone(&state), Arc::new(registry));
        let admin = tokio::spawn(ignore_drain(listener::serve(
            admin,
            listener::Transport::Plain,
            move |_| admin_service.clone(),
            signal.clone(),
            ADMIN_DRAIN,
            listener::Bounds {
                max_connections: ADMIN_MAX_CONNECTIONS,
                limits: config::ConnectionLimits::default(),
            },
            "admin",
        )));
        let mut tasks = vec![data, admin];
        tasks.push(tokio::spawn(ca_watch::watch(
            Arc::clone(&state),
            metrics.clone(),
            signal.clone(),
        )));
        if let Some(listener_tls) = listener_tls {
            tasks.push(tokio::spawn(listener_tls.watch(metrics, signal)));
        }
        tracing::info!(%listen_addr, %admin_addr, "weir-proxy listening");
        Ok(Proxy {
            listen_addr,
            admin_addr,
            state,
            shutdown,
            tasks,
        })
    }

    /// The data-plane address actually bound.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The live config, to apply new configs or read the table.
    pub fn state(&self) -> &Arc<ConfigState> {
        &self.state
    }

    /// Publishes a new validated config from the in-process handle; returns its version, or
    /// the files it names that cannot be used (the previous config keeps serving).
    pub fn apply(&self, config: ProxyConfig) -> Result<u64, ConfigErrors> {
        self.state.apply(config, "api")
    }

    /// A signal that fires when the proxy begins shutting down, for tasks tied to its life.
    pub fn shutdown_signal(&self) -> shutdown::ShutdownSignal {
        self.shutdown.subscribe()
    }

    /// Stops accepting, drains in-flight requests up to the drain timeout, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a listener task failed");
            }
        }
    }
}

/// A listener as a proxy task: how its drain ended is logged where it ends.
async fn ignore_drain(serve: impl Future<Output = listener::Drain>) {
    serve.await;
}
