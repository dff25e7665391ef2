//! Tests of [`super`]: examples and properties, no server.

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
    let half = (2.0 * variance * (variance + tau2) / tau2 * (((variance + tau2) / variance).sqrt() / 0.05).ln()).sqrt();
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
