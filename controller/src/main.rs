//! The `weir` binary: the command line of weir's control plane.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weir: progressive delivery for HTTP and gRPC services.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole rollout on this machine: two model servers, the proxy, load, and the
    /// controller. Exits 0 when the outcome is the one the flags predict.
    Demo(weir::demo::DemoArgs),
    /// Run the controller: drive every Rollout of the gateway through its steps, against the
    /// cluster of the kubeconfig (or the one it runs in).
    Controller(weir::cluster::controller::ControllerArgs),
    /// Print the Rollout CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", weir::rollout::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Demo(args) => {
            init_logging("warn");
            match runtime() {
                Ok(runtime) => runtime.block_on(weir::demo::run(args)),
                Err(code) => code,
            }
        }
        Command::Controller(args) => {
            init_logging("info");
            let _ = rustls::crypto::ring::default_provider().install_default();
            let Ok(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(weir::cluster::controller::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("weir controller: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("weir: cannot start the runtime: {error}");
            ExitCode::FAILURE
        })
}

/// `default` unless `WEIR_LOG` says otherwise: the demo shows warnings only (its own output is
/// the story), the controller its acts too.
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
