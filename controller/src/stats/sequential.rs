//! An anytime-valid sequential test of "the candidate is worse than stable", on counts of bad
//! events (errors, cancellations, slow requests). Pure arithmetic.
//!
//! **Two sides at once.** Under the null hypothesis (the candidate is as good as stable), a bad
//! event of a window comes from the candidate with probability equal to the candidate's share
//! of that window's requests, `s`, provided the share is the same throughout the window (one
//! weight per window) and both sides see the same conditions (the same load per pod, no
//! warm-up). If the candidate's rate is `r` times stable's, that probability is
//! `q(r) = s r / (s r + 1 - s)`. For each `r` of a grid, the test multiplies window by window
//! the likelihood ratio of `q(r)` against `s`; the evidence is the prior-weighted average over
//! the grid (a mixture). Under the null this average is a nonnegative supermartingale with mean
//! at most 1 (given the request counts, the candidate's bad events are hypergeometric, which is
//! smaller in convex order than the binomial the ratio assumes), so by Ville's inequality it
//! ever reaches `1 / alpha` with probability at most `alpha`, however often it is looked at.
//! This is the multinomial-count approach of Lindon & Malek, "Anytime-valid inference for
//! multinomial count data" (NeurIPS 2022), with a discrete one-sided mixture so that only a
//! worse candidate builds evidence.
//!
//! **Against a bound.** When stable takes no traffic (a blue-green switch, a 100 % step), the
//! candidate's windows are compared with `p0`, an upper confidence bound on stable's rate from
//! its windows before the switch: each candidate request is a Bernoulli trial, and the ratio of
//! `min(r p0, 1)` against `p0` has mean at most 1 whenever the candidate's rate is at most
//! `p0`. Both kinds of window multiply into the same martingale, so one test spans a rollout.
//!
//! The prior weights are fixed when the test starts: chosen from the spec, never from data.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Ratios of the candidate's bad-event rate to stable's that the mixture weighs.
pub const RATE_RATIOS: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Largest probability a one-sample alternative may give a bad event, so that a good request
/// keeps a finite likelihood.
const MAX_PROBABILITY: f64 = 1.0 - 1e-9;

/// The running state of one test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTest {
    /// The alternatives: ratios of the candidate's rate to stable's.
    #[serde(default = "default_ratios")]
    pub ratios: Vec<f64>,
    /// Prior weight of each ratio; they sum to 1.
    #[serde(default = "default_weights")]
    pub weights: Vec<f64>,
    /// Log likelihood ratio for each of `ratios`.
    pub log_likelihood_ratios: Vec<f64>,
    /// Bad events seen on the candidate.
    pub candidate_events: u64,
    /// Bad events seen on stable, in windows where both sides had traffic.
    pub stable_events: u64,
    /// `log_likelihood_ratios` when the current step began (empty: all zero). The test runs
    /// on across steps, so a step's sample is sized from here, not from zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_start: Vec<f64>,
}

fn default_ratios() -> Vec<f64> {
    RATE_RATIOS.to_vec()
}

fn default_weights() -> Vec<f64> {
    vec![1.0 / RATE_RATIOS.len() as f64; RATE_RATIOS.len()]
}

impl Default for SequentialTest {
    fn default() -> Self {
        SequentialTest::uniform()
    }
}

impl SequentialTest {
    /// A test weighing every ratio of [`RATE_RATIOS`] equally.
    pub fn uniform() -> Self {
        SequentialTest {
            ratios: default_ratios(),
            weights: default_weights(),
            log_likelihood_ratios: vec![0.0; RATE_RATIOS.len()],
            candidate_events: 0,
            stable_events: 0,
            step_start: Vec::new(),
        }
    }

    /// A test with `focus` of its prior weight on `ratio` (added to the grid if it is not on
    /// it) and the rest spread evenly over the other ratios: the most power against the
    /// regression the user named, while larger and smaller ones are still caught.
    pub fn focused(ratio: f64, focus: f64) -> Self {
        let mut ratios = default_ratios();
        if !ratios.iter().any(|r| (r - ratio).abs() < 1e-9) {
            ratios.push(ratio);
            ratios.sort_by(f64::total_cmp);
        }
        let others = (ratios.len() - 1) as f64;
        let weights = ratios
            .iter()
            .map(|r| {
                if (r - ratio).abs() < 1e-9 {
                    focus
                } else {
                    (1.0 - focus) / others
                }
            })
            .collect();
        SequentialTest {
            log_likelihood_ratios: vec![0.0; ratios.len()],
            ratios,
            weights,
            candidate_events: 0,
            stable_events: 0,
            step_start: Vec::new(),
        }
    }

