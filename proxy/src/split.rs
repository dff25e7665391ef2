//! Which side of a route a request goes to: overrides, then sticky hash, then exact weight.
//!
//! Pure policy: no sockets, no clocks, no globals. The caller hands in the request's headers
//! and, for weight-decided requests, a sequence number it drew from the route's counter.

use std::fmt;

use http::HeaderMap;
use http::header::{COOKIE, HeaderName};
use serde::{Deserialize, Serialize};

/// Total number of basis points: a weight of `BASIS_POINTS` sends everything to the candidate.
pub const BASIS_POINTS: u16 = 10_000;

/// The two versions of a service a route splits between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The version serving today.
    Stable,
    /// The version under rollout.
    Candidate,
}

impl Side {
    /// The lowercase name used in headers, metrics and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Candidate => "candidate",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Share of traffic for the candidate, in basis points (0..=10000). 500 is 5.00 %.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Weight(u16);

impl Weight {
    /// No traffic for the candidate.
    pub const ZERO: Weight = Weight(0);
    /// All traffic for the candidate.
    pub const FULL: Weight = Weight(BASIS_POINTS);

    /// A weight, or `None` when `basis_points` is over 10000.
    pub fn new(basis_points: u16) -> Option<Weight> {
        (basis_points <= BASIS_POINTS).then_some(Weight(basis_points))
    }

    /// The weight in basis points.
    pub fn basis_points(self) -> u16 {
        self.0
    }
}

/// Where a request's side came from; a split decision is always one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The override at this index in the route's list matched.
    Override(usize),
    /// The sticky key was present and hashed into a bucket.
    Sticky,
    /// Neither applied: the weight counter decided.
    Weight,
}

/// Where an override or sticky key is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A request header, by name.
    Header(HeaderName),
    /// A cookie in the `Cookie` header(s), by name.
    Cookie(String),
}

impl KeySource {
    /// The first value of this key in the request, if any.
    pub fn find<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        match self {
            KeySource::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            KeySource::Cookie(name) => find_cookie(headers, name.as_bytes()),
        }
    }
}

/// A rule that pins matching requests to one side, before stickiness and weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// The header or cookie to read.
    pub key: KeySource,
    /// The value it must equal, byte for byte.
    pub equals: String,
    /// The side matching requests go to.
    pub side: Side,
}

/// The split policy of one route, compiled from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// The route's name: salts the sticky hash so one user is bucketed independently per route.
    pub route: String,
    /// Candidate share for weight- and sticky-decided requests.
    pub weight: Weight,
    /// First match wins.
    pub overrides: Vec<Override>,
    /// Key for sticky assignment, if any.
    pub sticky: Option<KeySource>,
}

impl SplitPolicy {
    /// Decides the side of one request. `next_sequence` is called only when the weight decides,
    /// so that overrides and sticky requests do not disturb the exactness of the weight split.
    pub fn decide(&self, headers: &HeaderMap, next_sequence: impl FnOnce() -> u64) -> (Side, Reason) {
        for (index, rule) in self.overrides.iter().enumerate() {
            if rule.key.find(headers) == Some(rule.equals.as_bytes()) {
                return (rule.side, Reason::Override(index));
            }
        }
        if let Some(key) = self.sticky.as_ref().and_then(|source| source.find(headers)) {
            return (sticky_side(&self.route, key, self.weight), Reason::Sticky);
        }
        (weighted_side(next_sequence(), self.weight), Reason::Weight)
    }
}

/// The side of the weight-decided request with sequence number `sequence` (0, 1, 2, ...).
///
/// Request `n` goes to the candidate exactly when `floor((n + 1) * w / 10000)` steps past
/// `floor(n * w / 10000)`. The candidate's count over requests `a..a + 10000` is therefore
/// `floor((a + 10000) w / 10000) - floor(a w / 10000)`, which is exactly `w`; over any other
/// window it is within one of `len * w / 10000`, and the candidate requests are spread evenly
/// rather than bunched.
pub fn weighted_side(sequence: u64, weight: Weight) -> Side {
    let w = u128::from(weight.0);
    let n = u128::from(sequence);
    let total = u128::from(BASIS_POINTS);
    if (n + 1) * w / total > n * w / total {
        Side::Candidate
    } else {
        Side::Stable
    }
}

/// The bucket (0..10000) of a sticky key on a route. Stable across processes and versions.
pub fn sticky_bucket(route: &str, key: &[u8]) -> u16 {
    let mut hash = FNV_OFFSET;
    for &byte in route.as_bytes().iter().chain(&[0xff]).chain(key) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    // FNV alone leaves similar keys ("user-1", "user-2") correlated in the low bits; the
    // murmur3 finaliser spreads every input bit over the whole word before we reduce it.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    // Multiply-shift reduction: unbiased enough for 10000 buckets and free of a division.
    ((u128::from(hash) * u128::from(BASIS_POINTS)) >> 64) as u16
}

/// The side of a sticky key: candidate when its bucket is below the weight, so raising the
/// weight only ever moves users from stable to candidate.
pub fn sticky_side(route: &str, key: &[u8], weight: Weight) -> Side {
    if sticky_bucket(route, key) < weight.0 {
        Side::Candidate
    } else {
        Side::Stable
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The value of cookie `name` in the request's `Cookie` header(s), without allocating.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &[u8]) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name).then(|| trim_quotes(pair[eq + 1..].trim_ascii()))
        })
    })
}

