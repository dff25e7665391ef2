//! One proxy instance's weir samples folded into its [`InstanceCounters`]: the single reading
//! of the metric contract (names, labels, code classes) that both sources share, whether the
//! samples come from a proxy's own exposition or from Prometheus. Pure.

use weir_proxy::metrics::{CodeClass, SideLabel, names};

use std::collections::BTreeMap;

use crate::counters::{ArmCounters, Buckets, InstanceCounters, SideCounters};

/// Most arms read from one route: a route splits between at most 8 variants at a time, but a
/// proxy keeps the series of variants a route had before (series are never removed), and a
/// page from elsewhere must not grow the controller's memory with made-up side names.
const MAX_ARMS: usize = 64;

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
    /// An N-way route's arms, by variant name.
    arms: BTreeMap<String, ArmSamples>,
    /// The only users epoch whose distinct-user counts are read; any, when `None`.
    users_epoch: Option<String>,
}

/// The samples of one arm, folded as they come.
#[derive(Debug, Default)]
struct ArmSamples {
    counters: ArmCounters,
    latency: Vec<(f64, u64)>,
    first_byte: Vec<(f64, u64)>,
    stream_gap: Vec<(f64, u64)>,
}

impl Samples {
    /// Samples whose distinct-user counts are read only of `users_epoch`, when given.
    pub fn counting_users_of(users_epoch: Option<&str>) -> Self {
        Samples {
            users_epoch: users_epoch.map(str::to_owned),
            ..Samples::default()
        }
    }

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
            Some(s) if s == SideLabel::mirror.as_str() => return Ok(()),
            Some(arm) => return self.add_arm(arm, name, label, value),
            None => return Ok(()),
        };
        if name == names::REQUESTS {
            self.requests_seen = true;
            let target: &mut SideCounters = if side == 0 {
                &mut self.instance.counters.stable
            } else {
                &mut self.instance.counters.candidate
            };
            count_requests(target, label(names::label::CODE), n);
            return Ok(());
        }
        let list = match name.strip_suffix(names::BUCKET_SUFFIX) {
            Some(h) if h == names::REQUEST_DURATION => &mut self.latency[side],
            Some(h) if h == names::FIRST_BYTE => &mut self.first_byte[side],
            _ => return Ok(()),
        };
        list.push((bucket_bound(label(names::label::LE))?, n));
        Ok(())
    }

    /// Folds a sample of an N-way route's arm.
    fn add_arm<'l>(
        &mut self,
        arm: &str,
        name: &str,
        label: impl Fn(&str) -> Option<&'l str>,
        value: f64,
    ) -> Result<(), BadSample> {
        if !self.arms.contains_key(arm) && self.arms.len() >= MAX_ARMS {
            return Ok(());
        }
        let n = count(value);
        let amount = if value.is_finite() && value > 0.0 { value } else { 0.0 };
        let samples = self.arms.entry(arm.to_owned()).or_default();
        let target = &mut samples.counters;
        match name {
            _ if name == names::REQUESTS => {
                self.requests_seen = true;
                count_requests(&mut target.side, label(names::label::CODE), n);
                return Ok(());
            }
            _ if name == names::SCORE_SUM => target.score_sum += amount,
            _ if name == names::SCORE_SQUARES_SUM => target.score_squares += amount,
            _ if name == names::SCORE_COUNT => target.score_count = target.score_count.saturating_add(n),
            _ if name == names::STICKY_USERS => {
                let this_epoch = self
                    .users_epoch
                    .as_deref()
                    .is_none_or(|want| label(names::label::EPOCH).unwrap_or_default() == want);
                if this_epoch {
                    target.users = target.users.max(amount);
                }
            }
            _ if name.strip_suffix("_sum") == Some(names::STREAM_GAP) => target.stream_gap_sum += amount,
            _ => {
                let list = match name.strip_suffix(names::BUCKET_SUFFIX) {
                    Some(h) if h == names::REQUEST_DURATION => &mut samples.latency,
                    Some(h) if h == names::FIRST_BYTE => &mut samples.first_byte,
                    Some(h) if h == names::STREAM_GAP => &mut samples.stream_gap,
                    _ => return Ok(()),
                };
                list.push((bucket_bound(label(names::label::LE))?, n));
            }
        }
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
        counters.arms = self
            .arms
            .into_iter()
            .map(|(name, samples)| {
                let mut arm = samples.counters;
                arm.side.latency = to_buckets(samples.latency);
                arm.side.first_byte = to_buckets(samples.first_byte);
                arm.stream_gap = to_buckets(samples.stream_gap);
                (name, arm)
            })
            .collect();
        instance
    }
}

