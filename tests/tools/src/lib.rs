//! weir-test-tools: where weir's tests get the real peers and clients they drive.
//!
//! - [`go_tool`] builds a pinned Go program (grpcurl, helm, ...) from the Go module proxy into
//!   weir's cache once per machine, so `cargo test --workspace` needs nothing but Rust and Go.
//! - [`debian_tool`] finds a program from a Debian package (nginx, prometheus, curl), or fails
//!   with README's `apt-get install` line: a missing tool fails its test, it never skips.
//! - [`go`] finds the Go toolchain, for these builds and for the test cluster's.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod go;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "WEIR_TESTCLUSTER_CACHE";

/// The Debian packages weir's tests use, as README's test section lists them.
pub const DEBIAN_PACKAGES: &str = "curl nginx prometheus procps util-linux iproute2 chromium";

/// README's install line for [`DEBIAN_PACKAGES`].
pub fn apt_install_line() -> String {
    format!("apt-get install -y {DEBIAN_PACKAGES}")
}

/// Where built tools, the test cluster and its logs are kept: `$WEIR_TESTCLUSTER_CACHE`, else
/// `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("weir"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| anyhow!("neither {CACHE_ENV}, XDG_CACHE_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".cache").join("weir"))
}

/// A Go program pinned by module path and version, as `go install` takes it.
#[derive(Clone, Copy, Debug)]
pub struct GoTool {
    /// The binary's name, which `go install` derives from the package path.
    pub name: &'static str,
    /// The package to install, like `github.com/fullstorydev/grpcurl/cmd/grpcurl`.
    pub package: &'static str,
    /// The module version, like `v1.9.4`.
    pub version: &'static str,
}

/// grpcurl: a real gRPC client.
pub const GRPCURL: GoTool = GoTool {
    name: "grpcurl",
    package: "github.com/fullstorydev/grpcurl/cmd/grpcurl",
    version: "v1.9.4",
};

/// h2spec: the HTTP/2 conformance suite. Its newest version the Go module proxy serves is
/// v2.2.1, published before h2spec had a go.mod (hence `+incompatible`).
pub const H2SPEC: GoTool = GoTool {
    name: "h2spec",
    package: "github.com/summerwind/h2spec/cmd/h2spec",
    version: "v2.2.1+incompatible",
};

/// helm: the real Helm, for the chart's tests.
pub const HELM: GoTool = GoTool {
    name: "helm",
    package: "helm.sh/helm/v3/cmd/helm",
    version: "v3.22.0",
};

/// The path of `tool`, built into `<cache>/bin/` on first use on this machine. Within one
/// process each tool is built at most once, however many tests ask at the same time; across
/// processes the build goes to a temporary directory and is renamed into place, so a reader
/// sees a whole binary or none.
pub fn go_tool(tool: GoTool) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = built
        .entry(tool.name)
        .or_insert_with(|| build_go_tool(tool).map_err(|e| format!("{e:#}")));
    result.clone().map_err(|e| anyhow!("{e}"))
}

fn build_go_tool(tool: GoTool) -> Result<PathBuf> {
    let bin = cache_dir()?.join("bin");
    let path = bin.join(format!("{}-{}", tool.name, tool.version));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    let go = go::find_go().with_context(|| format!("building {} for the tests", tool.name))?;
    let scratch = bin.join(format!(".{}-{}.{}", tool.name, tool.version, std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!(
        "weir-test-tools: building {}@{} with {} into {}",
        tool.package,
        tool.version,
        go.display(),
        bin.display()
    );
    let out = go::nice_command(&go)
        .args(["install", &format!("{}@{}", tool.package, tool.version)])
        .env("GOBIN", &scratch)
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} install", go.display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&scratch);
        bail!(
            "go install {}@{} failed ({}):\n{}",
            tool.package,
            tool.version,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result = std::fs::rename(scratch.join(tool.name), &path)
        .with_context(|| format!("move the built {} to {}", tool.name, path.display()));
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    Ok(path)
}

/// A Go module's files, pinned by path and version, as the Go module proxy serves them:
/// `go mod download` into Go's module cache (once per machine), then the directory it fills.
/// For files a test reads from a project that publishes them in its module, such as CRDs.
pub fn go_module_dir(module: &str, version: &str) -> Result<PathBuf> {
    let go = go::find_go().with_context(|| format!("downloading {module}@{version} for the tests"))?;
    // Outside any module, so that no go.mod around the working directory is consulted.
    let out = go::nice_command(&go)
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .current_dir(std::env::temp_dir())
        .env("GO111MODULE", "on")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} mod download", go.display()))?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if let Some(error) = info["Error"].as_str() {
        bail!("go mod download {module}@{version}: {error}");
    }
    match info["Dir"].as_str() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => bail!(
            "go mod download {module}@{version} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Where a program from a Debian package is: `PATH`, then the system directories (some are
/// not on a non-root user's `PATH`).
pub fn find_program(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH");
    let on_path = path.iter().flat_map(std::env::split_paths).map(|dir| dir.join(binary));
    let system = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(binary));
    on_path.chain(system).find(|p| p.is_file())
}

/// The program `binary` from the Debian package `package`, or an error with the line that
/// installs every package the tests use.
pub fn debian_tool(binary: &str, package: &str) -> Result<PathBuf> {
    find_program(binary).ok_or_else(|| {
        anyhow!(
            "{binary} (Debian package {package}) is not installed; the tests drive the real one. \
             Install what the tests use with: {} (README, section Two commands)",
            apt_install_line()
        )
    })
}

/// Runs `program --version`-like `args` and returns what it printed, for messages.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("(cannot run {}: {e})", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_the_packages_the_tests_use_in_one_line() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).expect("README.md");
        assert!(
            readme.contains(&apt_install_line()),
            "README must say `{}`",
            apt_install_line()
        );
    }

    #[test]
    fn a_missing_debian_tool_names_the_install_line() {
        let err = debian_tool("weir-no-such-tool", "weir-no-such-package").expect_err("missing");
        let message = format!("{err:#}");
        assert!(message.contains(&apt_install_line()), "{message}");
        assert!(message.contains("weir-no-such-package"), "{message}");
    }
}
