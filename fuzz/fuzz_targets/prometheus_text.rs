//! A proxy's `/metrics` text (Prometheus or OpenMetrics) through the controller's parser,
//! `weir::source::text::route_counters`, which reads what the network hands it.
//!
//! The first line of the input names the route to read (`r` when it is empty); the rest is the
//! exposition. Invariants, beyond not panicking:
//! - the counters are whole counts that add up: errors and cancellations are parts of requests;
//! - histograms are well formed: one cumulative count per bound, bounds ascending and never NaN,
//!   counts never falling, and the start time finite;
//! - parsing is deterministic, CRLF line ends read as LF, and a comment line added between
//!   samples changes nothing;
//! - an error names a line of the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::counters::{Buckets, InstanceCounters, SideCounters};
use weir::source::text::{ParseError, route_counters};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (route, text) = input.split_once('\n').unwrap_or(("r", input));
    let route = if route.is_empty() { "r" } else { route };

    let read = route_counters(text, route, None);
    assert_eq!(route_counters(text, route, None), read, "parsing is not deterministic");
    match &read {
        Ok(Some(instance)) => well_formed(instance),
        Ok(None) => {}
        Err(ParseError::Malformed { line, message }) => {
            let lines = text.lines().count();
            assert!(
                (1..=lines).contains(line),
                "error on line {line} of a {lines}-line text: {message}"
            );
            assert!(!message.is_empty(), "an error without a message");
        }
    }

    // Reading only one users epoch changes nothing but the arms' users, and never adds any.
    let one_epoch = route_counters(text, route, Some("e"));
    match (&read, &one_epoch) {
        (Ok(Some(all)), Ok(Some(one))) => {
            for (name, arm) in &one.counters.arms {
                assert!(
                    arm.users <= all.counters.arms[name].users,
                    "{name}: more users of one epoch than of all"
                );
            }
            let without_users = |i: &InstanceCounters| {
                let mut i = i.clone();
                i.counters.arms.values_mut().for_each(|arm| arm.users = 0.0);
                i
            };
            assert_eq!(
                without_users(one),
                without_users(all),
                "an epoch changed more than users"
            );
        }
        _ => assert_eq!(one_epoch, read, "an epoch changed whether the text reads"),
    }

    let crlf = text.replace('\n', "\r\n");
    assert_eq!(
        route_counters(&crlf, route, None),
        read,
        "CRLF line ends read differently"
    );

    // A comment after the first line shifts later line numbers by one and changes nothing else.
    if let Some((first, rest)) = text.split_once('\n') {
        let commented = format!("{first}\n# HELP weir_fuzz a comment\n{rest}");
        let shifted = match &read {
            Err(ParseError::Malformed { line, message }) if *line > 1 => Err(ParseError::Malformed {
                line: line + 1,
                message: message.clone(),
            }),
            other => other.clone(),
        };
        assert_eq!(
            route_counters(&commented, route, None),
            shifted,
            "a comment line changed the reading"
        );
    }
});

fn well_formed(instance: &InstanceCounters) {
    if let Some(started) = instance.started_at {
        assert!(started.is_finite(), "start time {started}");
    }
    let counters = &instance.counters;
    for (side, name) in [(&counters.stable, "stable"), (&counters.candidate, "candidate")] {
        parts_of_requests(side, name);
        buckets_well_formed(&side.latency, name);
        buckets_well_formed(&side.first_byte, name);
    }
}

/// Errors and cancellations are counted from the request counter's own samples, by code
/// class, so neither can exceed the requests, and together they cannot either (the classes are
/// disjoint), unless the sum saturated.
fn parts_of_requests(side: &SideCounters, name: &str) {
    assert!(side.errors <= side.requests, "{name}: {side:?}");
    assert!(side.cancelled <= side.requests, "{name}: {side:?}");
    if side.requests < u64::MAX {
        assert!(
            u128::from(side.errors) + u128::from(side.cancelled) <= u128::from(side.requests),
            "{name}: {side:?}"
        );
    }
}

fn buckets_well_formed(buckets: &Buckets, name: &str) {
    assert_eq!(
        buckets.bounds.len(),
        buckets.cumulative.len(),
        "{name}: one count per bound"
    );
    assert!(buckets.bounds.iter().all(|b| !b.is_nan()), "{name}: NaN bound");
    assert!(
        buckets.bounds.windows(2).all(|w| w[0] <= w[1]),
        "{name}: bounds not ascending: {:?}",
        buckets.bounds
    );
    assert!(
        buckets.cumulative.windows(2).all(|w| w[0] <= w[1]),
        "{name}: counts fall: {:?}",
        buckets.cumulative
    );
}
