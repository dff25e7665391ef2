//! The statistics the judge rests on, as plain arithmetic with no knowledge of rollouts:
//! the anytime-valid sequential test ([`sequential`]), the sample a step needs for it to have
//! power ([`power`]), and an upper confidence bound on a rate ([`bound`]).

pub mod bound;
pub mod confidence;
pub mod power;
pub mod sequential;

pub use sequential::SequentialTest;
