//! Fail-fast: the proxy stops sending a route's candidate traffic the moment the candidate's
//! error ratio over a sliding window crosses its limit, without waiting for the controller.
//!
//! [`SlidingWindow`] is pure (time is an argument); [`FailFast`] wraps it for the request path:
//! recording takes a short lock, only for candidate responses; checking the trip is one atomic
//! load for every request.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::FailFastConfig;

/// Slots per window: the window slides in steps of a tenth of its length.
const SLOTS: u32 = 10;

/// Counts of outcomes over the last `window`, kept in slots of `window / 10`.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slot_len: Duration,
    /// (slot start, requests, errors), oldest first.
    slots: VecDeque<(Duration, u64, u64)>,
}

impl SlidingWindow {
    /// An empty window of length `window`.
    pub fn new(window: Duration) -> Self {
        SlidingWindow {
            slot_len: (window / SLOTS).max(Duration::from_millis(1)),
            slots: VecDeque::new(),
        }
    }

    /// Records one outcome at `now` (time since any fixed origin) and returns the window's
    /// (requests, errors) after it.
    pub fn record(&mut self, now: Duration, error: bool) -> (u64, u64) {
        let slot_start =
            Duration::from_nanos((now.as_nanos() / self.slot_len.as_nanos()) as u64 * self.slot_len.as_nanos() as u64);
        let oldest_kept = slot_start.saturating_sub(self.slot_len * (SLOTS - 1));
        while self.slots.front().is_some_and(|(start, _, _)| *start < oldest_kept) {
            self.slots.pop_front();
        }
        match self.slots.back_mut() {
            Some((start, requests, errors)) if *start == slot_start => {
                *requests += 1;
                *errors += u64::from(error);
            }
            _ => self.slots.push_back((slot_start, 1, u64::from(error))),
        }
        self.slots
            .iter()
            .fold((0, 0), |(r, e), (_, requests, errors)| (r + requests, e + errors))
    }
}

/// Whether a window with these counts trips the route.
pub fn trips(policy: &FailFastConfig, requests: u64, errors: u64) -> bool {
    requests >= policy.min_requests && errors as f64 >= policy.error_ratio * requests as f64
}

/// The numbers that tripped a route, for `/config` and the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trip {
    /// When, RFC 3339.
    pub at: String,
    /// Candidate requests in the window.
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
    /// The limit that was crossed.
    pub error_ratio_limit: f64,
    /// The window length.
    pub window: String,
}

/// A route's fail-fast state: its window and, once tripped, why. A trip is never undone; a
/// new config with a different candidate gets a new state.
#[derive(Debug)]
pub struct FailFast {
    policy: FailFastConfig,
    origin: tokio::time::Instant,
    window: Mutex<SlidingWindow>,
    tripped: OnceLock<Trip>,
}

impl FailFast {
    /// A fresh state for `policy`.
    pub fn new(policy: FailFastConfig) -> Self {
        FailFast {
            policy,
            origin: tokio::time::Instant::now(),
            window: Mutex::new(SlidingWindow::new(policy.window)),
            tripped: OnceLock::new(),
        }
    }

    /// A fresh window under `policy` that keeps this state's trip, if any: the candidate it
    /// cut off stays cut off whatever the new limits say.
    pub fn with_policy(&self, policy: FailFastConfig) -> Self {
        let next = FailFast::new(policy);
        if let Some(trip) = self.tripped.get() {
            let _ = next.tripped.set(trip.clone());
        }
        next
    }

    /// The policy this state enforces.
    pub fn policy(&self) -> &FailFastConfig {
        &self.policy
    }

    /// The trip, if the route has tripped.
    pub fn tripped(&self) -> Option<&Trip> {
        self.tripped.get()
    }

    /// Records one candidate outcome; returns the trip if this outcome caused it.
    pub fn record(&self, error: bool) -> Option<&Trip> {
        if self.tripped.get().is_some() {
            return None;
        }
        let (requests, errors) = self
            .window
            .lock()
            .expect("no panics while holding the fail-fast lock")
            .record(self.origin.elapsed(), error);
        if !trips(&self.policy, requests, errors) {
            return None;
        }
        let trip = Trip {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            requests,
            errors,
            error_ratio_limit: self.policy.error_ratio,
            window: humantime::format_duration(self.policy.window).to_string(),
        };
        // Of racing callers, exactly one sets the trip and reports it.
        let mut first = false;
        let trip = self.tripped.get_or_init(|| {
            first = true;
            trip
        });
        first.then_some(trip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_requests: u64) -> FailFastConfig {
        FailFastConfig {
            error_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests,
        }
    }

    #[test]
    fn the_window_forgets_old_outcomes() {
        let mut w = SlidingWindow::new(Duration::from_secs(10));
        for i in 0..10 {
            w.record(Duration::from_secs(i), true);
        }
        assert_eq!(w.record(Duration::from_millis(9_500), false), (11, 10));
        // Twenty seconds later only the new outcome is left.
        assert_eq!(w.record(Duration::from_secs(30), false), (1, 0));
    }

    #[test]
    fn too_few_requests_never_trip() {
        assert!(!trips(&policy(20), 19, 19));
        assert!(trips(&policy(20), 20, 10));
        assert!(!trips(&policy(20), 20, 9));
    }

    #[tokio::test]
    async fn a_failing_candidate_trips_once_after_min_requests() {
        let ff = FailFast::new(policy(20));
        for _ in 0..19 {
            assert!(ff.record(true).is_none());
        }
        let trip = ff.record(true).cloned().expect("the twentieth failure trips");
        assert_eq!((trip.requests, trip.errors), (20, 20));
        assert!(ff.record(true).is_none(), "a trip is reported once");
        assert_eq!(ff.tripped(), Some(&trip));
    }
}
