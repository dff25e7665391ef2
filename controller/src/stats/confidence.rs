//! Anytime-valid confidence sequences for the means, proportions and quantiles an experiment
//! compares: intervals that keep their coverage however often they are looked at. Plain
//! arithmetic with no knowledge of arms or rollouts; no I/O.
//!
//! **Basis.** One boundary serves every interval here: the normal-mixture boundary of the
//! mixture sequential probability ratio test of Johari, Koomen, Pekelis and Walsh ("Always valid
//! inference: continuous monitoring of A/B tests", Operations Research, 2022), read as a
//! confidence sequence. For an estimate whose variance is `V`, the interval is
//! `estimate ± sqrt(2 V (V + τ²) / τ² · ln(sqrt((V + τ²) / V) / α))`. Were the estimate exactly
//! normal with known `V`, the likelihood ratio averaged over a normal prior of variance `τ²` on
//! the true value would be a nonnegative martingale, and Ville's inequality would bound by `α` the
//! chance that the true value ever leaves the interval, at any look. Here `V` comes from sample
//! variances; Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas ("Time-uniform central limit
//! theory and asymptotic confidence sequences", 2021) show the same boundary with plugged-in
//! variances is an asymptotic confidence sequence: its coverage tends to `1 - α` as the first
//! look comes later. `experiment::sim` checks it from 200 observations per arm. We prefer it to
//! exact (betting, empirical-Bernstein) sequences because latencies and gaps have no known upper
//! bound, and it has a closed form that [`samples_for_half_width`] can invert.
//!
//! **Mixing variance.** `τ²` decides at which sample size the interval is narrowest. We set
//! `τ² = c(α) V*`, where `V*` is the estimate's variance at [`PLANNED_OBSERVATIONS`] per arm
//! (today's per-observation variance over that count) and `c(α) = -2 ln α + ln(1 - 2 ln α)`,
//! the tuning of Waudby-Smith et al. that makes the width nearly minimal at that size. Because
//! `τ²` scales with the variance, intervals do not depend on the metric's unit. The constant is
//! fixed by the plan of a typical experiment, never by data: away from it the width grows slowly
//! (at α = 0.05 / 3 it is 22 % above the best possible at a tenth of it, 6 % at ten times).
//!
//! **Two arms.** For a difference, `V = s_t² / n_t + s_c² / n_c`. The martingale argument
//! assumes the arms grow in a steady ratio, as they do while an experiment's weights are fixed.
//!
//! **Proportions.** Each trial is a 0/1 observation. The variance is taken at the smoothed
//! proportion `(events + 1) / (trials + 2)`, one event and one non-event added as in Agresti and
//! Caffo (2000), so 0 of 50 gives a wide interval rather than a point. Intervals are clipped to
//! what a proportion can be, which costs no coverage.
//!
//! **Garbage in.** Counters may come from a scrape gone wrong: every function returns `None`
//! (never NaN, infinity or a panic) on non-finite input, too little data or `α` outside (0, 1).

use serde::{Deserialize, Serialize};

/// Observations per arm at which intervals are tightest: an experiment of a rollout step
/// typically gathers thousands to tens of thousands of requests per arm.
pub const PLANNED_OBSERVATIONS: f64 = 10_000.0;

/// Count, sum and sum of squares of one arm's observations of a numeric metric (all `f64` so
/// they can come straight from Prometheus counters).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Moments {
    /// How many observations.
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares.
    pub squares: f64,
}

impl Moments {
    /// Adds one observation.
    pub fn observe(&mut self, value: f64) {
        self.count += 1.0;
        self.sum += value;
        self.squares += value * value;
    }

    /// The mean, or `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        let usable = self.count.is_finite() && self.count >= 1.0 && self.sum.is_finite();
        usable.then(|| self.sum / self.count).filter(|mean| mean.is_finite())
    }

    /// The sample variance (divided by `count - 1`), or `None` under two observations or when
    /// the sums cannot come from real numbers (squares below the squared sum over the count).
    pub fn variance(&self) -> Option<f64> {
        let usable = self.count.is_finite() && self.count >= 2.0 && self.squares >= 0.0;
        if !usable || !self.sum.is_finite() || !self.squares.is_finite() {
            return None;
        }
        let centred = self.squares - self.sum * self.sum / self.count;
        // Rounding leaves a small negative remainder when all values are equal; more than
        // that means the three counters disagree.
        if !centred.is_finite() || centred < -1e-9 * self.squares {
            return None;
        }
        Some(centred.max(0.0) / (self.count - 1.0)).filter(|variance| variance.is_finite())
    }
}

