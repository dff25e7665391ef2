//! Reads one proxy's exposition (Prometheus text or OpenMetrics) into the route's
//! [`InstanceCounters`]. Pure: text in, counters out. The metric names, label names and code
//! classes are weir-proxy's own constants, so the two sides of the contract cannot drift.
//!
//! Hand-written rather than a crate: of the Rust parsers of the text format, the maintained one
//! reads only Prometheus' format (not OpenMetrics' `# EOF`, exemplars or `_created`), and the
//! one that reads both says its API changes as its author needs. This one reads both, for the
//! few weir series the controller needs, and rejects lines it cannot read with their number.

use weir_proxy::metrics::names;

use super::series::{Samples, parse_value};
use crate::counters::InstanceCounters;

/// Why an exposition could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line that is not Prometheus text.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One sample: metric name, labels, value.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// The route's counters in one proxy's exposition, or `None` when it has none of the route's
/// request counters (a proxy that has not loaded the route). Distinct-user counts are read only
/// of `users_epoch`, when given.
pub fn route_counters(
    text: &str,
    route: &str,
    users_epoch: Option<&str>,
) -> Result<Option<InstanceCounters>, ParseError> {
    let mut samples = Samples::counting_users_of(users_epoch);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |message: String| ParseError::Malformed { line: i + 1, message };
        let sample = parse_line(line).map_err(malformed)?;
        // The start time has no route label: it is the whole process's.
        let ours = sample.name == names::START_TIME
            || (sample.name.starts_with("weir_") && sample.label(names::label::ROUTE) == Some(route));
        if ours {
            samples
                .add(sample.name, |k| sample.label(k), sample.value)
                .map_err(|e| malformed(e.to_string()))?;
        }
    }
    Ok(samples.has_requests().then(|| samples.finish()))
}

