//! A local Prometheus for `weir demo --metrics-source prometheus` (and the tests of the
//! Prometheus source): the installed `prometheus` binary, scraping the given targets on loopback
//! every 250 ms, with its data in a temporary directory. Stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How to install Prometheus, for the error when it is missing.
pub const INSTALL_HINT: &str = "install it (Debian/Ubuntu: `apt-get install prometheus`; elsewhere the release \
     from https://prometheus.io/download/) and put `prometheus` on PATH, or run the demo without --metrics-source prometheus";

/// How often the local Prometheus scrapes: well under the demo's analysis interval, so that
/// each window holds several samples for `increase` to work on.
const SCRAPE_INTERVAL: &str = "250ms";

/// A running Prometheus.
pub struct LocalPrometheus {
    /// Its base URL, like `http://127.0.0.1:41234`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalPrometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPrometheus")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The `prometheus` binary: `PATH`, then where Debian puts it.
pub fn find() -> Option<PathBuf> {
    find_in(std::env::var_os("PATH"), &[PathBuf::from("/usr/bin/prometheus")])
}

fn find_in(path: Option<std::ffi::OsString>, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .chain(fallbacks.iter().cloned())
        .find(|p| p.is_file())
}

/// The error when Prometheus is missing: it says how to install it.
pub fn missing() -> anyhow::Error {
    anyhow!("Prometheus is not installed: {INSTALL_HINT}")
}

/// Ports tried: another process may take the free port picked for Prometheus before
/// Prometheus binds it (tests run side by side), and then Prometheus exits at once.
const PORT_ATTEMPTS: u32 = 5;

/// How long Prometheus may take to scrape every target once.
const FIRST_SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why Prometheus is not ready.
enum NotReady {
    /// It exited: its status.
    Exited(std::process::ExitStatus),
    /// It runs but has not scraped every target in time.
    TimedOut,
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("a port for Prometheus")?;
    Ok(listener.local_addr()?)
}

impl LocalPrometheus {
    /// Starts Prometheus scraping `targets` (admin addresses serving `/metrics`) and waits
    /// until it has scraped every one of them.
    pub async fn start(targets: &[SocketAddr]) -> Result<LocalPrometheus> {
        Self::start_with(targets, free_port).await
    }

    /// [`start`](Self::start), listening on the first port from `next_port` that Prometheus
    /// can bind.
    async fn start_with(
        targets: &[SocketAddr],
        mut next_port: impl FnMut() -> Result<SocketAddr>,
    ) -> Result<LocalPrometheus> {
        let binary = find().ok_or_else(missing)?;
        let mut attempt = 1;
        loop {
            let mut prometheus = Self::spawn(&binary, targets, next_port()?)?;
            match prometheus.wait_for_targets(targets.len()).await {
                Ok(()) => return Ok(prometheus),
                Err(NotReady::Exited(_))
                    if attempt < PORT_ATTEMPTS && prometheus.log_tail().contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(NotReady::Exited(status)) => bail!(
                    "Prometheus at {} exited ({status}) before it scraped its targets; its log ends:\n{}",
                    prometheus.url,
                    prometheus.log_tail()
                ),
                Err(NotReady::TimedOut) => bail!(
                    "Prometheus at {} did not scrape its {} target(s) within {FIRST_SCRAPE_TIMEOUT:?}; its log ends:\n{}",
                    prometheus.url,
                    targets.len(),
                    prometheus.log_tail()
                ),
            }
        }
    }

    fn spawn(binary: &std::path::Path, targets: &[SocketAddr], listen: SocketAddr) -> Result<LocalPrometheus> {
        let dir = tempfile::tempdir().context("a directory for Prometheus' data")?;
        let targets_yaml = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global: {{ scrape_interval: {SCRAPE_INTERVAL}, scrape_timeout: {SCRAPE_INTERVAL} }}\n\
             scrape_configs:\n  - job_name: weir-proxy\n    static_configs: [ {{ targets: [{targets_yaml}] }} ]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("writing prometheus.yml")?;
        let log = std::fs::File::create(dir.path().join("prometheus.log")).context("Prometheus' log")?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(LocalPrometheus {
            url: format!("http://{listen}"),
            child,
            dir,
        })
    }

    /// The last lines Prometheus logged, for errors.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn wait_for_targets(&mut self, targets: usize) -> Result<(), NotReady> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let query: http::Uri = format!("{}/api/v1/query?query=sum(up%7Bjob%3D%22weir-proxy%22%7D)", self.url)
            .parse()
            .expect("a loopback URL with a fixed query is a valid URI");
        let until = tokio::time::Instant::now() + FIRST_SCRAPE_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if let Ok(Ok(rsp)) = tokio::time::timeout(Duration::from_secs(1), client.get(query.clone())).await
                && let Ok(body) = rsp.into_body().collect().await
            {
                let answer: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                let up = answer["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok());
                if up.is_some_and(|up| up >= targets as f64) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > until {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape target answering every request with one sample, then closing.
    async fn target() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let body = "weir_test_sample 1\n";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        addr
    }

    /// Tests start many processes side by side: the port picked for Prometheus may be taken
    /// before Prometheus binds it. It then starts on another, instead of failing.
    #[tokio::test]
    async fn prometheus_whose_port_was_taken_starts_on_another() {
        let target = target().await;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("addr");
        let mut ports = vec![Ok(taken_addr)].into_iter();
        let prometheus = LocalPrometheus::start_with(&[target], || ports.next().unwrap_or_else(free_port))
            .await
            .expect("Prometheus starts on the next port");
        assert_ne!(prometheus.url, format!("http://{taken_addr}"));
        drop(taken);
    }

    #[test]
    fn a_missing_prometheus_is_found_nowhere_and_the_error_says_how_to_install_it() {
        let empty = tempfile::tempdir().expect("dir");
        assert_eq!(find_in(Some(empty.path().as_os_str().to_owned()), &[]), None);
        let message = missing().to_string();
        assert!(message.contains("apt-get install prometheus"), "{message}");
        assert!(message.contains("without --metrics-source prometheus"), "{message}");
    }
}
