//! What the proxies counted for one route, and how a window of it is taken. Plain data and
//! arithmetic: no I/O.
//!
//! A proxy's counters are cumulative since it started. A window is the increase between two
//! snapshots, taken per proxy instance and then summed, because instances restart on their
//! own: a sum of counters taken before the difference would fall when one instance restarts
//! and so swallow history, or undercount. A restart is recognised as PromQL's `increase` does
//! (a counter went down), and more surely by the proxy's start time changing.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A latency histogram as Prometheus exposes it: upper bounds (the last may be +Inf) and the
/// cumulative count of observations at or below each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Buckets {
    /// Upper bounds in seconds, ascending. Stored as Prometheus writes `le` ("0.05", "+Inf"),
    /// since JSON has no infinity.
    #[serde(with = "le_strings")]
    #[schemars(with = "Vec<String>")]
    pub bounds: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub cumulative: Vec<u64>,
}

impl Buckets {
    /// Observations in all.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Observations above `bound` (which should be one of the bounds).
    pub fn above(&self, bound: f64) -> u64 {
        let at_or_below = self
            .bounds
            .iter()
            .zip(&self.cumulative)
            .rev()
            .find(|(b, _)| **b <= bound)
            .map(|(_, c)| *c);
        // Saturating: buckets read from a page the proxy did not write can be out of order.
        self.total().saturating_sub(at_or_below.unwrap_or(0))
    }

    /// The share of observations above `x`, interpolated linearly inside its bucket (the
    /// first bucket starts at 0); `None` without observations.
    pub fn share_above(&self, x: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let mut lower = (0.0, 0u64);
        for (bound, count) in self.bounds.iter().zip(&self.cumulative) {
            if x <= *bound {
                let below = if bound.is_infinite() || *bound <= lower.0 {
                    lower.1 as f64
                } else {
                    lower.1 as f64 + count.saturating_sub(lower.1) as f64 * (x - lower.0) / (bound - lower.0)
                };
                return Some(1.0 - below / total as f64);
            }
            lower = (*bound, *count);
        }
        Some(0.0)
    }

    /// The smallest bound with at least `quantile` of the observations at or below it.
    pub fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (quantile * total as f64).ceil() as u64;
        self.bounds
            .iter()
            .zip(&self.cumulative)
            .find(|(_, c)| **c >= rank)
            .map(|(b, _)| *b)
    }

    /// The quantile, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, quantile: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = quantile * total as f64;
        let i = self.cumulative.iter().position(|c| *c as f64 >= rank)?;
        let (lower, below) = if i == 0 {
            (0.0, 0)
        } else {
            (self.bounds[i - 1], self.cumulative[i - 1])
        };
        let upper = self.bounds[i];
        if upper.is_infinite() {
            return Some(lower);
        }
        let in_bucket = self.cumulative[i].saturating_sub(below) as f64;
        Some(if in_bucket == 0.0 {
            upper
        } else {
            lower + (upper - lower) * (rank - below as f64) / in_bucket
        })
    }

    /// Element-wise sum; bounds must match or one side be empty (a histogram with other
    /// bounds cannot be added and is left out).
    pub fn add(&mut self, other: &Buckets) {
        if self.bounds.is_empty() {
            *self = other.clone();
        } else if self.bounds == other.bounds {
            self.cumulative
                .iter_mut()
                .zip(&other.cumulative)
                .for_each(|(a, b)| *a = a.saturating_add(*b));
        }
    }

    /// `self - earlier`, or `None` when a count went down or the bounds changed: the
    /// histogram started again.
    fn checked_since(&self, earlier: &Buckets) -> Option<Buckets> {
        if earlier.bounds.is_empty() {
            return Some(self.clone());
        }
        if self.bounds != earlier.bounds {
            return None;
        }
        let cumulative = self
            .cumulative
            .iter()
            .zip(&earlier.cumulative)
            .map(|(now, then)| now.checked_sub(*then))
            .collect::<Option<Vec<u64>>>()?;
        Some(Buckets {
            bounds: self.bounds.clone(),
            cumulative,
        })
    }
}

pub(crate) mod le_strings {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bounds: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(bounds.iter().map(|b| {
            if b.is_infinite() {
                "+Inf".to_owned()
            } else {
                b.to_string()
            }
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| match text.as_str() {
                "+Inf" => Ok(f64::INFINITY),
                other => other
                    .parse()
                    .map_err(|_| D::Error::custom(format!("{other:?} is not a bucket bound"))),
            })
            .collect()
    }
}

/// One side's counters: cumulative from a proxy, or a window's increase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SideCounters {
    /// Requests, however they ended.
    pub requests: u64,
    /// Of those, errors: 5xx, gRPC errors, no response, or a body that failed part way.
    pub errors: u64,
    /// Of those, requests whose client went away before the response ended.
    #[serde(default)]
    pub cancelled: u64,
    /// Whole-request durations.
    pub latency: Buckets,
    /// Times to first response byte.
    pub first_byte: Buckets,
}

