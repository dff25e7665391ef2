//! The `weir` command line against a cluster: `status` (a table, a detail view, JSON or YAML,
//! once or watching) and the verbs `promote`, `abort`, `pause`, `resume` and `retry`, which set
//! the Rollout's `weir.dev/request` annotation for whichever controller replica leads. The
//! kubeconfig, `--context` and `-n` work as in kubectl.

pub mod render;
mod report;

pub use report::{ReportArgs, report};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::cluster::controller::client;
use crate::cluster::request;
use crate::rollout::Rollout;
use crate::status::{Phase, RolloutStatus, Verb};

/// Where the Rollouts are.
#[derive(clap::Args, Debug, Clone)]
pub struct KubeArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The status object as JSON (with no name: `{"items": [...]}`).
    Json,
    /// The same as YAML.
    Yaml,
}

/// `weir status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// One Rollout, shown in detail; all of the namespace's when omitted.
    pub name: Option<String>,
    /// Where.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Every namespace (no name).
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Keep watching: redraw in place on a terminal, one line (or document) per change otherwise.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Print the status as JSON or YAML instead of text.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

/// `weir promote|abort|pause|resume|retry NAME`.
#[derive(clap::Args, Debug, Clone)]
pub struct VerbArgs {
    /// The Rollout.
    pub name: String,
    /// Where.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Prints `error` with its causes and fails.
fn fail(command: &str, error: &anyhow::Error) -> ExitCode {
    eprintln!("weir {command}: {error:#}");
    ExitCode::FAILURE
}

/// Runs `weir status`.
pub async fn status(args: StatusArgs) -> ExitCode {
    match status_inner(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("status", &error),
    }
}

async fn namespace_and_client(kube: &KubeArgs) -> Result<(kube::Client, String)> {
    let client = client(kube.kubeconfig.as_ref(), kube.context.as_deref()).await?;
    let namespace = kube
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}

async fn status_inner(args: &StatusArgs) -> Result<()> {
    let (client, namespace) = namespace_and_client(&args.kube).await?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last = None;
    loop {
        let text = render_once(args, &client, &namespace).await?;
        if last.as_ref() != Some(&text) {
            if args.watch && terminal && args.output.is_none() {
                // Redraw in place: home, clear the screen below.
                print!("\x1b[H\x1b[J{text}");
            } else {
                print!("{text}");
            }
            last = Some(text);
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn render_once(args: &StatusArgs, client: &kube::Client, namespace: &str) -> Result<String> {
    let one_line = args.watch;
    if let Some(name) = &args.name {
        let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        let rollout = get(&api, namespace, name).await?;
        let status = rollout.status.clone().unwrap_or_default();
        return Ok(match args.output {
            Some(Format::Json) if one_line => format!("{}\n", serde_json::to_string(&status)?),
            Some(Format::Json) => format!("{}\n", serde_json::to_string_pretty(&status)?),
            Some(Format::Yaml) => format!("{}---\n", serde_saphyr::to_string(&status)?),
            None => {
                let events = events(client, namespace, name).await.unwrap_or_default();
                render::detail(namespace, name, &status, &events)
            }
        });
    }
    let api: Api<Rollout> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing Rollouts (is the CRD installed? `weir crd | kubectl apply -f -`)")?;
    let items: Vec<(String, String, RolloutStatus)> = list
        .items
        .iter()
        .map(|r| {
            (
                r.namespace().unwrap_or_default(),
                r.name_any(),
                r.status.clone().unwrap_or_default(),
            )
        })
        .collect();
    let document = || json!({ "items": items.iter().map(|(ns, name, status)| json!({ "namespace": ns, "name": name, "status": status })).collect::<Vec<_>>() });
    Ok(match args.output {
        Some(Format::Json) if one_line => format!("{}\n", serde_json::to_string(&document())?),
        Some(Format::Json) => format!("{}\n", serde_json::to_string_pretty(&document())?),
        Some(Format::Yaml) => format!("{}---\n", serde_saphyr::to_string(&document())?),
        None if items.is_empty() => format!("No Rollouts in namespace {namespace}.\n"),
        None => {
            let rows: Vec<render::Row<'_>> = items
                .iter()
                .map(|(ns, name, status)| render::Row {
                    namespace: ns,
                    name,
                    status,
                })
                .collect();
            render::table(&rows, args.all_namespaces)
        }
    })
}

async fn get(api: &Api<Rollout>, namespace: &str, name: &str) -> Result<Rollout> {
    api.get_opt(name)
        .await
        .with_context(|| format!("reading Rollout {namespace}/{name}"))?
        .with_context(|| format!("Rollout {namespace}/{name} not found"))
}

/// The Rollout's latest Events, oldest first, as `time reason: note` lines.
async fn events(client: &kube::Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("regarding.name={name},regarding.kind=Rollout");
    let mut list = api.list(&ListParams::default().fields(&selector)).await?.items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let start = list.len().saturating_sub(10);
    Ok(list[start..]
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.event_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default()
            )
        })
        .collect())
}

/// What `verb` does to a Rollout in `phase`, or why it does not apply.
pub fn plan(verb: Verb, phase: Phase) -> Result<&'static str, String> {
    let applies = match verb {
        Verb::Pause => phase == Phase::Progressing,
        Verb::Resume => phase == Phase::Paused,
        Verb::Promote | Verb::Abort => matches!(phase, Phase::Progressing | Phase::Paused),
        Verb::Retry => phase == Phase::Aborted,
    };
    if !applies {
        let wants = match verb {
            Verb::Pause => "Progressing",
            Verb::Resume => "Paused",
            Verb::Promote | Verb::Abort => "Progressing or Paused",
            Verb::Retry => "Aborted",
        };
        return Err(format!(
            "{} does not apply: the Rollout is {phase:?}, and {} needs it {wants}",
            verb.as_str(),
            verb.as_str()
        ));
    }
    Ok(match verb {
        Verb::Pause => {
            "the weight holds where it is until `weir resume`; a candidate shown to be worse is still aborted"
        }
        Verb::Resume => "the current step starts again, with its hold and analysis",
        Verb::Promote => "the candidate's analysed template is copied into stable now, skipping the remaining steps",
        Verb::Abort => "all traffic goes to stable at once, then the candidate is scaled to zero",
        Verb::Retry => "the rollout starts again from the first step",
    })
}