/// Adds `n` requests that ended as the `code` label says to `side`.
fn count_requests(side: &mut SideCounters, code: Option<&str>, n: u64) {
    side.requests = side.requests.saturating_add(n);
    match code.and_then(CodeClass::from_label) {
        Some(code) if code.is_error() => side.errors = side.errors.saturating_add(n),
        Some(CodeClass::Cancelled) => side.cancelled = side.cancelled.saturating_add(n),
        _ => {}
    }
}

/// A histogram bucket's upper bound, from its `le` label.
fn bucket_bound(le: Option<&str>) -> Result<f64, BadSample> {
    let le = le.ok_or(BadSample::NoBound)?;
    parse_value(le)
        .ok()
        .filter(|b| !b.is_nan())
        .ok_or_else(|| BadSample::Bound(le.to_owned()))
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
    fn an_arm_of_an_n_way_route_gathers_its_series() {
        let mut s = Samples::default();
        let arm = |code: Option<&'static str>, le: Option<&'static str>| {
            move |k: &str| match k {
                "side" => Some("distilled"),
                "code" => code,
                "le" => le,
                _ => None,
            }
        };
        s.add(names::REQUESTS, arm(Some("2xx"), None), 90.0).expect("ok");
        s.add(names::REQUESTS, arm(Some("5xx"), None), 10.0).expect("ok");
        s.add(names::SCORE_SUM, arm(None, None), 42.5).expect("ok");
        s.add(names::SCORE_SQUARES_SUM, arm(None, None), 20.0).expect("ok");
        s.add(names::SCORE_COUNT, arm(None, None), 60.0).expect("ok");
        s.add(names::STICKY_USERS, arm(None, None), 37.0).expect("ok");
        let gap = format!("{}{}", names::STREAM_GAP, names::BUCKET_SUFFIX);
        s.add(&gap, arm(None, Some("0.05")), 7.0).expect("ok");
        s.add(&gap, arm(None, Some("+Inf")), 9.0).expect("ok");
        s.add(&format!("{}_sum", names::STREAM_GAP), arm(None, None), 0.4)
            .expect("ok");
        let mirror = |k: &str| (k == "side").then_some("mirror");
        s.add(names::REQUESTS, mirror, 5.0).expect("ok");
        let counters = s.finish().counters;
        let a = &counters.arms["distilled"];
        assert_eq!((a.side.requests, a.side.errors), (100, 10));
        assert_eq!(
            (a.score_sum, a.score_squares, a.score_count, a.users),
            (42.5, 20.0, 60, 37.0)
        );
        assert_eq!(a.stream_gap.cumulative, vec![7, 9]);
        assert_eq!(a.stream_gap_sum, 0.4);
        assert_eq!(counters.arms.len(), 1, "mirror copies are no arm");
    }

    #[test]
    fn a_page_cannot_make_up_more_than_eight_arms() {
        let mut s = Samples::default();
        let sides: Vec<String> = (0..100).map(|i| format!("arm{i}")).collect();
        for name in &sides {
            let label = |k: &str| match k {
                "side" => Some(name.as_str()),
                "code" => Some("2xx"),
                _ => None,
            };
            s.add(names::REQUESTS, label, 1.0).expect("ok");
        }
        assert_eq!(s.finish().counters.arms.len(), MAX_ARMS);
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
