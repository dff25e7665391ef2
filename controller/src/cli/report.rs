//! `weir report NAME`: an experiment's arms, intervals and verdict as a terminal table, or with
//! `--html FILE` as a self-contained page with its plots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kube::api::Api;

use super::{KubeArgs, fail, get, namespace_and_client};
use crate::rollout::Rollout;

/// `weir report`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// The Rollout running (or having run) an experiment.
    pub name: String,
    /// Where.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Also write a self-contained HTML page with the plots to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Runs `weir report`.
pub async fn report(args: ReportArgs) -> ExitCode {
    match report_inner(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("report", &error),
    }
}

async fn report_inner(args: &ReportArgs) -> Result<()> {
    let (client, namespace) = namespace_and_client(&args.kube).await?;
    let api: Api<Rollout> = Api::namespaced(client, &namespace);
    let rollout = get(&api, &namespace, &args.name).await?;
    let Some(experiment) = rollout.status.as_ref().and_then(|s| s.experiment.as_ref()) else {
        if rollout.spec.strategy.experiment.is_none() {
            bail!(
                "Rollout {namespace}/{} is not an experiment (its strategy has no experiment)",
                args.name
            );
        }
        bail!(
            "Rollout {namespace}/{}'s experiment has not started yet (see weir status)",
            args.name
        );
    };
    print!("{}", crate::report::table(&args.name, experiment));
    if let Some(path) = &args.html {
        std::fs::write(path, crate::report::html(&args.name, experiment))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