/// An estimate with its anytime-valid interval; `low <= estimate <= high`, all finite.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// The point estimate.
    pub estimate: f64,
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl Interval {
    /// Whether 0 lies outside the interval: the difference it bounds is significant.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }

    /// Whether `value` lies inside, ends included.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// Half the interval's length.
    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }

    /// The interval of the opposite difference (control minus treatment).
    pub fn negated(&self) -> Interval {
        Interval {
            estimate: -self.estimate,
            low: -self.high,
            high: -self.low,
        }
    }

    /// `estimate ± half_width`, clipped to `[floor, ceiling]`; `None` unless all finite.
    fn around(estimate: f64, half_width: f64, floor: f64, ceiling: f64) -> Option<Interval> {
        let interval = Interval {
            estimate: estimate.clamp(floor, ceiling),
            low: (estimate - half_width).max(floor),
            high: (estimate + half_width).min(ceiling),
        };
        let finite = interval.estimate.is_finite() && interval.low.is_finite() && interval.high.is_finite();
        (finite && (interval.high - interval.low).is_finite()).then_some(interval)
    }
}

/// One arm's mean, for the bands of a report.
pub fn mean_interval(arm: &Moments, alpha: f64) -> Option<Interval> {
    let (mean, variance) = (arm.mean()?, arm.variance()?);
    let mixing = mixing_factor(alpha)? * variance / PLANNED_OBSERVATIONS;
    Interval::around(
        mean,
        half_width(variance / arm.count, mixing, alpha),
        f64::MIN,
        f64::MAX,
    )
}

/// The difference of means, treatment minus control.
pub fn mean_difference(treatment: &Moments, control: &Moments, alpha: f64) -> Option<Interval> {
    let estimate = treatment.mean()? - control.mean()?;
    let (treatment_variance, control_variance) = (treatment.variance()?, control.variance()?);
    let variance = treatment_variance / treatment.count + control_variance / control.count;
    let mixing = mixing_factor(alpha)? * (treatment_variance + control_variance) / PLANNED_OBSERVATIONS;
    Interval::around(estimate, half_width(variance, mixing, alpha), f64::MIN, f64::MAX)
}

/// A proportion of `events` among `trials`.
pub fn proportion_interval(events: f64, trials: f64, alpha: f64) -> Option<Interval> {
    let variance = proportion_variance(events, trials)?;
    let mixing = mixing_factor(alpha)? * variance / PLANNED_OBSERVATIONS;
    Interval::around(events / trials, half_width(variance / trials, mixing, alpha), 0.0, 1.0)
}

/// The difference of proportions, treatment minus control.
pub fn proportion_difference(
    treatment_events: f64,
    treatment_trials: f64,
    control_events: f64,
    control_trials: f64,
    alpha: f64,
) -> Option<Interval> {
    let treatment_variance = proportion_variance(treatment_events, treatment_trials)?;
    let control_variance = proportion_variance(control_events, control_trials)?;
    let estimate = treatment_events / treatment_trials - control_events / control_trials;
    let variance = treatment_variance / treatment_trials + control_variance / control_trials;
    let mixing = mixing_factor(alpha)? * (treatment_variance + control_variance) / PLANNED_OBSERVATIONS;
    Interval::around(estimate, half_width(variance, mixing, alpha), -1.0, 1.0)
}

/// The variance of one 0/1 observation at the smoothed proportion `(events + 1) / (trials + 2)`:
/// never zero, so no count of events gives a zero-width interval.
pub fn proportion_variance(events: f64, trials: f64) -> Option<f64> {
    let usable = trials.is_finite() && trials > 0.0 && events >= 0.0 && events <= trials;
    let smoothed = (events + 1.0) / (trials + 2.0);
    usable.then_some(smoothed * (1.0 - smoothed))
}