    /// Repairs a state read from an older status: every vector as long as the grid.
    fn normalised(&mut self) {
        let n = self.ratios.len();
        if n == 0 || self.weights.len() != n || self.log_likelihood_ratios.len() != n {
            *self = SequentialTest::uniform();
        }
    }

    /// Adds one window in which both sides had traffic: the requests and bad events of each.
    pub fn update(&mut self, candidate_requests: u64, candidate_bad: u64, stable_requests: u64, stable_bad: u64) {
        // A window in which one side had no traffic says nothing about their difference.
        if candidate_requests == 0 || stable_requests == 0 {
            return;
        }
        self.normalised();
        // In floating point: a sum of counts near u64::MAX would wrap, and a share outside
        // (0, 1) would make the log-likelihoods NaN, which never cross a boundary.
        let share = candidate_requests as f64 / (candidate_requests as f64 + stable_requests as f64);
        let (c, s) = (candidate_bad as f64, stable_bad as f64);
        for (llr, ratio) in self.log_likelihood_ratios.iter_mut().zip(&self.ratios) {
            let q = share * ratio / (share * ratio + 1.0 - share);
            *llr += c * (q / share).ln() + s * ((1.0 - q) / (1.0 - share)).ln();
        }
        self.candidate_events = self.candidate_events.saturating_add(candidate_bad);
        self.stable_events = self.stable_events.saturating_add(stable_bad);
    }

    /// Adds one window of the candidate alone, against `bound`, an upper bound on stable's
    /// rate that holds with known probability.
    pub fn update_against(&mut self, candidate_requests: u64, candidate_bad: u64, bound: f64) {
        if candidate_requests == 0 || !(bound > 0.0 && bound < 1.0) {
            return;
        }
        self.normalised();
        let (bad, good) = (
            candidate_bad as f64,
            (candidate_requests - candidate_bad.min(candidate_requests)) as f64,
        );
        for (llr, ratio) in self.log_likelihood_ratios.iter_mut().zip(&self.ratios) {
            let q = (ratio * bound).min(MAX_PROBABILITY);
            *llr += bad * (q / bound).ln() + good * ((1.0 - q) / (1.0 - bound)).ln();
        }
        self.candidate_events = self.candidate_events.saturating_add(candidate_bad);
    }

    /// The natural log of the mixture's evidence.
    pub fn log_evidence(&self) -> f64 {
        let pairs = self.log_likelihood_ratios.iter().zip(&self.weights);
        let max = pairs.clone().map(|(l, _)| *l).fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return 0.0;
        }
        let (sum, weights) = pairs.fold((0.0, 0.0), |(sum, weights), (l, w)| {
            (sum + w * (l - max).exp(), weights + w)
        });
        max + (sum / weights).ln()
    }

    /// The mixture's Bayes factor: evidence that the candidate is worse. 1 means none.
    pub fn evidence(&self) -> f64 {
        // Capped below f64's range, so that status (JSON, which has no infinity) can hold it.
        self.log_evidence().min(700.0).exp()
    }

    /// Whether the evidence crossed `1 / alpha`.
    pub fn rejects(&self, alpha: f64) -> bool {
        self.log_evidence() >= (1.0 / alpha).ln()
    }

    /// Marks where the test stands as a new step begins: its sample is sized from here.
    pub fn begin_step(&mut self) {
        self.step_start.clone_from(&self.log_likelihood_ratios);
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

    #[test]
    fn focus_puts_the_weight_on_the_named_ratio() {
        let t = SequentialTest::focused(2.0, 0.5);
        assert_eq!(t.ratios.len(), 6);
        assert!((t.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(t.weights[2], 0.5);
        let off_grid = SequentialTest::focused(1.7, 0.5);
        assert_eq!(off_grid.ratios.len(), 7);
        assert!(off_grid.ratios.contains(&1.7));
    }

    #[test]
    fn a_candidate_far_above_the_bound_is_rejected_and_one_below_is_not() {
        let mut bad = SequentialTest::default();
        let mut good = SequentialTest::default();
        for _ in 0..20 {
            bad.update_against(100, 30, 0.02);
            good.update_against(100, 1, 0.02);
        }
        assert!(bad.rejects(0.001), "{}", bad.evidence());
        assert!(good.evidence() < 1.0, "{}", good.evidence());
    }

    #[test]
    fn an_older_state_without_a_grid_reads_as_the_uniform_test() {
        let t: SequentialTest =
            serde_json::from_str(r#"{"logLikelihoodRatios":[0,0,0,0,0,0],"candidateEvents":0,"stableEvents":0}"#)
                .expect("parses");
        assert_eq!(t, SequentialTest::uniform());
    }
}
