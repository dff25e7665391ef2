//! The `weir-proxy` binary: parses the command line, sets up logging and the runtime, and
//! runs the proxy on a config file (and, with `--kube-routes`, route ConfigMaps) until SIGTERM
//! or SIGINT.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use weir_proxy::{Proxy, config, source};

/// weir-proxy: streams requests to the stable or candidate version of a service.
#[derive(Parser, Debug)]
#[command(name = "weir-proxy", version, about)]
struct Args {
    /// Config file, YAML or JSON; reloaded when it changes and on SIGHUP.
    #[arg(long, value_name = "FILE", required_unless_present = "check")]
    config: Option<PathBuf>,
    /// Validate a config file (this one, or --config's), list every error, and exit: 0 valid, 1 not.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    #[allow(clippy::option_option)]
    check: Option<Option<PathBuf>>,
    /// Also take routes and backends from the Kubernetes ConfigMaps matching this label
    /// selector (data key `config.yaml`), merged over the file's; KUBECONFIG or the in-cluster
    /// service account reaches the API server [default selector: weir.dev/gateway=weir].
    #[arg(long, value_name = "SELECTOR", num_args = 0..=1, default_missing_value = source::kube::DEFAULT_SELECTOR)]
    kube_routes: Option<String>,
    /// With --kube-routes: only this namespace's ConfigMaps [default: every namespace].
    #[arg(long, value_name = "NS", requires = "kube_routes")]
    namespace: Option<String>,
    /// Listen on this address instead of the file's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Serve the admin endpoints on this address instead of the file's `admin` (in a pod, its
    /// IP, so the controller can scrape it).
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
    /// Worker threads serving requests [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    // One process-wide provider for any rustls user that asks for the default; the library
    // passes ring explicitly where it builds configs. Fails only if one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    if let Some(check) = &args.check {
        let Some(path) = check.clone().or_else(|| args.config.clone()) else {
            eprintln!("weir-proxy: --check needs a file, or --config");
            return ExitCode::from(2);
        };
        return match source::file::read(&path).and_then(|text| config::parse(&text)) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({} route(s), {} backend(s))",
                    path.display(),
                    cfg.routes.len(),
                    cfg.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                report(&path, &errors);
                ExitCode::FAILURE
            }
        };
    }

    let path = args.config.expect("clap requires --config unless --check is given");
    let text = match source::file::read(&path) {
        Ok(text) => text,
        Err(errors) => {
            report(&path, &errors);
            return ExitCode::FAILURE;
        }
    };
    let cfg = match config::parse(&text) {
        Ok(cfg) => cfg,
        Err(errors) => {
            report(&path, &errors);
            return ExitCode::FAILURE;
        }
    };

    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let kube = args.kube_routes.map(|selector| source::kube::Selection {
        selector,
        namespace: args.namespace,
    });
    let overrides = weir_proxy::state::Overrides {
        listen: args.listen,
        admin: args.admin,
    };
    runtime.block_on(run(path, text, cfg, overrides, kube))
}

async fn run(
    path: PathBuf,
    text: String,
    cfg: config::ProxyConfig,
    overrides: weir_proxy::state::Overrides,
    kube: Option<source::kube::Selection>,
) -> ExitCode {
    let client = match &kube {
        Some(_) => match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(error) => {
                eprintln!(
                    "weir-proxy: --kube-routes: cannot reach Kubernetes (KUBECONFIG, ~/.kube/config or the in-cluster account): {}",
                    weir_proxy::error::ErrorChain(&error)
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let base = cfg.clone();
    let options = weir_proxy::StartOptions {
        overrides,
        waiting_for: kube.is_some().then(|| source::kube::WAITING_FOR.to_owned()),
    };
    let proxy = match Proxy::start_with(cfg, source::file::SOURCE, options).await {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("weir-proxy: {}", weir_proxy::error::ErrorChain(&error));
            return ExitCode::FAILURE;
        }
    };
    let state = proxy.state().clone();
    // With route ConfigMaps, the file is the base they merge over; otherwise it is the config.
    let sink: Arc<dyn source::Sink> = match (kube, client) {
        (Some(selection), Some(client)) => {
            let layers = Arc::new(source::layers::Layers::new(state.clone(), base));
            tokio::spawn(source::endpoints::watch(
                client.clone(),
                selection.namespace.clone(),
                state.discovery().clone(),
                proxy.shutdown_signal(),
            ));
            tokio::spawn(source::kube::watch(
                client,
                selection,
                layers.clone(),
                state.clone(),
                proxy.shutdown_signal(),
            ));
            layers
        }
        _ => state,
    };
    let watcher = tokio::spawn(source::file::watch(path, sink, text, proxy.shutdown_signal(), true));
    match terminated().await {
        Ok(signal) => tracing::info!(signal, "shutting down"),
        Err(error) => {
            eprintln!("weir-proxy: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    }
    proxy.shutdown().await;
    let _ = watcher.await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn terminated() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn report(path: &std::path::Path, errors: &config::ConfigErrors) {
    eprintln!("{}: invalid config, {} error(s):", path.display(), errors.0.len());
    for error in &errors.0 {
        eprintln!("  {error}");
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
