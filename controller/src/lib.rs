//! weir: the control plane. It moves a route's candidate weight step by step, judges the
//! candidate against stable with sequential tests, and promotes or aborts.
//!
//! Policy is pure ([`decide`], [`judge`], [`rollout::validate`], [`scrape`]); the edges carry
//! it out through [`ports`]. [`demo`] runs a whole rollout in one process.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod decide;
pub mod demo;
pub mod judge;
pub mod ports;
pub mod rollout;
pub mod scrape;