fn trim_quotes(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn weight(bp: u16) -> Weight {
        Weight::new(bp).expect("test weights are in range")
    }

    fn candidates_in(range: std::ops::Range<u64>, w: Weight) -> u64 {
        range.filter(|&n| weighted_side(n, w) == Side::Candidate).count() as u64
    }

    #[test]
    fn weight_zero_sends_everything_to_stable() {
        assert_eq!(candidates_in(0..20_000, Weight::ZERO), 0);
    }

    #[test]
    fn full_weight_sends_everything_to_candidate() {
        assert_eq!(candidates_in(0..20_000, Weight::FULL), 20_000);
    }

    #[test]
    fn half_a_percent_is_exactly_fifty_in_ten_thousand() {
        assert_eq!(candidates_in(0..10_000, weight(50)), 50);
        assert_eq!(candidates_in(0..10_000, weight(2500)), 2500);
        assert_eq!(candidates_in(0..10_000, weight(1)), 1);
    }

    #[test]
    fn candidate_requests_are_spread_not_bunched() {
        // At 25 % every run of four requests holds exactly one candidate.
        for start in 0..100 {
            assert_eq!(candidates_in(start * 4..start * 4 + 4, weight(2500)), 1);
        }
    }

    #[test]
    fn weight_over_ten_thousand_is_rejected() {
        assert_eq!(Weight::new(10_001), None);
        assert_eq!(Weight::new(10_000), Some(Weight::FULL));
    }

    #[test]
    fn cookie_is_found_among_others_and_quotes_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; beta=\"1\" ; uid=u-7"));
        assert_eq!(find_cookie(&headers, b"beta"), Some(&b"1"[..]));
        assert_eq!(find_cookie(&headers, b"uid"), Some(&b"u-7"[..]));
        assert_eq!(find_cookie(&headers, b"bet"), None);
        headers.append(COOKIE, HeaderValue::from_static("late=yes"));
        assert_eq!(find_cookie(&headers, b"late"), Some(&b"yes"[..]));
    }

    fn policy(w: u16) -> SplitPolicy {
        SplitPolicy {
            route: "r".into(),
            weight: weight(w),
            overrides: vec![
                Override {
                    key: KeySource::Header(HeaderName::from_static("x-weir-side")),
                    equals: "candidate".into(),
                    side: Side::Candidate,
                },
                Override {
                    key: KeySource::Cookie("beta".into()),
                    equals: "0".into(),
                    side: Side::Stable,
                },
            ],
            sticky: Some(KeySource::Header(HeaderName::from_static("x-user-id"))),
        }
    }

    fn never_called() -> u64 {
        panic!("weight sequence must not be drawn for override or sticky requests")
    }

    #[test]
    fn override_beats_sticky_beats_weight() {
        let p = policy(0);
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        assert_eq!(p.decide(&headers, never_called), (Side::Stable, Reason::Sticky));
        headers.insert("x-weir-side", HeaderValue::from_static("candidate"));
        assert_eq!(p.decide(&headers, never_called), (Side::Candidate, Reason::Override(0)));

        let p = policy(10_000);
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        assert_eq!(p.decide(&headers, never_called), (Side::Candidate, Reason::Sticky));
        headers.insert(COOKIE, HeaderValue::from_static("beta=0"));
        assert_eq!(p.decide(&headers, never_called), (Side::Stable, Reason::Override(1)));

        let headers = HeaderMap::new();
        assert_eq!(p.decide(&headers, || 7), (Side::Candidate, Reason::Weight));
    }

    #[test]
    fn override_value_must_match_exactly() {
        let p = policy(0);
        let mut headers = HeaderMap::new();
        headers.insert("x-weir-side", HeaderValue::from_static("Candidate"));
        assert_eq!(p.decide(&headers, || 0), (Side::Stable, Reason::Weight));
    }

    #[test]
    fn sticky_buckets_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            counts[usize::from(sticky_bucket("r", format!("user-{i}").as_bytes()) / 1000)] += 1;
        }
        for c in counts {
            assert!(
                (9_400..=10_600).contains(&c),
                "bucket decile count {c} is far from 10000"
            );
        }
    }

    #[test]
    fn sticky_hash_is_salted_by_route() {
        let same = (0..1000)
            .filter(|i| {
                let key = format!("user-{i}");
                sticky_bucket("a", key.as_bytes()) == sticky_bucket("b", key.as_bytes())
            })
            .count();
        assert!(same < 10, "{same} of 1000 users share a bucket on two routes");
    }

    proptest! {
        #[test]
        fn any_ten_thousand_consecutive_requests_hold_exactly_weight(w in 0u16..=10_000, start in 0u64..1_000_000_000) {
            prop_assert_eq!(candidates_in(start..start + 10_000, weight(w)), u64::from(w));
        }

        #[test]
        fn any_window_is_within_one_of_its_share(w in 0u16..=10_000, start in 0u64..1_000_000, len in 1u64..5_000) {
            let got = candidates_in(start..start + len, weight(w)) as f64;
            let ideal = len as f64 * f64::from(w) / 10_000.0;
            prop_assert!((got - ideal).abs() <= 1.0, "got {got}, ideal {ideal}");
        }

        #[test]
        fn sticky_users_never_move_back_as_weight_grows(key in proptest::collection::vec(any::<u8>(), 0..40), a in 0u16..=10_000, b in 0u16..=10_000) {
            let (low, high) = (a.min(b), a.max(b));
            if sticky_side("route", &key, weight(low)) == Side::Candidate {
                prop_assert_eq!(sticky_side("route", &key, weight(high)), Side::Candidate);
            }
        }

        #[test]
        fn overrides_win_whatever_the_weight(w in 0u16..=10_000, user in "[a-z0-9]{1,12}") {
            let p = policy(w);
            let mut headers = HeaderMap::new();
            headers.insert("x-user-id", HeaderValue::from_str(&user).expect("alphanumeric"));
            headers.insert("x-weir-side", HeaderValue::from_static("candidate"));
            prop_assert_eq!(p.decide(&headers, never_called), (Side::Candidate, Reason::Override(0)));
        }
    }
}
