//! The Prometheus source: PromQL over Prometheus' HTTP API (`/api/v1/query`). For the built-in
//! checks it reads every proxy instance's counters as last scraped, keeps them in the window
//! mark, and differences them per instance with counter resets handled, as `increase` does,
//! but exactly: `increase(...[w])` extrapolates to the window's edges, which scales every count
//! (and so the sequential test's likelihood ratio, inflating its error rate), and it drops what
//! happened between one window's last sample and the next one's first, a fail-fast trip
//! included. Custom checks run their own query.
//!
//! A query that fails, or returns nothing, leaves the analysis inconclusive with the query in
//! the reason; it never reads as zero.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use weir_proxy::metrics::names;

use super::series::{Samples, parse_value};
use super::unix_seconds;

use crate::counters::Snapshot;
use crate::decide::Reading;
use crate::ports::{BoxError, MetricsError, MetricsQuery};
use crate::status::{WindowMark, micro_time, system_time};

/// Longest one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>;

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    client: HttpsClient,
    base: String,
}

/// A query failed at Prometheus.
#[derive(Debug, thiserror::Error)]
enum QueryFailure {
    #[error("answered {status}: {message}")]
    Rejected { status: http::StatusCode, message: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered JSON that is not a Prometheus query result: {0}")]
    Shape(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

/// A query's result. A range vector or a string is not a number: its content is skipped.
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

impl Series {
    fn value(&self) -> f64 {
        parse_number(&self.value.1)
    }
}

fn parse_number(text: &str) -> f64 {
    parse_value(text).unwrap_or(f64::NAN)
}

impl PrometheusSource {
    /// A source querying the server at `url` (`http://` or `https://`, the system's roots).
    pub fn new(url: &str) -> Result<Self, std::io::Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(PrometheusSource {
            client: Client::builder(TokioExecutor::new()).build(https),
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    fn down(&self, source: BoxError) -> MetricsError {
        MetricsError::SourceDown {
            source_name: format!("Prometheus at {}", self.base),
            source,
            trips: Vec::new(),
        }
    }

    /// Runs one instant query at `at`.
    async fn query(&self, promql: &str, at: SystemTime) -> Result<Data, MetricsError> {
        let url = format!(
            "{}/api/v1/query?{}",
            self.base,
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", promql)
                .append_pair("time", &format!("{:.3}", unix_seconds(at)))
                .finish()
        );
        let uri: http::Uri = url.parse().map_err(|e| self.down(Box::new(e)))?;
        let fetch = async {
            let rsp = self.client.get(uri).await.map_err(|e| Box::new(e) as BoxError)?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| Box::new(e) as BoxError)?
                .to_bytes();
            let answer: Answer =
                serde_json::from_slice(&body).map_err(|e| Box::new(QueryFailure::Shape(e)) as BoxError)?;
            if !status.is_success() || answer.status != "success" {
                return Err(Box::new(QueryFailure::Rejected {
                    status,
                    message: answer
                        .error
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
                }) as BoxError);
            }
            answer.data.ok_or_else(|| {
                Box::new(QueryFailure::Rejected {
                    status,
                    message: "no data in the answer".into(),
                }) as BoxError
            })
        };
        tokio::time::timeout(QUERY_TIMEOUT, fetch)
            .await
            .map_err(|_| self.down(Box::new(QueryFailure::Timeout(QUERY_TIMEOUT))))?
            .map_err(|e| MetricsError::SourceDown {
                source_name: format!("Prometheus at {} for {promql:?}", self.base),
                source: e,
                trips: Vec::new(),
            })
    }

    /// A vector query's series; an empty answer is no data, naming the query.
    async fn series(&self, promql: &str, at: SystemTime) -> Result<Vec<Series>, MetricsError> {
        match self.query(promql, at).await? {
            Data::Vector(series) if !series.is_empty() => Ok(series),
            Data::Vector(_) => Err(MetricsError::NoData {
                what: format!("Prometheus at {} returned no series for {promql:?}", self.base),
            }),
            _ => Err(MetricsError::NoData {
                what: format!("Prometheus at {} returned no instant vector for {promql:?}", self.base),
            }),
        }
    }

    /// One number from a custom check's query: a scalar, or a vector of exactly one series.
    async fn number(&self, promql: &str, at: SystemTime) -> Result<f64, String> {
        let value = match self.query(promql, at).await {
            Err(e) => return Err(e.summary().to_string()),
            Ok(Data::Scalar((_, v))) => parse_number(&v),
            Ok(Data::Vector(series)) if series.len() == 1 => series[0].value(),
            Ok(Data::Vector(series)) if series.is_empty() => return Err("it returned no data".into()),
            Ok(Data::Vector(series)) => return Err(format!("it returned {} series, one is needed", series.len())),
            Ok(_) => return Err("it returned neither a number nor one series".into()),
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(format!("its value is {value}"))
        }
    }

    /// The route's window since `query.since`: every proxy instance's counters as Prometheus
    /// last scraped them, differenced per instance from the mark with restarts accounted for,
    /// exactly as the proxy source does with its own scrapes.
    pub async fn read(&self, query: &MetricsQuery<'_>) -> Result<Reading, MetricsError> {
        let snapshot = self.snapshot(query.route, query.now).await?;
        let earlier = query.since.and_then(|m| m.instances.as_ref());
        let window = earlier.map(|earlier| snapshot.increase_since(earlier));
        let range = query.since.map_or(Duration::ZERO, |m| {
            query.now.duration_since(system_time(&m.at)).unwrap_or_default()
        });
        let mut promql = Vec::with_capacity(query.promql.len());
        for custom in query.promql {
            let expanded = expand(custom, query.route, range);
            promql.push(
                self.number(&expanded, query.now)
                    .await
                    .map_err(|why| format!("{why} (query {expanded:?})")),
            );
        }
        let trips = match &window {
            Some(w) if w.fail_fast_trips > 0 => vec![format!(
                "{} of route {:?} rose by {} (Prometheus at {})",
                names::FAIL_FAST_TRIPS,
                query.route,
                w.fail_fast_trips,
                self.base
            )],
            _ => Vec::new(),
        };
        Ok(Reading {
            window,
            mark: WindowMark {
                at: micro_time(query.now),
                instances: Some(snapshot),
            },
            promql,
            trips,
        })
    }

    /// Every scraped proxy instance's cumulative counters of `route`, as of `now`.
    async fn snapshot(&self, route: &str, now: SystemTime) -> Result<Snapshot, MetricsError> {
        let names_regex = [
            names::REQUESTS.to_owned(),
            format!("{}{}", names::REQUEST_DURATION, names::BUCKET_SUFFIX),
            format!("{}{}", names::FIRST_BYTE, names::BUCKET_SUFFIX),
            names::FAIL_FAST_TRIPS.to_owned(),
            names::CANDIDATE_WEIGHT.to_owned(),
        ]
        .join("|");
        let series_query = format!(
            "{{__name__=~\"{names_regex}\",{}={}}}",
            names::label::ROUTE,
            quote(route)
        );
        let all = self.series(&series_query, now).await?;
        if !all
            .iter()
            .any(|s| s.metric.get("__name__").map(String::as_str) == Some(names::REQUESTS))
        {
            return Err(MetricsError::NoData {
                what: format!(
                    "Prometheus at {} has no {} series for route {route:?} (query {series_query:?})",
                    self.base,
                    names::REQUESTS
                ),
            });
        }
        // Start times tell a restart apart from a counter that merely fell; absent is fine.
        let starts = self.series(names::START_TIME, now).await.unwrap_or_default();
        let mut instances: BTreeMap<String, Samples> = BTreeMap::new();
        for series in all.iter().chain(&starts) {
            let name = series.metric.get("__name__").map(String::as_str).unwrap_or_default();
            let instance = instance_of(series);
            // A start time alone is no instance of the route.
            if name == names::START_TIME && !instances.contains_key(&instance) {
                continue;
            }
            let label = |k: &str| series.metric.get(k).map(String::as_str);
            // Prometheus stores what it scraped; a bucket it holds without a bound is skipped.
            let _ = instances.entry(instance).or_default().add(name, label, series.value());
        }
        Ok(Snapshot {
            taken_at: unix_seconds(now),
            instances: instances.into_iter().map(|(k, s)| (k, s.finish())).collect(),
        })
    }
}

/// The instance a series came from: its scrape job and address.
fn instance_of(series: &Series) -> String {
    let label = |key: &str| series.metric.get(key).map(String::as_str).unwrap_or_default();
    format!("{}/{}", label("job"), label("instance"))
}

/// A PromQL string literal.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A custom query with `{{route}}` and `{{window}}` (the window's length, like `15000ms`)
/// filled in.
pub fn expand(query: &str, route: &str, window: Duration) -> String {
    query
        .replace("{{route}}", route)
        .replace("{{window}}", &format!("{}ms", window.as_millis().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_queries_get_the_route_and_the_window() {
        assert_eq!(
            expand(
                "sum(rate(x{route=\"{{route}}\"}[{{window}}]))",
                "r",
                Duration::from_secs(15)
            ),
            "sum(rate(x{route=\"r\"}[15000ms]))"
        );
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn answers_of_every_result_type_parse() {
        let parse = |text: &str| {
            serde_json::from_str::<Answer>(text)
                .expect("parses")
                .data
                .expect("data")
        };
        assert!(matches!(
            parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#),
            Data::Scalar(_)
        ));
        assert!(matches!(
            parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[]}]}}"#),
            Data::Matrix(_)
        ));
        let Data::Vector(v) = parse(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"le":"+Inf"},"value":[1.5,"+Inf"]}]}}"#,
        ) else {
            panic!("vector")
        };
        assert_eq!(v[0].value(), f64::INFINITY);
    }
}