impl SideCounters {
    /// Adds another instance's or window's counters.
    pub fn add(&mut self, other: &SideCounters) {
        // Saturating: counts come from the network, and a hostile or broken exposition must
        // not be able to panic the controller.
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.cancelled = self.cancelled.saturating_add(other.cancelled);
        self.latency.add(&other.latency);
        self.first_byte.add(&other.first_byte);
    }

    pub(crate) fn checked_since(&self, earlier: &SideCounters) -> Option<SideCounters> {
        Some(SideCounters {
            requests: self.requests.checked_sub(earlier.requests)?,
            errors: self.errors.checked_sub(earlier.errors)?,
            cancelled: self.cancelled.checked_sub(earlier.cancelled)?,
            latency: self.latency.checked_since(&earlier.latency)?,
            first_byte: self.first_byte.checked_since(&earlier.first_byte)?,
        })
    }

    /// Errors over requests, if there were any.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// Both sides' counters of one route and its fail-fast trips.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// The stable side.
    pub stable: SideCounters,
    /// The candidate side.
    pub candidate: SideCounters,
    /// Times the route's fail-fast tripped.
    #[serde(default)]
    pub fail_fast_trips: u64,
    /// The arms of an N-way route (an experiment), by variant name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arms: BTreeMap<String, ArmCounters>,
}

impl Counters {
    /// Adds another instance's or window's counters.
    pub fn add(&mut self, other: &Counters) {
        self.stable.add(&other.stable);
        self.candidate.add(&other.candidate);
        self.fail_fast_trips = self.fail_fast_trips.saturating_add(other.fail_fast_trips);
        for (name, arm) in &other.arms {
            self.arms.entry(name.clone()).or_default().add(arm);
        }
    }

    /// `self - earlier`, or `None` when any counter went down: the instance restarted.
    pub fn checked_since(&self, earlier: &Counters) -> Option<Counters> {
        let empty = ArmCounters::default();
        Some(Counters {
            stable: self.stable.checked_since(&earlier.stable)?,
            candidate: self.candidate.checked_since(&earlier.candidate)?,
            fail_fast_trips: self.fail_fast_trips.checked_sub(earlier.fail_fast_trips)?,
            arms: self
                .arms
                .iter()
                .map(|(name, now)| {
                    Some((
                        name.clone(),
                        now.checked_since(earlier.arms.get(name).unwrap_or(&empty))?,
                    ))
                })
                .collect::<Option<BTreeMap<_, _>>>()?,
        })
    }
}

/// One arm of an N-way route: what a side counts, and what an experiment also judges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArmCounters {
    /// Requests, errors, durations, first bytes.
    #[serde(flatten)]
    pub side: SideCounters,
    /// Gaps between streamed body frames.
    #[serde(default)]
    pub stream_gap: Buckets,
    /// Sum of those gaps, in seconds.
    #[serde(default)]
    pub stream_gap_sum: f64,
    /// Sum of reported scores.
    #[serde(default)]
    pub score_sum: f64,
    /// Sum of their squares.
    #[serde(default)]
    pub score_squares: f64,
    /// Responses that reported a score.
    #[serde(default)]
    pub score_count: u64,
    /// Distinct sticky users, an estimate (a gauge: instances give their largest, and a
    /// window gives the latest).
    #[serde(default)]
    pub users: f64,
}

impl ArmCounters {
    /// Adds another instance's counters; the users estimate takes the larger.
    pub fn add(&mut self, other: &ArmCounters) {
        self.side.add(&other.side);
        self.stream_gap.add(&other.stream_gap);
        self.stream_gap_sum += finite(other.stream_gap_sum);
        self.score_sum += finite(other.score_sum);
        self.score_squares += finite(other.score_squares);
        self.score_count = self.score_count.saturating_add(other.score_count);
        self.users = self.users.max(finite(other.users));
    }

