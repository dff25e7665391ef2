//! The proxy over real loopback sockets: real hyper clients and backends, the proxy started
//! in-process (and, for signals, as the real binary).

mod accounting;
mod failfast;
mod failures;
mod forwarding;
mod grpc;
mod mirror;
mod nginx;
mod reload;
mod shutdown;
mod splitting;
mod streaming;
mod support;
mod tls;
