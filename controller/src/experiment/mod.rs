//! A/B/n experiments: the anytime-valid verdict over per-arm summaries (no I/O).

pub mod status;
pub mod verdict;

#[cfg(test)]
mod sim;
