//! A TCP relay that a test can cut: how a peer (the API server, a metrics endpoint) becomes
//! unreachable for a while, as it does when its node restarts or the network partitions,
//! without stopping it for the other tests that share it. Cut, the relay closes every
//! connection it carries and every new one at once; restored, it relays again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running relay; it stops when dropped.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    accepting: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    cut: AtomicBool,
    pipes: Mutex<Vec<AbortHandle>>,
}

impl Relay {
    /// Relays 127.0.0.1:(a free port) to `target`.
    pub async fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if shared.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut pipes = shared.pipes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                pipes.retain(|p| !p.is_finished());
                pipes.push(pipe.abort_handle());
            }
        });
        Ok(Relay { addr, state, accepting })
    }

    /// Closes every relayed connection, and every new one until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for pipe in self
            .state
            .pipes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            pipe.abort();
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

/// A relay to the API server of the kubeconfig at `path`, and a copy of that kubeconfig,
/// written to `to`, that reaches the server through it. The API server's certificate names
/// 127.0.0.1, which the relay shares.
pub async fn relayed_kubeconfig(path: &std::path::Path, to: &std::path::Path) -> Result<Relay> {
    let text = std::fs::read_to_string(path)?;
    let servers: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once("server: https://")).collect();
    let [(_, server)] = servers[..] else {
        anyhow::bail!("expected one server in {}, found {}", path.display(), servers.len());
    };
    let target: SocketAddr = server.trim().parse()?;
    let relay = Relay::start(target).await?;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| match line.split_once("server: https://") {
            Some((indent, _)) => format!("{indent}server: https://{}", relay.addr),
            None => line.to_owned(),
        })
        .collect();
    std::fs::write(to, rewritten.join("\n") + "\n")?;
    Ok(relay)
}
