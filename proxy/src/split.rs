//! Which side of a route a request goes to: overrides, then sticky hash, then exact weight.
//! A route splits two ways (stable and candidate, by one weight) or N ways (named variants,
//! one weight each).
//!
//! Pure policy: no sockets, no clocks, no globals. The caller hands in the request's headers
//! and, for weight-decided requests, a sequence number it drew from the route's counter.

use std::fmt;

use http::HeaderMap;
use http::header::{COOKIE, HeaderName};
use serde::{Deserialize, Serialize};

/// Total number of basis points: a weight of `BASIS_POINTS` sends everything to the candidate.
pub const BASIS_POINTS: u16 = 10_000;

/// Most variants an N-way route splits between.
pub const MAX_VARIANTS: usize = 8;

/// The version of a service a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The version serving today.
    Stable,
    /// The version under rollout.
    Candidate,
    /// The variant at this index of an N-way route (its name is the route's to give).
    Variant(u8),
}

impl Side {
    /// The lowercase name used in headers, metrics and config; a variant's name is its
    /// route's, so here it is only `variant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Candidate => "candidate",
            Side::Variant(_) => "variant",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Variant(index) => write!(f, "variant {index}"),
            side => f.write_str(side.as_str()),
        }
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
    /// The variants of an N-way route; `None` on a stable/candidate route (whose `weight`
    /// then decides).
    pub variants: Option<Variants>,
}

/// One variant of an N-way split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantWeight {
    /// The variant's name: salts its sticky hash, so users stay put when variants are
    /// reordered, and only a removed variant's users move.
    pub name: String,
    /// Its share in basis points; the shares of a route sum to 10000.
    pub weight: Weight,
}

impl SplitPolicy {
    /// Decides the side of one request. `next_sequence` is called only when the weight decides,
    /// so that overrides and sticky requests do not disturb the exactness of the weight split.
    pub fn decide(&self, headers: &HeaderMap, next_sequence: impl FnOnce() -> u64) -> (Side, Reason) {
        let (side, reason, _) = self.decide_user(headers, next_sequence);
        (side, reason)
    }

    /// As [`SplitPolicy::decide`], with the [`sticky_hash`] of the request's sticky key (its
    /// user), whatever decided the side, when it carries one: the key is read and hashed once.
    pub fn decide_user(&self, headers: &HeaderMap, next_sequence: impl FnOnce() -> u64) -> (Side, Reason, Option<u64>) {
        let key = self.sticky.as_ref().and_then(|source| source.find(headers));
        let user = key.map(|key| sticky_hash(&self.route, key));
        for (index, rule) in self.overrides.iter().enumerate() {
            if rule.key.find(headers) == Some(rule.equals.as_bytes()) {
                return (rule.side, Reason::Override(index), user);
            }
        }
        let (side, reason) = match (&self.variants, key, user) {
            (None, Some(_), Some(hash)) => (bucket_side(bucket_of(hash), self.weight), Reason::Sticky),
            (None, _, _) => (weighted_side(next_sequence(), self.weight), Reason::Weight),
            (Some(variants), Some(key), _) => (
                Side::Variant(sticky_variant(&self.route, key, variants.list()) as u8),
                Reason::Sticky,
            ),
            // At most MAX_VARIANTS (8): validation refuses more.
            (Some(variants), None, _) => (Side::Variant(variants.weighted(next_sequence()) as u8), Reason::Weight),
        };
        (side, reason, user)
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

/// The weight split of an N-way route: which variant each of 10000 weight-decided requests
/// in a row goes to, the pattern repeating after that.
///
/// Built earliest deadline first: request `t` (from 1) goes, among the variants still behind
/// their share (`served * 10000 < t * weight`), to the one whose next request is due
/// soonest (`(served + 1) / weight` smallest). After 10000 requests every variant has been
/// served exactly its weight, so the pattern repeats seamlessly and any 10000 consecutive
/// requests hold each variant's weight exactly. No variant is ever a whole request ahead of
/// or behind its share (`t * weight / 10000`) on any prefix (a property test checks it), so
/// any window holds each within 2 of its share, spread rather than bunched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variants {
    list: Vec<VariantWeight>,
    /// The variant index of each position in the 10000-request pattern.
    schedule: std::sync::Arc<[u8]>,
}

impl Variants {
    /// The split of `list`, whose weights sum to 10000 and which holds 1 to
    /// [`MAX_VARIANTS`] variants (validation checks both).
    pub fn new(list: Vec<VariantWeight>) -> Variants {
        let weights: Vec<u64> = list.iter().map(|v| u64::from(v.weight.basis_points())).collect();
        let total = u64::from(BASIS_POINTS);
        let mut served = vec![0u64; weights.len()];
        let schedule = (1..=total)
            .map(|t| {
                let mut best: Option<usize> = None;
                for (i, &w) in weights.iter().enumerate() {
                    if served[i] * total >= t * w {
                        continue;
                    }
                    // Due sooner: (served_i + 1) / w_i < (served_b + 1) / w_b.
                    if best.is_none_or(|b| (served[i] + 1) * weights[b] < (served[b] + 1) * w) {
                        best = Some(i);
                    }
                }
                // Some variant is always behind: the shares of t requests sum to t, and only
                // t - 1 have been served. (Weights that do not sum to 10000 fall back to 0.)
                let chosen = best.unwrap_or(0);
                served[chosen] += 1;
                chosen as u8
            })
            .collect();
        Variants { list, schedule }
    }