    /// `self - earlier`, or `None` when a count went down (the instance restarted).
    fn checked_since(&self, earlier: &ArmCounters) -> Option<ArmCounters> {
        let sub = |now: f64, then: f64| {
            let d = finite(now) - finite(then);
            // Float sums drift by rounding; a real restart drops them far more.
            (d >= -1e-9 * finite(now).abs().max(1.0)).then_some(d.max(0.0))
        };
        Some(ArmCounters {
            side: self.side.checked_since(&earlier.side)?,
            stream_gap: self.stream_gap.checked_since(&earlier.stream_gap)?,
            stream_gap_sum: sub(self.stream_gap_sum, earlier.stream_gap_sum)?,
            score_sum: sub(self.score_sum, earlier.score_sum)?,
            score_squares: sub(self.score_squares, earlier.score_squares)?,
            score_count: self.score_count.checked_sub(earlier.score_count)?,
            users: finite(self.users),
        })
    }
}

/// A value read off a page, as a number that cannot poison a sum: NaN and infinities as 0.
fn finite(value: f64) -> f64 {
    if value.is_finite() { value.max(0.0) } else { 0.0 }
}

/// One proxy instance's cumulative counters of the route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounters {
    /// When the instance started, in seconds since the Unix epoch, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Its counters.
    pub counters: Counters,
    /// The candidate weight it serves the route with (its gauge), in basis points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
}

/// Every proxy instance's cumulative counters of a route at one moment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it was taken, in seconds since the Unix epoch.
    pub taken_at: f64,
    /// By instance (its scrape address).
    pub instances: BTreeMap<String, InstanceCounters>,
}

impl Snapshot {
    /// The distinct weights the instances serve the route with, ascending.
    pub fn weights(&self) -> Vec<u16> {
        let mut weights: Vec<u16> = self.instances.values().filter_map(|i| i.weight).collect();
        weights.sort_unstable();
        weights.dedup();
        weights
    }

