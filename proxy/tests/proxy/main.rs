//! The proxy over real loopback sockets: real hyper clients and backends, the proxy started
//! in-process (and, for signals and Kubernetes route ConfigMaps, as the real binary).

mod accounting;
mod binary;
mod conformance;
mod experiments;
mod failfast;
mod failures;
mod forwarding;
mod grpc;
mod grpc_accounting;
mod h2_floods;
mod hostile;
mod kube_routes;
mod mirror;
mod nginx;
mod reload;
mod shutdown;
mod splitting;
mod streaming;
mod support;
mod tls;
mod websocket;
mod zero_loss;
