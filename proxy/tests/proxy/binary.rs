//! The real `weir-proxy` binary, started with the addresses it logs it bound.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::DEADLINE;

/// The real binary on a config file, with the addresses it logged it bound, and its log.
pub struct Running {
    pub child: std::process::Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    log: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `weir-proxy --config FILE --workers 1 --log-format json`, with `args` after them
/// and `envs` in its environment, and waits for its `listening` line; the rest of its log is
/// kept for failure messages.
pub fn start_binary(config: &Path, args: &[&str], envs: &[(&str, &OsStr)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-proxy"))
        .arg("--config")
        .arg(config)
        .args(["--workers", "1", "--log-format", "json"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir-proxy");
    let stderr = child.stderr.take().expect("piped stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && let (Some(listen), Some(admin)) = (event["listen_addr"].as_str(), event["admin_addr"].as_str())
            {
                let parse = |a: &str| a.parse::<SocketAddr>().expect("a logged address");
                let _ = addr_tx.send((parse(listen), parse(admin)));
            }
            lines.push(line);
        }
        lines
    });
    let (listen, admin) = addr_rx
        .recv_timeout(DEADLINE)
        .expect("weir-proxy logs the addresses it bound");
    Running {
        child,
        listen,
        admin,
        log,
    }
}

impl Running {
    /// Sends signal `name` (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself; returns its status and log.
    pub async fn exited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + DEADLINE;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(std::time::Instant::now() < deadline, "weir-proxy did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (exit, self.log.join().expect("log reader"))
    }
}
