//! The `weir` binary: the command line of weir's control plane.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir::status::Verb;

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
    /// Show Rollouts: a table, or one in detail (-o json|yaml for the status object).
    Status(weir::cli::StatusArgs),
    /// Promote now, skipping the remaining steps.
    Promote(weir::cli::VerbArgs),
    /// Abort now: all traffic to stable, then the candidate scaled to zero.
    Abort(weir::cli::VerbArgs),
    /// Hold the weight where it is until resume.
    Pause(weir::cli::VerbArgs),
    /// Go on after a pause.
    Resume(weir::cli::VerbArgs),
    /// Start an aborted rollout again.
    Retry(weir::cli::VerbArgs),
    /// Show an experiment: each arm's numbers with their intervals and the verdict
    /// (--html FILE also writes a page with plots).
    Report(weir::cli::ReportArgs),
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
        Command::Status(args) => run_cli(weir::cli::status(args)),
        Command::Report(args) => run_cli(weir::cli::report(args)),
        Command::Promote(args) => run_cli(weir::cli::act(Verb::Promote, args)),
        Command::Abort(args) => run_cli(weir::cli::act(Verb::Abort, args)),
        Command::Pause(args) => run_cli(weir::cli::act(Verb::Pause, args)),
        Command::Resume(args) => run_cli(weir::cli::act(Verb::Resume, args)),
        Command::Retry(args) => run_cli(weir::cli::act(Verb::Retry, args)),
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

/// Runs a CLI command on a small runtime.
fn run_cli(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging("warn");
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(command),
        Err(error) => {
            eprintln!("weir: cannot start the runtime: {error}");
            ExitCode::FAILURE
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