/// How many observations per arm the difference interval would need, at today's
/// per-observation variances, for its half-width to fall to `effect`: the "sample still
/// needed" of an inconclusive verdict. `None` when no count would do (or on bad input).
pub fn samples_for_half_width(treatment_variance: f64, control_variance: f64, effect: f64, alpha: f64) -> Option<f64> {
    let factor = mixing_factor(alpha)?;
    let per_pair = treatment_variance + control_variance;
    let usable = treatment_variance >= 0.0 && control_variance >= 0.0 && per_pair.is_finite();
    if !usable || !effect.is_finite() || effect <= 0.0 {
        return None;
    }
    let width_at = |count: f64| half_width(per_pair / count, factor * per_pair / PLANNED_OBSERVATIONS, alpha);
    let (mut enough, mut short) = (2.0, 1.0);
    while width_at(enough) > effect {
        (short, enough) = (enough, enough * 2.0);
        if enough > 1e15 {
            return None;
        }
    }
    // The width falls with the count for any α below 0.6, so bisection finds the first count.
    while enough - short > 0.5 {
        let middle = (short + enough) / 2.0;
        if width_at(middle) <= effect {
            enough = middle;
        } else {
            short = middle;
        }
    }
    Some(enough.ceil().max(2.0))
}

/// Moments of a Prometheus histogram: cumulative counts per upper bound (the last bound
/// `+Inf`) and the observed `_sum`. The mean is exact (`sum / count`). The spread is the
/// histogram's own: each bucket's observations are taken as spread evenly over the bucket
/// (second moment `(a² + a b + b²) / 3` for bucket `(a, b]`, the first bucket starting at 0),
/// those of the `+Inf` bucket at the last finite bound; the variance is that of these
/// stand-ins about their own mean, so it is never negative even where the stand-ins and the
/// exact sum disagree. Values past the last finite bound are thus under-spread: choose bounds
/// that leave the `+Inf` bucket nearly empty. A histogram of the wrong shape gives empty moments.
pub fn histogram_moments(bounds: &[f64], cumulative: &[u64], sum: f64) -> Moments {
    let Some(total) = histogram_total(bounds, cumulative) else {
        return Moments::default();
    };
    if !sum.is_finite() {
        return Moments::default();
    }
    let (mut first, mut second, mut lower, mut below) = (0.0, 0.0, 0.0, 0);
    for (&bound, &count) in bounds.iter().zip(cumulative) {
        let upper = if bound.is_finite() { bound } else { lower };
        let within = (count - below) as f64;
        first += within * (lower + upper) / 2.0;
        second += within * (lower * lower + lower * upper + upper * upper) / 3.0;
        (lower, below) = (upper, count);
    }
    let count = total as f64;
    let centred = second - first * first / count;
    let squares = centred.max(0.0) + sum * sum / count;
    if !centred.is_finite() || !squares.is_finite() {
        return Moments::default();
    }
    Moments { count, sum, squares }
}

/// The quantile `q` of a histogram by linear interpolation within its bucket, as Prometheus'
/// `histogram_quantile` does (a quantile in the `+Inf` bucket is the last finite bound).
pub fn histogram_quantile(bounds: &[f64], cumulative: &[u64], q: f64) -> Option<f64> {
    let total = histogram_total(bounds, cumulative)?;
    if total == 0 || !(q > 0.0 && q < 1.0) {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0.0);
    for (&bound, &count) in bounds.iter().zip(cumulative) {
        let count = count as f64;
        if count >= rank {
            if !bound.is_finite() {
                return Some(lower);
            }
            let fraction = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, count);
    }
    None
}

