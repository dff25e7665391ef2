//! The Helm chart in `charts/weir`, checked with the real `helm` (built from Go modules into
//! weir's cache): its CRD is the one `weir crd` generates, and `helm lint` passes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/weir")
}

#[test]
fn the_charts_crd_is_the_one_weir_crd_generates() -> Result<()> {
    let path = chart().join("crds/rollouts.weir.dev.yaml");
    let in_chart = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    if in_chart != weir::rollout::crd_yaml() {
        bail!(
            "{} differs from `weir crd`: regenerate it with\n  cargo run --bin weir -- crd > charts/weir/crds/rollouts.weir.dev.yaml",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn helm_lint_passes() -> Result<()> {
    let helm = weir_test_tools::go_tool(weir_test_tools::HELM)?;
    let out = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("weir-helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("weir-helm-config"))
        .output()
        .with_context(|| format!("run {} lint", helm.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("helm lint failed:\n{text}");
    }
    assert!(text.contains("1 chart(s) linted, 0 chart(s) failed"), "{text}");
    Ok(())
}