    /// The instances' counters summed: what a scrape of all of them shows.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for instance in self.instances.values() {
            total.add(&instance.counters);
        }
        total
    }

    /// What happened between `earlier` and `self`: each instance's increase, summed.
    /// - An instance in both gives its increase; if it restarted in between (its start time
    ///   changed, or a counter went down), everything it counted since is in the window.
    /// - An instance new since `earlier` that started after it (a new replica) gives all it
    ///   counted; one that started before (it was running but not seen) gives nothing, since
    ///   what it counted before `earlier` cannot be told apart, except its fail-fast trips: a
    ///   trip is counted whenever in doubt, since missing one leaves traffic on a failing
    ///   candidate and counting an old one only ends a rollout early.
    /// - An instance gone since `earlier` gives nothing more: it cannot be asked.
    pub fn increase_since(&self, earlier: &Snapshot) -> Counters {
        let mut window = Counters::default();
        for (name, now) in &self.instances {
            let increase = match earlier.instances.get(name) {
                Some(then) => {
                    let restarted = matches!((now.started_at, then.started_at), (Some(a), Some(b)) if a != b);
                    if restarted {
                        Some(now.counters.clone())
                    } else {
                        Some(
                            now.counters
                                .checked_since(&then.counters)
                                .unwrap_or_else(|| now.counters.clone()),
                        )
                    }
                }
                None => Some(
                    now.started_at
                        .filter(|started| *started >= earlier.taken_at)
                        .map(|_| now.counters.clone())
                        .unwrap_or_else(|| Counters {
                            fail_fast_trips: now.counters.fail_fast_trips,
                            ..Counters::default()
                        }),
                ),
            };
            if let Some(increase) = increase {
                window.add(&increase);
            }
        }
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, errors: u64) -> SideCounters {
        SideCounters {
            requests,
            errors,
            ..SideCounters::default()
        }
    }

    fn instance(started_at: f64, stable: (u64, u64), candidate: (u64, u64)) -> InstanceCounters {
        InstanceCounters {
            started_at: Some(started_at),
            counters: Counters {
                stable: side(stable.0, stable.1),
                candidate: side(candidate.0, candidate.1),
                fail_fast_trips: 0,
                arms: Default::default(),
            },
            weight: Some(500),
        }
    }

    fn snapshot(taken_at: f64, instances: &[(&str, InstanceCounters)]) -> Snapshot {
        Snapshot {
            taken_at,
            instances: instances.iter().map(|(n, c)| (n.to_string(), c.clone())).collect(),
        }
    }

    #[test]
    fn increases_are_taken_per_instance_then_summed() {
        let before = snapshot(
            100.0,
            &[
                ("a", instance(1.0, (1000, 10), (50, 1))),
                ("b", instance(1.0, (1000, 10), (50, 1))),
            ],
        );
        let after = snapshot(
            110.0,
            &[
                ("a", instance(1.0, (1100, 11), (55, 2))),
                ("b", instance(1.0, (1100, 12), (55, 1))),
            ],
        );
        let w = after.increase_since(&before);
        assert_eq!((w.stable.requests, w.stable.errors), (200, 3));
        assert_eq!((w.candidate.requests, w.candidate.errors), (10, 1));
    }

    #[test]
    fn a_restarted_instance_counts_what_it_saw_since_the_restart() {
        let before = snapshot(
            100.0,
            &[
                ("a", instance(1.0, (1000, 10), (50, 1))),
                ("b", instance(1.0, (1000, 10), (50, 1))),
            ],
        );
        // b restarted at 105 and has counted 950 stable requests since: fewer than the 1000 it
        // had, so a difference of the summed counters undercounts the window badly.
        let after = snapshot(
            110.0,
            &[
                ("a", instance(1.0, (1100, 10), (55, 1))),
                ("b", instance(105.0, (950, 3), (45, 0))),
            ],
        );
        let w = after.increase_since(&before);
        assert_eq!(w.stable.requests, 100 + 950);
        assert_eq!(w.candidate.requests, 5 + 45);
        // The difference of sums that an aggregated scrape gives: 2050 - 2000 = 50.
        assert_eq!(
            after.total().stable.requests - before.total().stable.requests,
            50,
            "why sums must not be differenced"
        );
    }

    #[test]
    fn a_restart_without_a_start_time_is_seen_by_a_counter_going_down() {
        let mut then = instance(1.0, (1000, 10), (50, 1));
        let mut now = instance(1.0, (30, 0), (2, 0));
        then.started_at = None;
        now.started_at = None;
        let w = snapshot(2.0, &[("a", now)]).increase_since(&snapshot(1.0, &[("a", then)]));
        assert_eq!(w.stable.requests, 30);
    }

    #[test]
    fn a_new_replica_counts_whole_and_one_seen_late_counts_nothing() {
        let before = snapshot(100.0, &[("a", instance(1.0, (1000, 10), (50, 1)))]);
        let after = snapshot(
            110.0,
            &[
                ("a", instance(1.0, (1010, 10), (51, 1))),
                ("new", instance(104.0, (20, 0), (1, 0))),
                ("unseen", instance(2.0, (5000, 50), (250, 3))),
            ],
        );
        let w = after.increase_since(&before);
        assert_eq!(w.stable.requests, 10 + 20);
        assert_eq!(after.weights(), vec![500]);
    }

    #[test]
    fn a_trip_of_an_instance_not_seen_before_counts() {
        let before = snapshot(100.0, &[("a", instance(1.0, (1000, 10), (50, 1)))]);
        let mut late = instance(2.0, (5000, 50), (250, 30));
        late.counters.fail_fast_trips = 1;
        let after = snapshot(110.0, &[("a", instance(1.0, (1010, 10), (51, 1))), ("late", late)]);
        let w = after.increase_since(&before);
        assert_eq!((w.stable.requests, w.fail_fast_trips), (10, 1));
    }

    #[test]
    fn buckets_interpolate_and_survive_json_with_infinity() {
        let b = Buckets {
            bounds: vec![0.1, 0.2, f64::INFINITY],
            cumulative: vec![50, 100, 100],
        };
        assert_eq!(b.quantile(0.5), Some(0.1));
        assert!((b.quantile(0.75).expect("data") - 0.15).abs() < 1e-9);
        assert_eq!(b.quantile_bound(0.99), Some(0.2));
        assert_eq!(b.above(0.1), 50);
        assert!((b.share_above(0.15).expect("data") - 0.25).abs() < 1e-9);
        assert_eq!(b.share_above(0.05), Some(0.75));
        assert_eq!(Buckets::default().quantile(0.99), None);
        let json = serde_json::to_string(&b).expect("serialises");
        assert!(json.contains("\"+Inf\""), "{json}");
        assert_eq!(serde_json::from_str::<Buckets>(&json).expect("parses"), b);
    }

    /// Found by the decide fuzz target: buckets whose cumulative counts go down (which no
    /// weir-proxy writes, but a page from elsewhere can) made `above` subtract past zero.
    #[test]
    fn buckets_out_of_order_give_numbers_not_a_panic() {
        let b = Buckets {
            bounds: vec![0.1, 0.5, f64::INFINITY],
            cumulative: vec![9, 3, 5],
        };
        assert_eq!(b.above(0.1), 0);
        assert!(b.share_above(0.3).is_some_and(f64::is_finite));
        assert!(b.quantile(0.99).is_some_and(f64::is_finite));
    }
}
