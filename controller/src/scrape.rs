//! Reads weir-proxy's Prometheus text into a route's [`Counters`]. The same parser serves the
//! demo and the cluster (where each proxy pod is scraped and the results summed). Pure: text in,
//! counters out.

use crate::judge::{Buckets, Counters, SideCounters};

/// Why a scrape could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// A line that is not Prometheus text.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The text holds no weir request counters for the route.
    #[error("no weir_requests_total samples for route {0:?}")]
    NoData(String),
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

/// The counters of `route` in one proxy's exposition.
pub fn route_counters(text: &str, route: &str) -> Result<Counters, ScrapeError> {
    let mut counters = Counters::default();
    let mut seen = false;
    let mut latency: [Vec<(f64, u64)>; 2] = Default::default();
    let mut first_byte: [Vec<(f64, u64)>; 2] = Default::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|message| ScrapeError::Malformed { line: i + 1, message })?;
        if !sample.name.starts_with("weir_") || sample.label("route") != Some(route) {
            continue;
        }
        let side = match sample.label("side") {
            Some("stable") => 0,
            Some("candidate") => 1,
            _ => continue,
        };
        let count = if sample.value.is_finite() && sample.value >= 0.0 {
            sample.value as u64
        } else {
            0
        };
        let target = if side == 0 {
            &mut counters.stable
        } else {
            &mut counters.candidate
        };
        match sample.name {
            "weir_requests_total" => {
                seen = true;
                target.requests += count;
                if matches!(sample.label("code"), Some("5xx" | "grpc_error" | "error")) {
                    target.errors += count;
                }
            }
            "weir_request_duration_seconds_bucket" | "weir_response_first_byte_seconds_bucket" => {
                let le = sample.label("le").ok_or_else(|| ScrapeError::Malformed {
                    line: i + 1,
                    message: "bucket without le".into(),
                })?;
                let bound = parse_value(le).map_err(|message| ScrapeError::Malformed { line: i + 1, message })?;
                let list = if sample.name.starts_with("weir_request_duration") {
                    &mut latency[side]
                } else {
                    &mut first_byte[side]
                };
                list.push((bound, count));
            }
            _ => {}
        }
    }
    if !seen {
        return Err(ScrapeError::NoData(route.to_owned()));
    }
    let to_buckets = |mut list: Vec<(f64, u64)>| {
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets {
            bounds: list.iter().map(|(b, _)| *b).collect(),
            cumulative: list.iter().map(|(_, c)| *c).collect(),
        }
    };
    let [ls, lc] = latency;
    let [fs, fc] = first_byte;
    counters.stable.latency = to_buckets(ls);
    counters.candidate.latency = to_buckets(lc);
    counters.stable.first_byte = to_buckets(fs);
    counters.candidate.first_byte = to_buckets(fc);
    Ok(counters)
}

/// Adds the counters of several proxy replicas.
pub fn sum<'a>(replicas: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut total = Counters {
        stable: SideCounters::default(),
        candidate: SideCounters::default(),
    };
    for c in replicas {
        total.stable.add(&c.stable);
        total.candidate.add(&c.candidate);
    }
    total
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
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name,
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("{text:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP weir_requests_total Requests.
# TYPE weir_requests_total counter
weir_requests_total{route="r",side="stable",code="2xx"} 990
weir_requests_total{route="r",side="stable",code="5xx"} 10
weir_requests_total{route="r",side="candidate",code="2xx"} 45
weir_requests_total{route="r",side="candidate",code="error"} 5
weir_requests_total{route="other",side="candidate",code="5xx"} 500
weir_requests_total{route="r",side="mirror",code="5xx"} 7
weir_request_duration_seconds_bucket{route="r",side="stable",le="0.1"} 900
weir_request_duration_seconds_bucket{route="r",side="stable",le="+Inf"} 1000
weir_request_duration_seconds_bucket{route="r",side="stable",le="0.05"} 500
weir_response_first_byte_seconds_bucket{route="r",side="candidate",le="+Inf"} 50
weir_request_duration_seconds_sum{route="r",side="stable"} 42.5
"#;

    #[test]
    fn counters_of_one_route_are_read_and_buckets_sorted() {
        let c = route_counters(TEXT, "r").expect("parses");
        assert_eq!((c.stable.requests, c.stable.errors), (1000, 10));
        assert_eq!((c.candidate.requests, c.candidate.errors), (50, 5));
        assert_eq!(c.stable.latency.bounds, vec![0.05, 0.1, f64::INFINITY]);
        assert_eq!(c.stable.latency.cumulative, vec![500, 900, 1000]);
        assert_eq!(c.candidate.first_byte.total(), 50);
    }

    #[test]
    fn a_route_without_samples_is_no_data() {
        assert_eq!(
            route_counters(TEXT, "missing"),
            Err(ScrapeError::NoData("missing".into()))
        );
    }

    #[test]
    fn garbage_is_rejected_with_its_line() {
        let err = route_counters("<html>oops</html>\n", "r").expect_err("garbage");
        assert!(matches!(err, ScrapeError::Malformed { line: 1, .. }), "{err}");
        let err = route_counters("weir_requests_total{route=\"r\" 5\n", "r").expect_err("garbage");
        assert!(matches!(err, ScrapeError::Malformed { line: 1, .. }), "{err}");
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let s = parse_line(r#"m{a="x\"y",b="z"} 1 1700000000"#).expect("parses");
        assert_eq!(s.labels, vec![("a", "x\"y".to_string()), ("b", "z".to_string())]);
        assert_eq!(s.value, 1.0);
    }

    #[test]
    fn replicas_add_up() {
        let one = route_counters(TEXT, "r").expect("parses");
        let both = sum([&one, &one]);
        assert_eq!(both.stable.requests, 2000);
        assert_eq!(both.stable.latency.cumulative, vec![1000, 1800, 2000]);
    }
}
