//! An anytime-valid sequential test of "the candidate is worse than stable", on counts of bad
//! events (errors, slow requests) per side. Pure arithmetic.
//!
//! Under the null hypothesis (the candidate is as good as stable), a bad event of a window
//! comes from the candidate with probability equal to the candidate's share of that window's
//! requests, `s`. If the candidate's rate of bad events is `r` times stable's, that
//! probability is `q(r) = s r / (s r + 1 - s)`. The test multiplies, window by window, the
//! likelihood ratio of `q(r)` against `s`, for each `r` of a grid of ratios above 1, and
//! averages over the grid (a mixture). Under the null this average is a nonnegative
//! supermartingale with mean at most 1 (given the request counts, the candidate's bad events
//! are hypergeometric, which is smaller in convex order than the binomial the ratio assumes),
//! so by Ville's inequality it ever reaches `1 / alpha` with probability at most `alpha`,
//! however often it is looked at. This is the multinomial-count approach of Lindon & Malek,
//! "Anytime-valid inference for multinomial count data" (NeurIPS 2022), with a discrete
//! one-sided mixture so that only a worse candidate builds evidence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Ratios of the candidate's bad-event rate to stable's that the mixture weighs equally.
pub const RATE_RATIOS: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// The running state of one test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTest {
    /// Log likelihood ratio for each of [`RATE_RATIOS`].
    pub log_likelihood_ratios: Vec<f64>,
    /// Bad events seen on the candidate.
    pub candidate_events: u64,
    /// Bad events seen on stable.
    pub stable_events: u64,
}

impl Default for SequentialTest {
    fn default() -> Self {
        SequentialTest {
            log_likelihood_ratios: vec![0.0; RATE_RATIOS.len()],
            candidate_events: 0,
            stable_events: 0,
        }
    }
}

impl SequentialTest {
    /// Adds one window: the requests and bad events of each side.
    pub fn update(&mut self, candidate_requests: u64, candidate_bad: u64, stable_requests: u64, stable_bad: u64) {
        // A window in which one side had no traffic says nothing about their difference.
        if candidate_requests == 0 || stable_requests == 0 {
            return;
        }
        if self.log_likelihood_ratios.len() != RATE_RATIOS.len() {
            *self = SequentialTest::default();
        }
        let share = candidate_requests as f64 / (candidate_requests + stable_requests) as f64;
        let (c, s) = (candidate_bad as f64, stable_bad as f64);
        for (llr, ratio) in self.log_likelihood_ratios.iter_mut().zip(RATE_RATIOS) {
            let q = share * ratio / (share * ratio + 1.0 - share);
            *llr += c * (q / share).ln() + s * ((1.0 - q) / (1.0 - share)).ln();
        }
        self.candidate_events += candidate_bad;
        self.stable_events += stable_bad;
    }

    /// The mixture's Bayes factor: evidence that the candidate is worse. 1 means none.
    pub fn evidence(&self) -> f64 {
        if self.log_likelihood_ratios.is_empty() {
            return 1.0;
        }
        let max = self
            .log_likelihood_ratios
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self.log_likelihood_ratios.iter().map(|l| (l - max).exp()).sum();
        // Capped below f64's range, so that status (JSON, which has no infinity) can hold it.
        (max + (sum / self.log_likelihood_ratios.len() as f64).ln())
            .min(700.0)
            .exp()
    }

    /// Whether the evidence crossed `1 / alpha`.
    pub fn rejects(&self, alpha: f64) -> bool {
        self.evidence() >= 1.0 / alpha
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_data_is_no_evidence() {
        let mut t = SequentialTest::default();
        assert_eq!(t.evidence(), 1.0);
        t.update(0, 0, 1000, 10);
        assert_eq!(t.evidence(), 1.0);
    }

    #[test]
    fn events_in_proportion_to_traffic_build_no_evidence() {
        let mut t = SequentialTest::default();
        for _ in 0..100 {
            t.update(500, 5, 9500, 95);
        }
        assert!(t.evidence() < 1.0, "{}", t.evidence());
    }

    #[test]
    fn a_candidate_with_ten_times_the_errors_is_rejected_quickly() {
        let mut t = SequentialTest::default();
        let mut windows = 0;
        while !t.rejects(0.01) {
            t.update(50, 5, 950, 5);
            windows += 1;
            assert!(windows < 10, "not rejected after {windows} windows: {}", t.evidence());
        }
    }

    #[test]
    fn a_better_candidate_builds_no_evidence() {
        let mut t = SequentialTest::default();
        for _ in 0..50 {
            t.update(500, 0, 500, 20);
        }
        assert!(t.evidence() < 1e-3);
    }
}
