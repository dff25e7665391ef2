//! weir-tests: the harness for weir's end-to-end tests.
//!
//! [`TestNamespace::create`] is the entry point of a Kubernetes test: on first
//! use in a test binary it builds `weir-testcluster` from the Go module in
//! `tests/cluster/` (cached under `~/.cache/weir/`, rebuilt when a file there
//! changes), starts one cluster for the whole test binary, and then hands each
//! test its own namespace and a `kube::Client`. [`eventually`] is how tests
//! wait for the cluster to get somewhere.
//!
//! The harness never skips: no Go toolchain, a failed build or a cluster that
//! is not ready in time are errors that say what to do or show the log.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod binary;
pub mod cluster;
pub mod fixture;
pub mod helm;
pub mod namespace;
pub mod process;
pub mod relay;
pub mod wait;

pub use cluster::{Cluster, shared};
pub use namespace::{CALL_TIMEOUT, TestNamespace, client, install_crypto_provider};
pub use wait::{Check, eventually};
