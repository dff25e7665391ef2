//! One proxy instance's weir samples folded into its [`InstanceCounters`]: the single reading
//! of the metric contract (names, labels, code classes) that both sources share, whether the
//! samples come from a proxy's own exposition or from Prometheus. Pure.

use weir_proxy::metrics::{CodeClass, SideLabel, names};

use crate::counters::{Buckets, InstanceCounters, SideCounters};

/// Why a sample cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSample {
    /// A histogram bucket without its `le` label.
    NoBound,
    /// An `le` that is not a number.
    Bound(String),
}

impl std::fmt::Display for BadSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadSample::NoBound => f.write_str("bucket without le"),
            BadSample::Bound(le) => write!(f, "{le:?} is not a bucket bound"),
        }
    }
}

/// A sample value as Prometheus writes it: a number, `+Inf`, `-Inf` or `NaN`.
pub fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("{text:?} is not a number")),
    }
}

/// A counter's value as a whole count; anything negative or not finite counts as none.
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

/// The samples of one instance, folded as they come.
#[derive(Debug, Default)]
pub struct Samples {
    instance: InstanceCounters,
    requests_seen: bool,
    /// Buckets by side (stable, candidate): (bound, cumulative count).
    latency: [Vec<(f64, u64)>; 2],
    first_byte: [Vec<(f64, u64)>; 2],
}

impl Samples {
    /// Folds one sample of the route's series named `name` (`label` reads its labels). Series
    /// the controller does not read are ignored.
    pub fn add<'l>(
        &mut self,
        name: &str,
        label: impl Fn(&str) -> Option<&'l str>,
        value: f64,
    ) -> Result<(), BadSample> {
        let n = count(value);
        if name == names::START_TIME {
            self.instance.started_at = Some(value).filter(|v| v.is_finite());
            return Ok(());
        }
        if name == names::FAIL_FAST_TRIPS {
            self.instance.counters.fail_fast_trips = self.instance.counters.fail_fast_trips.saturating_add(n);
            return Ok(());
        }
        if name == names::CANDIDATE_WEIGHT {
            self.instance.weight = u16::try_from(n).ok();
            return Ok(());
        }
        let side = match label(names::label::SIDE) {
            Some(s) if s == SideLabel::stable.as_str() => 0,
            Some(s) if s == SideLabel::candidate.as_str() => 1,
            _ => return Ok(()),
        };
        if name == names::REQUESTS {
            self.requests_seen = true;
            let target: &mut SideCounters = if side == 0 {
                &mut self.instance.counters.stable
            } else {
                &mut self.instance.counters.candidate
            };
            target.requests = target.requests.saturating_add(n);
            match label(names::label::CODE).and_then(CodeClass::from_label) {
                Some(code) if code.is_error() => target.errors = target.errors.saturating_add(n),
                Some(CodeClass::Cancelled) => target.cancelled = target.cancelled.saturating_add(n),
                _ => {}
            }
            return Ok(());
        }
        let list = match name.strip_suffix(names::BUCKET_SUFFIX) {
            Some(h) if h == names::REQUEST_DURATION => &mut self.latency[side],
            Some(h) if h == names::FIRST_BYTE => &mut self.first_byte[side],
            _ => return Ok(()),
        };
        let le = label(names::label::LE).ok_or(BadSample::NoBound)?;
        let bound = parse_value(le)
            .ok()
            .filter(|b| !b.is_nan())
            .ok_or_else(|| BadSample::Bound(le.to_owned()))?;
        list.push((bound, n));
        Ok(())
    }

    /// Whether any of the route's request counters were seen: a proxy without them has not
    /// loaded the route.
    pub fn has_requests(&self) -> bool {
        self.requests_seen
    }

    /// The instance's counters.
    pub fn finish(self) -> InstanceCounters {
        let mut instance = self.instance;
        let [ls, lc] = self.latency;
        let [fs, fc] = self.first_byte;
        let counters = &mut instance.counters;
        counters.stable.latency = to_buckets(ls);
        counters.candidate.latency = to_buckets(lc);
        counters.stable.first_byte = to_buckets(fs);
        counters.candidate.first_byte = to_buckets(fc);
        instance
    }
}

/// Buckets in bound order, cumulative even if a scrape caught them mid-update.
pub fn to_buckets(mut list: Vec<(f64, u64)>) -> Buckets {
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running = 0;
    Buckets {
        bounds: list.iter().map(|(b, _)| *b).collect(),
        cumulative: list
            .iter()
            .map(|(_, c)| {
                running = running.max(*c);
                running
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_buckets_stay_cumulative() {
        let b = to_buckets(vec![(f64::INFINITY, 10), (0.1, 10), (0.2, 9)]);
        assert_eq!(b.bounds, vec![0.1, 0.2, f64::INFINITY]);
        assert_eq!(b.cumulative, vec![10, 10, 10]);
    }

    #[test]
    fn a_bucket_needs_a_bound() {
        let mut s = Samples::default();
        let bucket = format!("{}{}", names::REQUEST_DURATION, names::BUCKET_SUFFIX);
        let side = |k: &str| (k == names::label::SIDE).then_some("stable");
        assert_eq!(s.add(&bucket, side, 1.0), Err(BadSample::NoBound));
        let bad = |k: &str| match k {
            "side" => Some("stable"),
            "le" => Some("soon"),
            _ => None,
        };
        assert_eq!(s.add(&bucket, bad, 1.0), Err(BadSample::Bound("soon".into())));
    }
}
