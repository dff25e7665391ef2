//! Finding the Go toolchain and checking its version. Go builds the test cluster and the Go
//! tools the tests drive; without it they fail with instructions, never skip.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

/// Oldest Go minor version that builds `tests/cluster` (its go.mod says `go 1.26.0`).
pub const MIN_GO_MINOR: u32 = 26;

/// Finds `go`: `$GO`, then `PATH`, then `$GOROOT/bin`, then the usual install places.
pub fn find_go() -> Result<PathBuf> {
    let mut fallbacks = Vec::new();
    if let Some(root) = std::env::var_os("GOROOT") {
        fallbacks.push(PathBuf::from(root).join("bin").join("go"));
    }
    fallbacks.push(PathBuf::from("/usr/local/go/bin/go"));
    fallbacks.push(PathBuf::from("/usr/lib/go/bin/go"));
    find_go_in(std::env::var_os("GO"), std::env::var_os("PATH"), &fallbacks)
}

/// [`find_go`] over explicit inputs, for tests.
pub fn find_go_in(go: Option<OsString>, path: Option<OsString>, fallbacks: &[PathBuf]) -> Result<PathBuf> {
    if let Some(go) = go.filter(|g| !g.is_empty()) {
        let go = PathBuf::from(go);
        if go.is_file() {
            return Ok(go);
        }
        bail!("GO={} is not a file; {}", go.display(), install_go_hint());
    }
    let on_path = path.iter().flat_map(std::env::split_paths).map(|dir| dir.join("go"));
    on_path
        .chain(fallbacks.iter().cloned())
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("the Go toolchain is not installed; {}", install_go_hint()))
}

fn install_go_hint() -> String {
    format!(
        "weir's tests need it: they build a real control plane (etcd, kube-apiserver, \
         controllers) from the Go module in tests/cluster/, and real clients such as grpcurl.\n\
         Install Go 1.{MIN_GO_MINOR} or newer and put `go` on PATH (or set GO=/path/to/go):\n  \
         - Debian/Ubuntu: `apt-get install golang`, then check `go version` (Debian 12 ships 1.19, \
         too old: `.ci/run` shows how to fetch a newer one from the Go module proxy)\n  \
         - otherwise: the official tarball from https://go.dev/dl/, unpacked to /usr/local/go\n\
         then run `cargo test --workspace` again."
    )
}

/// `go env GOVERSION`, checked against [`MIN_GO_MINOR`].
pub fn go_version(go: &Path) -> Result<String> {
    let out = Command::new(go)
        .args(["env", "GOVERSION"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} env GOVERSION", go.display()))?;
    if !out.status.success() {
        bail!(
            "{} env GOVERSION failed: {}",
            go.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let minor = version
        .strip_prefix("go1.")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= MIN_GO_MINOR => Ok(version),
        _ => bail!(
            "{} is {version}; weir's tests need Go 1.{MIN_GO_MINOR} or newer. Install a newer Go \
             (https://go.dev/dl/) and put it first on PATH, or set GO=/path/to/go; `.ci/run` shows \
             how to fetch one from the Go module proxy (module golang.org/toolchain)",
            go.display()
        ),
    }
}

/// Runs `go` under `nice -n 10` where `nice` exists, so a cold build leaves CPU to whatever
/// else the machine is compiling.
pub fn nice_command(go: &Path) -> Command {
    let nice = ["/usr/bin/nice", "/bin/nice"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    match nice {
        Some(nice) => {
            let mut cmd = Command::new(nice);
            cmd.args(["-n", "10"]).arg(go);
            cmd
        }
        None => Command::new(go),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_go_is_an_error_that_says_how_to_install_it() {
        let empty = tempfile::tempdir().expect("temp dir");
        let err = find_go_in(None, Some(empty.path().as_os_str().to_owned()), &[]).expect_err("no go in an empty PATH");
        let msg = format!("{err:#}");
        assert!(msg.contains("the Go toolchain is not installed"), "{msg}");
        assert!(msg.contains("apt-get install golang"), "{msg}");
        assert!(msg.contains("GO=/path/to/go"), "{msg}");
    }

    #[test]
    fn go_env_naming_no_file_is_an_error() {
        let err = find_go_in(Some("/nonexistent/go".into()), None, &[]).expect_err("GO names no file");
        assert!(format!("{err:#}").contains("GO=/nonexistent/go is not a file"));
    }

    #[test]
    fn go_is_found_on_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("go"), b"").expect("write fake go");
        let found = find_go_in(None, Some(dir.path().as_os_str().to_owned()), &[]).expect("found");
        assert_eq!(found, dir.path().join("go"));
    }
}
