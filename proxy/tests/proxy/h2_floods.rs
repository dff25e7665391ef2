//! HTTP/2 floods, written frame by frame so the attack is exactly the one named: rapid reset
//! (CVE-2023-44487), CONTINUATION without end (CVE-2024-27316 and kin), and PING and SETTINGS
//! floods from a client that never reads the answers. Each ends with the connection closed
//! (a GOAWAY where the protocol calls for one), the proxy's work bounded, other clients
//! served, and the closure counted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET of `http://a.test/` in HPACK: `:method GET`, `:scheme http`, `:path /` from the
/// static table, and `:authority` as a literal with an indexed name.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 6];
    block.extend_from_slice(b"a.test");
    block
}

/// The preface and an empty SETTINGS frame.
fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// Reads frames until the proxy closes the connection; returns the GOAWAY error code, if a
/// GOAWAY came.
async fn goaway_then_close(stream: &mut TcpStream) -> Option<u32> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let mut code = None;
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == GOAWAY && at + 9 + len <= bytes.len() && len >= 8 {
            let p = &bytes[at + 9..];
            code = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    code
}

async fn still_serves(addr: SocketAddr) {
    let (status, _) = h2c_get(addr, "http://a.test/").await;
    assert_eq!(status, 200, "another client is served during and after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway_with_the_backend_spared() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    const STREAMS: u32 = 5000;
    let mut flood = opening();
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        flood.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get_block()));
        flood.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    // The proxy may close mid-write; what matters is what it answers.
    let _ = within(stream.write_all(&flood)).await;
    let code = goaway_then_close(&mut stream).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM));
    assert_eq!(listener_errors(&proxy, "h2_protocol").await, 1.0);
    let hits = stable.hits();
    assert!(
        hits < STREAMS as usize / 10,
        "{hits} of {STREAMS} reset streams reached the backend"
    );
    still_serves(proxy.listen_addr()).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_continued_without_end_ends_in_goaway() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let mut flood = opening();
    flood.extend(frame(HEADERS, END_STREAM, 1, &get_block()));
    // Tiny CONTINUATION frames, none ending the block: each costs the sender 10 bytes.
    for _ in 0..100_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &[0x40]));
    }
    let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
    let _ = within(stream.write_all(&flood)).await;
    let code = goaway_then_close(&mut stream).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM));
    assert_eq!(listener_errors(&proxy, "h2_protocol").await, 1.0);
    assert_eq!(stable.hits(), 0);
    still_serves(proxy.listen_addr()).await;
    proxy.shutdown().await;
}

/// Writes `unit` over and over without reading, until the proxy stops taking it (a write
/// blocks for a second) or closes; returns the bytes it took.
async fn flood_without_reading(stream: &mut TcpStream, unit: &[u8]) -> u64 {
    let batch: Vec<u8> = unit.iter().copied().cycle().take(unit.len() * 4096).collect();
    let mut taken = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&batch)).await {
            Ok(Ok(())) => taken += batch.len() as u64,
            Ok(Err(_)) | Err(_) => return taken,
        }
        assert!(taken < 1 << 30, "the proxy kept taking a flood it could not answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_from_a_client_that_never_reads_are_held_back_and_closed() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let yaml = config_yaml(stable.addr, candidate.addr, 0, "").replace(
        "drainTimeout: 5s\n",
        "drainTimeout: 5s\nlimits: { headerTimeout: 3s }\n",
    );
    let proxy = start_proxy(&yaml).await;
    for unit in [frame(PING, 0, 0, b"floodfld"), frame(SETTINGS, 0, 0, &[])] {
        let mut stream = within(TcpStream::connect(proxy.listen_addr())).await.expect("connect");
        within(stream.write_all(&opening())).await.expect("write");
        // Every PING and SETTINGS owes an answer. The proxy keeps at most one owed and reads
        // no further until the client takes it, so the flood stalls in the socket buffers.
        let taken = flood_without_reading(&mut stream, &unit).await;
        assert!(
            taken < 64 << 20,
            "the proxy took {taken} bytes of a flood it could not answer"
        );
        still_serves(proxy.listen_addr()).await;
        // The flooder never opened a stream: closed at the header timeout, and counted.
        goaway_then_close(&mut stream).await;
    }
    assert_eq!(listener_errors(&proxy, "header_timeout").await, 2.0);
    proxy.shutdown().await;
}
