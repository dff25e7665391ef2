//! A model server in a process of its own, for the end-to-end tests: the demo's backend
//! (streams a few tokens per request, with an error rate and a latency) on a loopback address.
//!
//! `weir-test-model-server --listen ADDR --version NAME [--error-rate R] [--latency-ms MS]
//! [--score MEAN] [--seed N]` serves until killed; with `--score`, each answer ends with the
//! trailer `x-weir-score`, around MEAN.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use weir::demo::backend::{Behavior, DemoBackend};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut version: Option<String> = None;
    let (mut error_rate, mut latency_ms, mut seed) = (0.0, 2.0, 1);
    let mut score = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().context("--listen")?),
            "--version" => version = Some(value),
            "--error-rate" => error_rate = value.parse().context("--error-rate")?,
            "--latency-ms" => latency_ms = value.parse().context("--latency-ms")?,
            "--seed" => seed = value.parse().context("--seed")?,
            "--score" => score = Some(value.parse().context("--score")?),
            other => bail!("unknown flag {other}"),
        }
    }
    let behavior = Behavior {
        // One version per process, for its lifetime.
        version: Box::leak(version.context("--version is required")?.into_boxed_str()),
        error_rate,
        latency_ms,
        score,
        token_gap_ms: 2.0,
    };
    let (_keep, stopped) = tokio::sync::watch::channel(false);
    let listen = listen.context("--listen is required")?;
    let backend = DemoBackend::start_on(listen, behavior, seed, stopped).await?;
    println!("listening on {}", backend.addr);
    std::future::pending::<()>().await;
    Ok(())
}