    /// The variants in config order.
    pub fn list(&self) -> &[VariantWeight] {
        &self.list
    }

    /// The variant of the weight-decided request with sequence number `sequence`.
    pub fn weighted(&self, sequence: u64) -> usize {
        usize::from(self.schedule[(sequence % u64::from(BASIS_POINTS)) as usize])
    }
}

/// The variant of a sticky key on an N-way route, by weighted rendezvous hashing: each
/// variant scores the key `w / -ln(u)`, `u` uniform in (0, 1) from a hash of the route, the
/// variant's name and the key, and the highest score wins. A variant wins with probability
/// exactly its share; raising one variant's weight raises only its score, and lowering
/// another's lowers only that one's, so a user only ever moves into the variant that grew.
pub fn sticky_variant(route: &str, key: &[u8], variants: &[VariantWeight]) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, variant) in variants.iter().enumerate() {
        let w = f64::from(variant.weight.basis_points());
        if w == 0.0 {
            continue;
        }
        let hash = hash_parts(&[route.as_bytes(), variant.name.as_bytes(), key]);
        // 53 random bits, centred in their interval so u is never 0 or 1.
        let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = w / -u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// The 64-bit hash of a sticky key on a route: the one its bucket comes from, and the one
/// distinct users are counted by.
pub fn sticky_hash(route: &str, key: &[u8]) -> u64 {
    hash_parts(&[route.as_bytes(), key])
}

/// The bucket (0..10000) of a sticky key on a route. Stable across processes and versions.
pub fn sticky_bucket(route: &str, key: &[u8]) -> u16 {
    bucket_of(sticky_hash(route, key))
}

/// The bucket (0..10000) of a [`sticky_hash`].
fn bucket_of(hash: u64) -> u16 {
    // Multiply-shift reduction: unbiased enough for 10000 buckets and free of a division.
    ((u128::from(hash) * u128::from(BASIS_POINTS)) >> 64) as u16
}

/// FNV-1a over the parts, each but the last followed by a 0xff separator (a byte no UTF-8
/// name holds), then the murmur3 finaliser.
fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        let separator: &[u8] = if i < last { &[0xff] } else { &[] };
        for &byte in part.iter().chain(separator) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }
    // FNV alone leaves similar keys ("user-1", "user-2") correlated in the low bits; the
    // murmur3 finaliser spreads every input bit over the whole word before we reduce it.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

/// The side of a sticky key: candidate when its bucket is below the weight, so raising the
/// weight only ever moves users from stable to candidate.
pub fn sticky_side(route: &str, key: &[u8], weight: Weight) -> Side {
    bucket_side(sticky_bucket(route, key), weight)
}

