//! Builds the `weir-testcluster` binary from the Go module in `tests/cluster/`
//! and caches it outside the checkout, keyed by a hash of the module's files and
//! the Go version (the toolchain itself is found by weir-test-tools); knows nothing of running the
//! cluster.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use weir_test_tools::go::{find_go, go_version, nice_command};
pub use weir_test_tools::{CACHE_ENV, cache_dir};

/// The Go module's directory in the checkout.
pub fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster")
}

/// A built (or found cached) binary.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Path of the executable.
    pub path: PathBuf,
    /// Whether this call built it (false: it came from the cache).
    pub built: bool,
    /// Seconds the build took, when it was built.
    pub build_seconds: Option<f64>,
}

/// Returns the cached binary for the current sources, building it first when
/// it is missing or out of date. Within one process the answer is computed
/// once: tests calling this at the same time wait for one build, not start
/// several.
pub fn ensure_built() -> Result<Binary> {
    static BUILT: OnceLock<Result<Binary, String>> = OnceLock::new();
    match BUILT.get_or_init(|| build_if_needed().map_err(|e| format!("{e:#}"))) {
        Ok(binary) => Ok(binary.clone()),
        Err(msg) => bail!("{msg}"),
    }
}

fn build_if_needed() -> Result<Binary> {
    let go = find_go()?;
    let go_version = go_version(&go)?;
    let module = module_dir();
    let key = source_hash(&module, &go_version)?;
    let cache = cache_dir()?;
    fs::create_dir_all(&cache).with_context(|| format!("create cache dir {}", cache.display()))?;
    let path = cache.join(format!("weir-testcluster-{}", &key[..16]));
    if path.is_file() {
        return Ok(Binary {
            path,
            built: false,
            build_seconds: None,
        });
    }

    let log_path = cache.join(format!("build-{}.log", &key[..16]));
    let log = fs::File::create(&log_path).with_context(|| format!("create build log {}", log_path.display()))?;
    // Build beside the final path and rename: a concurrent test binary sees
    // either no binary or a whole one.
    let partial = cache.join(format!(".weir-testcluster-{}.{}", &key[..16], std::process::id()));
    let ldflags = format!("-s -w {}", version_ldflags(&module)?);
    let mut cmd = nice_command(&go);
    cmd.current_dir(&module)
        .args(["build", "-p", "2", "-ldflags", &ldflags, "-o"])
        .arg(&partial)
        .arg(".")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!(
        "weir-tests: building weir-testcluster with {go_version} (a cold build takes minutes); log: {}",
        log_path.display()
    );
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("run {}", go.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let _ = fs::remove_file(&partial);
        bail!(
            "building weir-testcluster failed ({status}); the build log is {}\n--- last lines of the log ---\n{}",
            log_path.display(),
            tail_lines(&log_path, 30)
        );
    }
    fs::rename(&partial, &path).with_context(|| format!("move {} to {}", partial.display(), path.display()))?;
    eprintln!("weir-tests: built {} in {seconds:.0}s", path.display());
    Ok(Binary {
        path,
        built: true,
        build_seconds: Some(seconds),
    })
}

/// SHA-256 over every file of the module (path and content, in path order),
/// the Go version and this crate's build flags.
fn source_hash(module: &Path, go_version: &str) -> Result<String> {
    let mut files = Vec::new();
    collect_files(module, module, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    hasher.update(go_version.as_bytes());
    hasher.update([0]);
    hasher.update(version_ldflags(module)?.as_bytes());
    hasher.update([0]);
    for rel in files {
        let content = fs::read(module.join(&rel)).with_context(|| format!("read {}", module.join(&rel).display()))?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// Linker flags that give the binary the Kubernetes version it was built from
/// (as `kubectl version` would show it); read from the module's go.mod so the
/// pin lives in one place.
fn version_ldflags(module: &Path) -> Result<String> {
    let go_mod = fs::read_to_string(module.join("go.mod"))
        .with_context(|| format!("read {}", module.join("go.mod").display()))?;
    let version = go_mod
        .lines()
        .filter_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .map(|rest| rest.trim())
        .find(|v| v.starts_with('v'))
        .ok_or_else(|| anyhow!("no k8s.io/kubernetes requirement in tests/cluster/go.mod"))?;
    let mut parts = version.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    let pkg = "k8s.io/component-base/version";
    Ok(format!(
        "-X {pkg}.gitVersion={version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} \
         -X {pkg}.gitTreeState=clean"
    ))
}

/// The last `n` lines of a text file, or a note saying why there are none.
pub fn tail_lines(path: &Path, n: usize) -> String {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let mut lines = std::collections::VecDeque::with_capacity(n);
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(String::from_utf8_lossy(&line).into_owned());
    }
    Vec::from(lines).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_flags_come_from_go_mod() {
        let flags = version_ldflags(&module_dir()).expect("go.mod pins k8s.io/kubernetes");
        assert!(flags.contains("version.gitVersion=v1.36."), "{flags}");
        assert!(flags.contains("version.gitMinor=36"), "{flags}");
    }
}