fn parse_line(line: &str) -> Result<Sample<'_>, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let consumed = loop {
            while chars.next_if(|(_, c)| *c == ' ' || *c == ',').is_some() {}
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                break start + 1;
            }
            let mut key_end = start;
            while let Some((i, c)) = chars.next_if(|(_, c)| *c != '=') {
                key_end = i + c.len_utf8();
            }
            let key = after[start..key_end].trim();
            if chars.next().map(|(_, c)| c) != Some('=') || chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((key, value));
        };
        rest = &after[consumed..];
    }
    // The value, then optionally a timestamp and (OpenMetrics) an exemplar after `#`.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name,
        labels,
        value: parse_value(value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP weir_requests_total Requests.
# TYPE weir_requests_total counter
weir_proxy_start_time_seconds 1764626400.25
weir_requests_total{route="r",side="stable",code="2xx"} 990
weir_requests_total{route="r",side="stable",code="5xx"} 10
weir_requests_total{route="r",side="candidate",code="2xx"} 45
weir_requests_total{route="r",side="candidate",code="error"} 5
weir_requests_total{route="r",side="candidate",code="cancelled"} 3
weir_requests_total{route="other",side="candidate",code="5xx"} 500
weir_requests_total{route="r",side="mirror",code="5xx"} 7
weir_fail_fast_trips_total{route="r"} 1
weir_fail_fast_trips_total{route="other"} 4
weir_candidate_weight_basis_points{route="r"} 2500
weir_request_duration_seconds_bucket{route="r",side="stable",le="0.1"} 900
weir_request_duration_seconds_bucket{route="r",side="stable",le="+Inf"} 1000
weir_request_duration_seconds_bucket{route="r",side="stable",le="0.05"} 500
weir_response_first_byte_seconds_bucket{route="r",side="candidate",le="+Inf"} 50
weir_request_duration_seconds_sum{route="r",side="stable"} 42.5
"#;

    #[test]
    fn counters_of_one_route_are_read_and_buckets_sorted() {
        let i = route_counters(TEXT, "r", None)
            .expect("parses")
            .expect("the route has samples");
        let c = &i.counters;
        assert_eq!(i.started_at, Some(1764626400.25));
        assert_eq!((c.stable.requests, c.stable.errors), (1000, 10));
        assert_eq!(
            (c.candidate.requests, c.candidate.errors, c.candidate.cancelled),
            (53, 5, 3)
        );
        assert_eq!(c.fail_fast_trips, 1);
        assert_eq!(i.weight, Some(2500));
        assert_eq!(c.stable.latency.bounds, vec![0.05, 0.1, f64::INFINITY]);
        assert_eq!(c.stable.latency.cumulative, vec![500, 900, 1000]);
        assert_eq!(c.candidate.first_byte.total(), 50);
    }

    #[test]
    fn a_route_without_samples_is_none() {
        assert_eq!(route_counters(TEXT, "missing", None), Ok(None));
    }

    #[test]
    fn garbage_is_rejected_with_its_line() {
        let err = route_counters("<html>oops</html>\n", "r", None).expect_err("garbage");
        assert!(matches!(err, ParseError::Malformed { line: 1, .. }), "{err}");
        let err = route_counters("weir_requests_total{route=\"r\" 5\n", "r", None).expect_err("garbage");
        assert!(matches!(err, ParseError::Malformed { line: 1, .. }), "{err}");
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let s = parse_line(r#"m{a="x\"y",b="z"} 1 1700000000"#).expect("parses");
        assert_eq!(s.labels, vec![("a", "x\"y".to_string()), ("b", "z".to_string())]);
        assert_eq!(s.value, 1.0);
    }

    #[test]
    fn openmetrics_with_exemplars_created_and_eof_reads_the_same() {
        let text = "# TYPE weir_requests counter\n\
                    weir_requests_total{route=\"r\",side=\"stable\",code=\"2xx\"} 7 # {trace_id=\"abc\"} 1.0 1700000000.1\n\
                    weir_requests_created{route=\"r\",side=\"stable\",code=\"2xx\"} 1700000000.0\n\
                    # EOF\n";
        let i = route_counters(text, "r", None).expect("parses").expect("samples");
        assert_eq!(i.counters.stable.requests, 7);
    }

    /// An arm's distinct users are read only of the experiment's epoch: a proxy still counting
    /// the last experiment's users must not lend them to this one.
    #[test]
    fn distinct_users_of_another_epoch_are_not_read() {
        use prometheus_client::registry::Registry;
        use weir_proxy::metrics::CodeClass;
        use weir_proxy::split::Side;
        let mut registry = Registry::default();
        let metrics = weir_proxy::metrics::ProxyMetrics::register(&mut registry);
        let route = metrics.route_with_variants("r", &["control", "v"]);
        let arm = route.side(Side::Variant(1));
        arm.export_users("2026-12-03T02:33:53.123456Z");
        arm.count(CodeClass::Success);
        for user in 0..10u64 {
            arm.user(user.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let users = |epoch: Option<&str>| {
            route_counters(&text, "r", epoch)
                .expect("parses")
                .expect("samples")
                .counters
                .arms["v"]
                .users
        };
        assert_eq!(users(Some("2026-12-03T02:33:53.123456Z")), 10.0, "{text}");
        assert_eq!(users(None), 10.0);
        assert_eq!(users(Some("2026-12-03T02:40:00Z")), 0.0, "the last experiment's");
    }

    /// The real proxy's registry, in both formats, parses to what was counted.
    #[test]
    fn the_proxys_own_exposition_is_read_in_both_formats() {
        use prometheus_client::registry::Registry;
        use weir_proxy::metrics::CodeClass;
        use weir_proxy::split::Side;
        let mut registry = Registry::default();
        let metrics = weir_proxy::metrics::ProxyMetrics::register(&mut registry);
        let route = metrics.route("r");
        route.side(Side::Stable).count(CodeClass::Success);
        route.side(Side::Candidate).count(CodeClass::Cancelled);
        route.side(Side::Candidate).count(CodeClass::Error);
        route.side(Side::Candidate).observe_duration(0.02);
        route.fail_fast_trip();
        let mut openmetrics = String::new();
        prometheus_client::encoding::text::encode(&mut openmetrics, &registry).expect("encodes");
        let prometheus = weir_proxy::admin::openmetrics_to_prometheus(&openmetrics);
        for text in [openmetrics, prometheus] {
            let i = route_counters(&text, "r", None).expect("parses").expect("samples");
            let c = &i.counters;
            assert_eq!((c.stable.requests, c.candidate.requests), (1, 2), "{text}");
            assert_eq!(
                (c.candidate.errors, c.candidate.cancelled, c.fail_fast_trips),
                (1, 1, 1)
            );
            assert_eq!(c.candidate.latency.total(), 1);
            assert!(i.started_at.is_some());
        }
    }
}
