//! How the report shows each metric: its column name, its display unit (error ratio in percent,
//! latencies and gaps in milliseconds, score as is), an arm's value of it, and the number
//! formats shared by the table and the plots. Pure formatting; no I/O.

use crate::experiment::verdict::{ArmSummary, Metric};

/// The metric's short name in a column header.
pub fn label(metric: Metric) -> &'static str {
    match metric {
        Metric::ErrorRatio => "error ratio",
        Metric::P99 => "p99",
        Metric::FirstByteP99 => "first byte p99",
        Metric::StreamGap => "stream gap",
        Metric::Score => "score",
    }
}

/// The display unit, empty for the score.
pub fn unit(metric: Metric) -> &'static str {
    match metric {
        Metric::ErrorRatio => "%",
        Metric::P99 | Metric::FirstByteP99 | Metric::StreamGap => "ms",
        Metric::Score => "",
    }
}

/// The header of a metric's column: its name and unit, `p99 (ms)`.
pub fn header(metric: Metric) -> String {
    match unit(metric) {
        "" => label(metric).to_string(),
        unit => format!("{} ({unit})", label(metric)),
    }
}

/// What one unit of the stored value (a ratio, seconds) is in the display unit.
pub fn scale(metric: Metric) -> f64 {
    match metric {
        Metric::ErrorRatio => 100.0,
        Metric::P99 | Metric::FirstByteP99 | Metric::StreamGap => 1000.0,
        Metric::Score => 1.0,
    }
}

/// The arm's value of the metric in its display unit, if it can be computed.
pub fn value(metric: Metric, arm: &ArmSummary) -> Option<f64> {
    metric
        .value(arm)
        .map(|raw| raw * scale(metric))
        .filter(|value| value.is_finite())
}

/// How many observations of the metric the arm has, 0 when the count is not a number.
pub fn observations(metric: Metric, arm: &ArmSummary) -> f64 {
    metric.observations(arm)
}

/// Decimals that show `reference` with `digits` significant digits (0 to 6).
fn decimals(reference: f64, digits: i32) -> usize {
    let reference = reference.abs();
    if !reference.is_finite() || reference == 0.0 {
        return 2;
    }
    (digits - 1 - reference.log10().floor() as i32).clamp(0, 6) as usize
}

/// A value with three significant digits (at most six decimals), `-` when there is none.
pub fn number(value: Option<f64>) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(value) => format!("{value:.*}", decimals(value, 3)),
        None => "-".to_string(),
    }
}

/// A value without trailing zeros: `95`, `0.5`, `1234`.
pub fn trimmed(value: f64) -> String {
    let text = number(Some(value));
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A signed difference at `decimals` places: `+0.031`, `-1.20`, `+0.00` for a rounded zero.
fn signed(value: f64, decimals: usize) -> String {
    let text = format!("{value:+.decimals$}");
    // `-0.000` reads as a regression; a rounded zero has no sign worth showing.
    if text[1..].chars().all(|c| c == '0' || c == '.') {
        format!("+{}", &text[1..])
    } else {
        text
    }
}

/// An interval in the display unit, `+0.031 [+0.012, +0.050]`, with the half-width shown to
/// two significant digits so that its ends differ visibly.
pub fn interval(estimate: f64, low: f64, high: f64) -> String {
    let places = decimals((high - low) / 2.0, 2);
    format!(
        "{} [{}, {}]",
        signed(estimate, places),
        signed(low, places),
        signed(high, places)
    )
}

/// A count such as users or requests, rounded: `12345`.
pub fn count(value: f64) -> String {
    if value.is_finite() {
        format!("{:.0}", value.max(0.0))
    } else {
        "-".to_string()
    }
}

/// A weight in percent, with a decimal only when it has one: `33.5`, `50`.
pub fn weight(value: f64) -> String {
    if !value.is_finite() {
        "-".to_string()
    } else if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Rounds up to two significant digits, for "about N more": `12345` gives `13000`.
pub fn about(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 0.0;
    }
    let step = 10f64.powi((value.log10().floor() as i32 - 1).max(0));
    (value / step).ceil() * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_show_two_significant_digits_of_their_half_width() {
        assert_eq!(interval(0.031, 0.012, 0.050), "+0.031 [+0.012, +0.050]");
        assert_eq!(interval(-12.0, -30.0, 6.0), "-12 [-30, +6]");
        assert_eq!(interval(0.0, -0.0004, 0.0004), "+0.00000 [-0.00040, +0.00040]");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(Some(0.7123)), "0.712");
        assert_eq!(number(Some(1234.5)), "1234");
        assert_eq!(number(Some(f64::NAN)), "-");
        assert_eq!(number(None), "-");
    }

    #[test]
    fn about_rounds_up_to_two_digits() {
        assert_eq!(about(12345.0), 13000.0);
        assert_eq!(about(7.2), 8.0);
        assert_eq!(about(f64::NAN), 0.0);
    }
}
