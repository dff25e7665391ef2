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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn moments(count: f64, mean: f64, sd: f64) -> Moments {
        Moments {
            count,
            sum: count * mean,
            squares: (count - 1.0) * sd * sd + count * mean * mean,
        }
    }

    #[test]
    fn mean_difference_follows_the_mixture_boundary() {
        let (treatment, control) = (moments(400.0, 0.75, 0.2), moments(100.0, 0.7, 0.1));
        let interval = mean_difference(&treatment, &control, 0.05).expect("enough data");
        let variance = 0.04 / 400.0 + 0.01 / 100.0;
        let log_odds = -2.0 * 0.05_f64.ln();
        let tau2 = (log_odds + log_odds.ln_1p()) * 0.05 / PLANNED_OBSERVATIONS;
        let half =
            (2.0 * variance * (variance + tau2) / tau2 * (((variance + tau2) / variance).sqrt() / 0.05).ln()).sqrt();
        assert!((interval.estimate - 0.05).abs() < 1e-12);
        assert!(
            (interval.half_width() - half).abs() < 1e-12,
            "{} vs {half}",
            interval.half_width()
        );
    }

    #[test]
    fn no_events_still_give_a_wide_interval() {
        let interval = proportion_difference(0.0, 50.0, 0.0, 50.0, 0.05).expect("trials");
        assert_eq!(interval.estimate, 0.0);
        assert!(interval.low < -0.05 && interval.high > 0.05, "{interval:?}");
        let single = proportion_interval(50.0, 50.0, 0.05).expect("trials");
        assert!(single.high == 1.0 && single.low < 0.95, "{single:?}");
    }

    #[test]
    fn garbage_gives_none() {
        let good = moments(100.0, 1.0, 1.0);
        assert!(mean_difference(&moments(1.0, 1.0, 0.0), &good, 0.05).is_none());
        assert!(mean_difference(&good, &good, 0.0).is_none());
        assert!(mean_difference(&good, &good, 1.0).is_none());
        assert!(
            mean_difference(
                &Moments {
                    squares: f64::NAN,
                    ..good
                },
                &good,
                0.05
            )
            .is_none()
        );
        assert!(mean_difference(&Moments { squares: 1.0, ..good }, &good, 0.05).is_none());
        assert!(proportion_interval(0.0, 0.0, 0.05).is_none());
        assert!(proportion_interval(3.0, 2.0, 0.05).is_none());
        assert!(proportion_interval(1.0, f64::INFINITY, 0.05).is_none());
        assert!(
            quantile_interval(&[0.1, 0.2], &[5, 10], 0.5, 0.05).is_none(),
            "no +Inf bucket"
        );
        assert!(quantile_interval(&[0.2, 0.1, f64::INFINITY], &[5, 8, 10], 0.5, 0.05).is_none());
        assert!(quantile_interval(&[0.1, f64::INFINITY], &[5, 4], 0.5, 0.05).is_none());
        assert_eq!(
            histogram_moments(&[0.1, f64::INFINITY], &[1, 2], f64::NAN),
            Moments::default()
        );
    }

    #[test]
    fn histogram_moments_keep_the_exact_mean_and_the_buckets_spread() {
        // Ten observations in (0, 1], ten in (1, 2], none beyond.
        let moments = histogram_moments(&[1.0, 2.0, f64::INFINITY], &[10, 20, 20], 21.0);
        assert_eq!(moments.mean(), Some(1.05));
        // The stand-ins: uniform over (0, 2], variance 4 / 12 per observation, times n / (n - 1).
        let expected = 4.0 / 12.0 * 20.0 / 19.0;
        assert!((moments.variance().expect("twenty") - expected).abs() < 1e-12);
    }

    #[test]
    fn quantile_interval_brackets_the_bucket_of_the_quantile() {
        let bounds = [0.1, 0.2, 0.5, 1.0, f64::INFINITY];
        // 100k requests: 90 % under 0.1 s, 9.5 % in (0.1, 0.2], 0.5 % in (0.2, 0.5].
        let interval = quantile_interval(&bounds, &[90_000, 99_500, 100_000, 100_000, 100_000], 0.99, 0.05);
        let interval = interval.expect("data");
        assert_eq!((interval.low, interval.high), (0.1, 0.2));
        assert!(interval.contains(interval.estimate));
        // A handful of requests cannot place the 99th percentile: the whole range.
        let wide = quantile_interval(&bounds, &[9, 10, 10, 10, 10], 0.99, 0.05).expect("data");
        assert_eq!((wide.low, wide.high), (0.0, 1.0));
    }

    #[test]
    fn samples_for_half_width_is_the_first_count_that_suffices() {
        let needed = samples_for_half_width(0.04, 0.04, 0.01, 0.05).expect("reachable");
        let at = |count: f64| {
            mean_difference(&moments(count, 0.7, 0.2), &moments(count, 0.7, 0.2), 0.05)
                .expect("data")
                .half_width()
        };
        assert!(at(needed) <= 0.01 + 1e-12 && at(needed - 2.0) > 0.01, "{needed}");
        assert_eq!(samples_for_half_width(0.04, 0.04, 0.0, 0.05), None);
        assert_eq!(samples_for_half_width(0.04, f64::NAN, 0.01, 0.05), None);
    }

    fn any_number() -> impl Strategy<Value = f64> {
        prop_oneof![any::<f64>(), -10.0..1e6, Just(0.0), Just(f64::NAN), Just(f64::INFINITY)]
    }

    fn is_sound(interval: Option<Interval>) -> bool {
        interval.is_none_or(|i| i.low.is_finite() && i.high.is_finite() && i.low <= i.estimate && i.estimate <= i.high)
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_gives_nan(
            numbers in proptest::collection::vec(any_number(), 8),
            counts in proptest::collection::vec(any::<u64>(), 3),
            alpha in any_number(),
        ) {
            let [a, b, c, d, e, f, g, h] = numbers[..] else { unreachable!() };
            let mut counts = counts;
            counts.sort_unstable();
            let (one, two) = (Moments { count: a, sum: b, squares: c }, Moments { count: d, sum: e, squares: f });
            prop_assert!(is_sound(mean_interval(&one, alpha)));
            prop_assert!(is_sound(mean_difference(&one, &two, alpha)));
            prop_assert!(is_sound(proportion_interval(a, d, alpha)));
            prop_assert!(is_sound(proportion_difference(a, b, g, h, alpha)));
            let bounds = [g.abs().min(1e300), h.abs().min(1e300) + 1e300, f64::INFINITY];
            let moments = histogram_moments(&bounds, &counts, b);
            prop_assert!(moments.variance().is_none_or(f64::is_finite));
            prop_assert!(is_sound(quantile_difference(&bounds, &counts, &bounds, &counts, h, alpha)));
            prop_assert!(samples_for_half_width(a, b, c, alpha).is_none_or(f64::is_finite));
        }

        #[test]
        fn more_of_the_same_data_never_widens_an_interval(
            count in 2.0..1e5_f64, mean in -5.0..5.0_f64, sd in 0.0..3.0_f64,
            share in 0.0..1.0_f64, scale in 1.0..100.0_f64, alpha in 0.001..0.5_f64,
        ) {
            let arm = moments(count, mean, sd);
            let bigger = Moments { count: arm.count * scale, sum: arm.sum * scale, squares: arm.squares * scale };
            let width = |one: &Moments, two: &Moments| mean_difference(one, two, alpha).map(|i| i.half_width());
            prop_assert!(width(&bigger, &bigger) <= width(&arm, &arm).map(|w| w * (1.0 + 1e-9) + 1e-12));
            prop_assert!(mean_interval(&bigger, alpha).map(|i| i.half_width())
                <= mean_interval(&arm, alpha).map(|i| i.half_width() * (1.0 + 1e-9) + 1e-12));
            let events = (share * count).floor();
            let proportion = |scale: f64| {
                proportion_difference(events * scale, count * scale, events * scale, count * scale, alpha)
                    .map(|i| i.half_width())
            };
            prop_assert!(proportion(scale) <= proportion(1.0).map(|w| w * (1.0 + 1e-9) + 1e-12));
        }
    }
}
