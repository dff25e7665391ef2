//! The fixed guardrails of metric checks: limits on the candidate's window alone (`max`,
//! `maxMs`) and relative to stable's (`maxOverStable`, `maxRatioToStable`). Pure.

use super::round;
use crate::rollout::CheckMetric;
use crate::rollout::validate::ValidCheck;
use crate::status::AnalysisValues;

/// Whether any check limits the candidate by itself, so that it can be judged when there is
/// no stable to compare with.
pub fn has_absolute_limit(checks: &[ValidCheck]) -> bool {
    checks.iter().any(|check| match check {
        ValidCheck::Metric { max, max_ms, .. } => max.is_some() || max_ms.is_some(),
        ValidCheck::Promql { .. } => true,
    })
}

/// The breach of a metric check's guardrails in this window, if any.
pub fn breach(check: &ValidCheck, v: &AnalysisValues) -> Option<String> {
    let ValidCheck::Metric {
        metric,
        max,
        max_over_stable,
        max_ms,
        max_ratio_to_stable,
    } = check
    else {
        return None;
    };
    let (candidate, stable) = match metric {
        CheckMetric::ErrorRatio => (v.candidate.error_ratio, v.stable.error_ratio),
        CheckMetric::LatencyP99 => (v.candidate.p99_ms, v.stable.p99_ms),
        CheckMetric::FirstByteP99 => (v.candidate.first_byte_p99_ms, v.stable.first_byte_p99_ms),
    };
    let candidate = candidate?;
    let name = metric.as_str();
    let stable_name = if v.against_reference {
        "stable's before the switch"
    } else {
        "stable's"
    };
    if let Some(max) = max.filter(|m| candidate > *m) {
        return Some(format!("{name} {} is over its limit {max}", round(candidate)));
    }
    if let (Some(limit), Some(stable)) = (max_over_stable, stable)
        && candidate - stable > *limit
    {
        return Some(format!(
            "{name} {} is more than {limit} over {stable_name} {}",
            round(candidate),
            round(stable)
        ));
    }
    if let Some(max) = max_ms.filter(|m| candidate > *m) {
        return Some(format!("{name} {}ms is over its limit {max}ms", round(candidate)));
    }
    if let (Some(limit), Some(stable)) = (max_ratio_to_stable, stable)
        && stable > 0.0
        && candidate / stable > *limit
    {
        return Some(format!(
            "{name} {}ms is {}x {stable_name} {}ms, over {limit}x",
            round(candidate),
            round(candidate / stable),
            round(stable)
        ));
    }
    None
}
