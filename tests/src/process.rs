//! weir's own binaries as child processes: found beside the test executable (cargo builds every
//! workspace binary before `cargo test --workspace` runs a test), refused when older than
//! their sources, started with their output in a log file, and killed when dropped.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The workspace binary `name` (`weir` or `weir-proxy`) of the profile this test runs in.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the test's own path")?;
    // target/<profile>/deps/<test>: the binaries are in target/<profile>.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in target/<profile>/deps")?;
    let path = profile_dir.join(name);
    let build = format!("cargo build --bin {name} (or run cargo test --workspace, which builds it)");
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .with_context(|| format!("{} is missing: {build}", path.display()))?;
    let package = if name == "weir-proxy" { "proxy" } else { "controller" };
    let sources = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(package)
        .join("src");
    let newest = newest_file(&sources)?;
    if newest > built {
        bail!(
            "{} is older than its sources in {}: {build}",
            path.display(),
            sources.display()
        );
    }
    Ok(path)
}

fn newest_file(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let time = if kind.is_dir() {
            newest_file(&entry.path())?
        } else {
            entry.metadata()?.modified()?
        };
        newest = newest.max(time);
    }
    Ok(newest)
}

/// A free loopback port (bound and released: good enough for a child to bind next).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running child process, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args` and `envs`, its output to `log`.
    pub fn start(binary: &Path, args: &[String], envs: &[(&str, &str)], log: PathBuf) -> Result<Process> {
        let file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Process { child, log })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        crate::binary::tail_lines(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
