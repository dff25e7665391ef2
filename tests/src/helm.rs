//! The real `helm` (built from Go modules into weir's cache) run on `charts/weir`, with its own
//! config and cache directories so that no user's Helm setup leaks into a test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// `charts/weir` in this checkout.
pub fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/weir")
}

/// One test's helm: the binary, and a home of its own.
pub struct Helm {
    binary: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// Builds helm on first use on this machine.
    pub fn new() -> Result<Helm> {
        Ok(Helm {
            binary: weir_test_tools::go_tool(weir_test_tools::HELM)?,
            home: tempfile::tempdir()?,
            kubeconfig: None,
        })
    }

    /// The same, talking to the cluster of `kubeconfig`.
    pub fn with_cluster(kubeconfig: &Path) -> Result<Helm> {
        let mut helm = Helm::new()?;
        helm.kubeconfig = Some(kubeconfig.to_owned());
        Ok(helm)
    }

    /// Runs `helm args...`: its stdout on success, else an error quoting its output.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (ok, stdout, stderr) = self.try_run(args)?;
        if !ok {
            bail!("helm {} failed:\n{stdout}{stderr}", args.join(" "));
        }
        Ok(stdout)
    }

    /// Runs `helm args...`: whether it succeeded, its stdout and its stderr.
    pub fn try_run(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_DATA_HOME", self.home.path().join("data"))
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT");
        match &self.kubeconfig {
            Some(path) => command.env("KUBECONFIG", path),
            None => command.env_remove("KUBECONFIG"),
        };
        let out = command
            .output()
            .with_context(|| format!("run {}", self.binary.display()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `helm template RELEASE charts/weir --namespace NAMESPACE` with `values` (each
    /// `path=json`, as `--set-json` takes it): the objects it renders.
    pub fn template(&self, release: &str, namespace: &str, values: &[&str]) -> Result<Vec<Value>> {
        let chart = chart();
        let mut args = vec!["template", release, path_str(&chart)?, "--namespace", namespace];
        for value in values {
            args.extend(["--set-json", value]);
        }
        objects(&self.run(&args)?)
    }
}

/// The objects of a multi-document YAML stream, skipping empty documents.
pub fn objects(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parse helm's YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The objects of `kind` named `name` among `objects`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} rendered"))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