/// Runs one of the verbs.
pub async fn act(verb: Verb, args: VerbArgs) -> ExitCode {
    match act_inner(verb, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(verb.as_str(), &error),
    }
}

async fn act_inner(verb: Verb, args: &VerbArgs) -> Result<()> {
    let (client, namespace) = namespace_and_client(&args.kube).await?;
    let api: Api<Rollout> = Api::namespaced(client, &namespace);
    let rollout = get(&api, &namespace, &args.name).await?;
    let phase = rollout.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let what = plan(verb, phase).map_err(anyhow::Error::msg)?;
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({ "metadata": { "annotations": { request::ANNOTATION: request::format(verb, &at) } } });
    let params = PatchParams {
        field_manager: Some("weir-cli".into()),
        ..PatchParams::default()
    };
    api.patch(&args.name, &params, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating Rollout {namespace}/{}", args.name))?;
    println!(
        "{} requested for Rollout {namespace}/{}: {what}.",
        verb.as_str(),
        args.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_applies_only_in_its_phases_and_says_why_not() {
        assert!(plan(Verb::Pause, Phase::Progressing).is_ok());
        assert!(plan(Verb::Promote, Phase::Paused).is_ok());
        assert!(plan(Verb::Retry, Phase::Aborted).is_ok());
        let why = plan(Verb::Resume, Phase::Progressing).unwrap_err();
        assert!(why.contains("Progressing") && why.contains("Paused"), "{why}");
        assert!(plan(Verb::Abort, Phase::Succeeded).is_err());
        assert!(plan(Verb::Retry, Phase::Idle).is_err());
    }
}
