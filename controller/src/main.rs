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
            init_logging();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("weir: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(weir::demo::run(args))
        }
    }
}

/// Warnings only by default: the demo's own output is the story; `WEIR_LOG=info` shows the
/// proxy's reloads too.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
