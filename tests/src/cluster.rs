//! Runs `weir-testcluster` processes: start, wait for `ready <url>` within a
//! deadline, retry a port conflict, and report the log's tail on failure. One
//! shared cluster per test binary lives in a static; it stops when the test
//! binary exits, because its stdin (a pipe from this process) closes then.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::binary::{self, Binary};

/// How long a cluster may take to print `ready` before the start fails.
/// `WEIR_TESTCLUSTER_TIMEOUT` (seconds) overrides it.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of the cluster's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 50;

/// Starts tried when the cluster reports a port already in use.
const START_ATTEMPTS: u32 = 3;

/// A running `weir-testcluster`.
#[derive(Debug)]
pub struct Cluster {
    child: Child,
    /// The write end of the cluster's stdin. Closing it (dropping it, or this
    /// process exiting) stops the cluster.
    stdin: Option<ChildStdin>,
    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub url: String,
    /// Admin kubeconfig (client certificate in group system:masters).
    pub kubeconfig: PathBuf,
    /// The cluster's log (its stderr).
    pub log: PathBuf,
    /// The directory given to `--dir`.
    pub dir: PathBuf,
    /// From spawning the process to reading `ready`.
    pub startup: Duration,
}

impl Cluster {
    /// Starts a cluster from `binary` and waits until it is ready, retrying
    /// on a port conflict. On failure the error quotes the log's last lines.
    pub fn start(binary: &Path, ready_timeout: Duration) -> Result<Cluster> {
        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            match start_once(binary, ready_timeout) {
                Ok(cluster) => return Ok(cluster),
                Err(StartError::PortConflict(err)) => {
                    eprintln!("weir-tests: cluster start {attempt} hit a port conflict; retrying");
                    last_err = Some(err);
                }
                Err(StartError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no start attempted"))
            .context(format!(
                "cluster failed to start {START_ATTEMPTS} times on port conflicts"
            )))
    }

    /// The OS process id of the cluster.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the cluster's stdin, which asks it to stop.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A cluster owned by a test (not the shared one) is stopped with it.
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum StartError {
    PortConflict(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(err: anyhow::Error) -> Self {
        StartError::Failed(err)
    }
}

impl From<std::io::Error> for StartError {
    fn from(err: std::io::Error) -> Self {
        StartError::Failed(err.into())
    }
}

fn start_once(binary: &Path, ready_timeout: Duration) -> Result<Cluster, StartError> {
    let dir = new_run_dir()?;
    let log = dir.join("cluster.log");
    let log_file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("cluster stdout was not piped"))?;

    // The reader thread forwards the first `ready` line, then keeps draining
    // stdout so the cluster can never block on a full pipe.
    let (ready_tx, ready_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("ready ") {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        }
    });

    let failure = match ready_rx.recv_timeout(ready_timeout) {
        Ok(url) => {
            return Ok(Cluster {
                child,
                stdin,
                url,
                kubeconfig: dir.join("kubeconfig"),
                log,
                dir,
                startup: started.elapsed(),
            });
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            format!("the cluster was not ready within {ready_timeout:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // stdout closed without `ready`: the process exited (or is exiting).
            let status = wait_with_deadline(&mut child, Duration::from_secs(20));
            format!("the cluster exited before it was ready ({status})")
        }
    };
    drop(stdin);
    let tail = binary::tail_lines(&log, LOG_TAIL_LINES);
    let err = anyhow!(
        "{failure}; log {}\n--- last {LOG_TAIL_LINES} lines of the cluster log ---\n{tail}",
        log.display()
    );
    if tail.contains("address already in use") {
        Err(StartError::PortConflict(err))
    } else {
        Err(StartError::Failed(err))
    }
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return "killed: it closed stdout but did not exit".to_owned();
            }
            Err(e) => return format!("status unknown: {e}"),
        }
    }
}

/// A fresh directory for one cluster under `<cache>/runs/`, named after this
/// process. Directories of processes that are gone are removed first, so a
/// failed run's log stays readable until the next run.
fn new_run_dir() -> Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let runs = binary::cache_dir()?.join("runs");
    fs::create_dir_all(&runs).with_context(|| format!("create {}", runs.display()))?;
    if let Ok(entries) = fs::read_dir(&runs) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = runs.join(format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// The ready deadline: `WEIR_TESTCLUSTER_TIMEOUT` seconds, or the default.
pub fn ready_timeout() -> Result<Duration> {
    match std::env::var("WEIR_TESTCLUSTER_TIMEOUT") {
        Ok(s) => {
            let secs: u64 = s
                .trim()
                .parse()
                .with_context(|| format!("WEIR_TESTCLUSTER_TIMEOUT={s:?} is not a number of seconds"))?;
            Ok(Duration::from_secs(secs))
        }
        Err(_) => Ok(DEFAULT_READY_TIMEOUT),
    }
}

/// The test binary's shared cluster with the binary it came from.
#[derive(Debug)]
pub struct Shared {
    /// The running cluster.
    pub cluster: Cluster,
    /// The binary, and whether this process built it.
    pub binary: Binary,
}

/// The cluster shared by every test of this test binary, built and started on
/// first use. A start that failed fails every later call the same way.
pub fn shared() -> Result<&'static Shared> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let result = SHARED.get_or_init(|| {
        let start = || -> Result<Shared> {
            let binary = binary::ensure_built()?;
            let cluster = Cluster::start(&binary.path, ready_timeout()?)?;
            eprintln!(
                "weir-tests: cluster ready at {} in {:.1}s (binary {})",
                cluster.url,
                cluster.startup.as_secs_f64(),
                match binary.build_seconds {
                    Some(s) => format!("built in {s:.0}s"),
                    None => "cached".to_owned(),
                }
            );
            Ok(Shared { cluster, binary })
        };
        start().map_err(|e| format!("{e:#}"))
    });
    match result {
        Ok(shared) => Ok(shared),
        Err(msg) => bail!("{msg}"),
    }
}