/// Anytime-valid bounds on the quantile `q` of a histogram of durations, as bucket bounds,
/// from a confidence sequence on the distribution function at each finite bound.
///
/// `high` is the first bound `b` where the sequences' lower ends, from `b` upwards, all reach
/// `q`; `low` the last bound where their upper ends, from the first bound up to it, all stay
/// below `q` (0 if none). Taking those running minima and maxima makes the answer wrong only if
/// one of two sequences misses: the lower one at the last bound below the true quantile, or the
/// upper one at the first bound at or above it. So `α` is split in two, each bound's sequence at
/// `α / 2`, however many buckets there are. Values past the last finite bound count as that
/// bound (as in `histogram_quantile`), so the interval bounds the quantile of durations capped there.
pub fn quantile_interval(bounds: &[f64], cumulative: &[u64], q: f64, alpha: f64) -> Option<Interval> {
    let estimate = histogram_quantile(bounds, cumulative, q)?;
    let total = *cumulative.last()? as f64;
    if total < 2.0 || mixing_factor(alpha).is_none() {
        return None;
    }
    let finite = bounds.len() - 1;
    let cdf: Vec<Interval> = cumulative[..finite]
        .iter()
        .map(|&count| proportion_interval(count as f64, total, alpha / 2.0))
        .collect::<Option<_>>()?;
    let mut high = bounds[finite - 1];
    let mut lowest_after = f64::INFINITY;
    for (&bound, at) in bounds[..finite].iter().zip(&cdf).rev() {
        lowest_after = lowest_after.min(at.low);
        if lowest_after < q {
            break;
        }
        high = bound;
    }
    let mut low = 0.0;
    let mut highest_before = f64::NEG_INFINITY;
    for (&bound, at) in bounds[..finite].iter().zip(&cdf) {
        highest_before = highest_before.max(at.high);
        if highest_before >= q {
            break;
        }
        low = bound;
    }
    Some(Interval {
        estimate: estimate.clamp(low, high),
        low,
        high,
    })
}

/// The difference of quantiles, treatment minus control: `[low_t - high_c, high_t - low_c]`,
/// each arm's interval at `α / 2` so that both hold together with probability `1 - α`.
pub fn quantile_difference(
    treatment_bounds: &[f64],
    treatment_cumulative: &[u64],
    control_bounds: &[f64],
    control_cumulative: &[u64],
    q: f64,
    alpha: f64,
) -> Option<Interval> {
    let treatment = quantile_interval(treatment_bounds, treatment_cumulative, q, alpha / 2.0)?;
    let control = quantile_interval(control_bounds, control_cumulative, q, alpha / 2.0)?;
    Some(Interval {
        estimate: treatment.estimate - control.estimate,
        low: treatment.low - control.high,
        high: treatment.high - control.low,
    })
}

/// The total count of a histogram of durations shaped as Prometheus makes them: at least one
/// finite bound, nonnegative and increasing bounds ending with `+Inf`, nondecreasing counts.
fn histogram_total(bounds: &[f64], cumulative: &[u64]) -> Option<u64> {
    let (&last, finite) = bounds.split_last()?;
    let shaped = !finite.is_empty()
        && bounds.len() == cumulative.len()
        && last == f64::INFINITY
        && finite[0] >= 0.0
        && finite.iter().all(|bound| bound.is_finite())
        && bounds.windows(2).all(|pair| pair[0] < pair[1])
        && cumulative.windows(2).all(|pair| pair[0] <= pair[1]);
    shaped.then(|| *cumulative.last().expect("as long as the bounds, which are not empty"))
}

/// `c(α)`: the mixing variance over the planned variance that makes the interval nearly
/// tightest at the planned size; `None` for α outside (0, 1).
fn mixing_factor(alpha: f64) -> Option<f64> {
    let log_odds = -2.0 * alpha.ln();
    (alpha > 0.0 && alpha < 1.0).then(|| log_odds + log_odds.ln_1p())
}

/// The half-width of the normal-mixture boundary for an estimate of variance `variance` with
/// mixing variance `mixing`.
fn half_width(variance: f64, mixing: f64, alpha: f64) -> f64 {
    if variance <= 0.0 {
        // Every observation equal: the sample shows no spread to widen by.
        return 0.0;
    }
    let ratio = mixing / variance;
    (2.0 * variance * (1.0 + 1.0 / ratio) * (0.5 * ratio.ln_1p() - alpha.ln())).sqrt()
}

#[cfg(test)]
mod tests;
