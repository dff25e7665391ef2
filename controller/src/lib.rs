//! weir: the control plane. It moves a route's candidate weight step by step, judges the
//! candidate against stable with sequential tests, and promotes or aborts.
//!
//! Policy is pure ([`decide`], [`judge`], [`stats`], [`rollout::validate`], [`counters`]); the
//! edges gather inputs and carry decisions out through [`ports`], and [`reconcile`] is the one
//! loop over them. [`source`] reads metrics from the proxies or Prometheus; [`demo`] runs a
//! whole rollout in one process.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod cli;
pub mod cluster;
pub mod counters;
pub mod crash;
pub mod decide;
pub mod demo;
pub mod experiment;
pub mod judge;
pub mod ports;
pub mod reconcile;
pub mod report;
pub mod rollout;
pub mod route_layer;
pub mod source;
pub mod stats;
pub mod status;