fn bucket_side(bucket: u16, weight: Weight) -> Side {
    if bucket < weight.0 {
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
            variants: None,
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

    fn variant_list(weights: &[u16]) -> Vec<VariantWeight> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| VariantWeight {
                name: format!("v{i}"),
                weight: weight(w),
            })
            .collect()
    }

    fn variants(weights: &[u16]) -> Variants {
        Variants::new(variant_list(weights))
    }

    /// Up to 8 weights summing to 10000, zeros allowed.
    fn weight_sets() -> impl Strategy<Value = Vec<u16>> {
        proptest::collection::vec(0u16..=10_000, 1..8).prop_map(|cuts| {
            let mut cuts: Vec<u16> = cuts;
            cuts.sort_unstable();
            let mut previous = 0;
            let mut weights: Vec<u16> = cuts
                .iter()
                .map(|&c| {
                    let w = c - previous;
                    previous = c;
                    w
                })
                .collect();
            weights.push(10_000 - previous);
            weights
        })
    }

    fn variant_counts(range: std::ops::Range<u64>, vs: &Variants) -> Vec<u64> {
        let mut counts = vec![0; vs.list().len()];
        for n in range {
            counts[vs.weighted(n)] += 1;
        }
        counts
    }

    #[test]
    fn three_variants_split_exactly_and_evenly() {
        let vs = variants(&[5000, 3000, 2000]);
        assert_eq!(variant_counts(0..10_000, &vs), vec![5000, 3000, 2000]);
        // Spread: every run of 10 requests holds exactly 5, 3 and 2.
        for start in 0..1000 {
            assert_eq!(variant_counts(start * 10..start * 10 + 10, &vs), vec![5, 3, 2]);
        }
    }

    #[test]
    fn sticky_variants_follow_their_weights() {
        let vs = variants(&[5000, 3000, 2000]);
        let mut counts = [0u32; 3];
        for i in 0..100_000 {
            counts[sticky_variant("r", format!("user-{i}").as_bytes(), vs.list())] += 1;
        }
        for (count, expected) in counts.iter().zip([50_000, 30_000, 20_000]) {
            assert!(count.abs_diff(expected) < 800, "{counts:?}");
        }
    }

    #[test]
    fn an_n_way_policy_decides_variants_by_override_sticky_and_weight() {
        let mut p = policy(0);
        p.variants = Some(variants(&[0, 10_000, 0]));
        p.overrides[0].side = Side::Variant(2);
        let mut headers = HeaderMap::new();
        assert_eq!(p.decide(&headers, || 5), (Side::Variant(1), Reason::Weight));
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        assert_eq!(p.decide(&headers, never_called), (Side::Variant(1), Reason::Sticky));
        headers.insert("x-weir-side", HeaderValue::from_static("candidate"));
        assert_eq!(
            p.decide(&headers, never_called),
            (Side::Variant(2), Reason::Override(0))
        );
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
        fn any_ten_thousand_consecutive_requests_hold_each_variants_weight_exactly(weights in weight_sets(), start in 0u64..1_000_000_000) {
            let vs = variants(&weights);
            let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
            prop_assert_eq!(variant_counts(start..start + 10_000, &vs), expected);
        }

        #[test]
        fn no_variant_is_ever_a_whole_request_off_its_share(weights in weight_sets(), start in 0u64..1_000_000, len in 1u64..3_000) {
            let vs = variants(&weights);
            let mut counts = vec![0u64; weights.len()];
            for n in 0..10_000u64 {
                counts[vs.weighted(n)] += 1;
                for (got, &w) in counts.iter().zip(&weights) {
                    // In whole units: |got * 10000 - (n + 1) * w| < 10000.
                    let off = (*got * 10_000).abs_diff((n + 1) * u64::from(w));
                    prop_assert!(off < 10_000, "after {} requests: {got} for weight {w} of {weights:?}", n + 1);
                }
            }
            for (got, &w) in variant_counts(start..start + len, &vs).iter().zip(&weights) {
                let off = (*got * 10_000).abs_diff(len * u64::from(w));
                prop_assert!(off < 20_000, "{got} of {len} for weight {w} of {weights:?}");
            }
        }

        /// Growing one variant scales the others down by one factor (the only way to keep every
        /// other variant's users in place: with three or more variants, no assignment can keep
        /// them whichever others shrink). Weights here are chosen so the factor is exact.
        #[test]
        fn sticky_users_only_move_into_the_variant_that_grew(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            shares in proptest::collection::vec(0u16..=20, 1..8),
            grow in 0usize..8,
            scale in 1u16..=500,
            shrink_to in 0u16..500,
        ) {
            let total: u16 = shares.iter().sum();
            prop_assume!(total > 0);
            let scale = scale.min(10_000 / total);
            let shrunk = shrink_to % scale;
            let at = |s: u16| {
                let mut weights: Vec<u16> = shares.iter().map(|&a| a * s).collect();
                let grow = grow % (weights.len() + 1);
                weights.insert(grow, 10_000 - total * s);
                weights
            };
            let grow = grow % (shares.len() + 1);
            let before = sticky_variant("route", &key, &variant_list(&at(scale)));
            let after = sticky_variant("route", &key, &variant_list(&at(shrunk)));
            prop_assert!(after == before || after == grow, "moved from {before} to {after}, not into {grow}");
        }

        #[test]
        fn weight_zero_variants_get_nothing(weights in weight_sets(), n in 0u64..1_000_000_000, key in proptest::collection::vec(any::<u8>(), 0..20)) {
            let vs = variants(&weights);
            prop_assert!(weights[vs.weighted(n)] > 0);
            prop_assert!(weights[sticky_variant("r", &key, vs.list())] > 0);
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
