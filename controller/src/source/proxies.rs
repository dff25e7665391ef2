//! The proxy source: every proxy instance's `/metrics`, scraped at once, kept per instance in
//! the window mark, and differenced per instance with restarts accounted for
//! ([`Snapshot::increase_since`]). No Prometheus needed.
//!
//! All or nothing: if one instance cannot be scraped the source is down for this window (the
//! analysis holds), since a window missing an instance would be judged on part of the traffic.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{text, unix_seconds};
use crate::counters::Snapshot;
use crate::decide::Reading;
use crate::ports::{BoxError, MetricsError, MetricsQuery};
use crate::status::{WindowMark, micro_time};

/// Longest a scrape of one instance may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapes a fixed set of proxy admin endpoints.
#[derive(Debug, Clone)]
pub struct ProxyScrape {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Admin base URLs, like `http://127.0.0.1:9901`; each names an instance.
    targets: Vec<String>,
    /// Instances known but not to be scraped, with why: the source is down while there are any.
    refused: Vec<(String, String)>,
}

/// A scrape failed.
#[derive(Debug, thiserror::Error)]
enum ScrapeFailure {
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered text that is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Parse(#[from] text::ParseError),
    #[error("not scraped: {0}")]
    Refused(String),
}

impl ProxyScrape {
    /// Scrapes `targets`, admin base URLs like `http://127.0.0.1:9901`.
    pub fn new(targets: Vec<String>) -> Self {
        ProxyScrape::with_refused(targets, Vec::new())
    }

    /// Scrapes `targets`; each of `refused` (URL, why) is an instance that cannot be read, so
    /// that a window is never judged on part of the fleet.
    pub fn with_refused(targets: Vec<String>, refused: Vec<(String, String)>) -> Self {
        ProxyScrape {
            client: Client::builder(TokioExecutor::new()).build_http(),
            targets,
            refused,
        }
    }

    async fn get(&self, url: &str) -> Result<String, BoxError> {
        let uri: http::Uri = url.parse()?;
        let fetch = async {
            let rsp = self.client.get(uri).await?;
            if !rsp.status().is_success() {
                return Err(Box::new(ScrapeFailure::Status(rsp.status())) as BoxError);
            }
            let body = rsp.into_body().collect().await?.to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| Box::new(ScrapeFailure::NotUtf8) as BoxError)
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
            .await
            .map_err(|_| Box::new(ScrapeFailure::Timeout(SCRAPE_TIMEOUT)) as BoxError)?
    }

    /// The route's window since `query.since`.
    pub async fn read(&self, query: &MetricsQuery<'_>) -> Result<Reading, MetricsError> {
        let scrapes = futures::future::join_all(self.targets.iter().map(|target| async move {
            let text = self.get(&format!("{target}/metrics")).await;
            (target, text)
        }))
        .await;
        let mut snapshot = Snapshot {
            taken_at: unix_seconds(query.now),
            instances: Default::default(),
        };
        let mut first_failure: Option<(String, BoxError)> = self
            .refused
            .first()
            .map(|(url, why)| (url.clone(), Box::new(ScrapeFailure::Refused(why.clone())) as BoxError));
        for (target, text) in scrapes {
            let counters = text.and_then(|text| {
                text::route_counters(&text, query.route, query.users_epoch)
                    .map_err(|e| Box::new(ScrapeFailure::from(e)) as BoxError)
            });
            match counters {
                Ok(Some(counters)) => {
                    snapshot.instances.insert(target.clone(), counters);
                }
                Ok(None) => {}
                Err(error) => {
                    first_failure.get_or_insert((target.clone(), error));
                }
            }
        }
        let earlier = query.since.and_then(|m| m.instances.as_ref());
        if let Some((target, source)) = first_failure {
            // The window is not read, but a trip at the proxies that answered still counts.
            let trips = match earlier {
                Some(earlier) if snapshot.increase_since(earlier).fail_fast_trips > 0 => {
                    self.trip_details(&snapshot, earlier, query.route).await
                }
                _ => Vec::new(),
            };
            return Err(MetricsError::SourceDown {
                source_name: format!("proxy {target}"),
                source,
                trips,
            });
        }
        if snapshot.instances.is_empty() {
            return Err(MetricsError::NoData {
                what: format!(
                    "no proxy of {} has request counters for route {:?}",
                    self.targets.join(", "),
                    query.route
                ),
            });
        }
        let window = earlier.map(|earlier| snapshot.increase_since(earlier));
        let trips = match (&window, earlier) {
            (Some(w), Some(earlier)) if w.fail_fast_trips > 0 => {
                self.trip_details(&snapshot, earlier, query.route).await
            }
            _ => Vec::new(),
        };
        Ok(Reading {
            window,
            mark: WindowMark {
                at: micro_time(query.now),
                instances: Some(snapshot),
            },
            promql: Vec::new(),
            trips,
        })
    }

    /// What each instance whose trips rose says in `/config` about the trip.
    async fn trip_details(&self, now: &Snapshot, earlier: &Snapshot, route: &str) -> Vec<String> {
        let mut details = Vec::new();
        for (target, counters) in &now.instances {
            let single = Snapshot {
                taken_at: now.taken_at,
                instances: [(target.clone(), counters.clone())].into(),
            };
            if single.increase_since(earlier).fail_fast_trips == 0 {
                continue;
            }
            let detail = match self.get(&format!("{target}/config")).await {
                Ok(text) => describe_trip(&text, route),
                Err(error) => format!("tripped (its /config could not be read: {error})"),
            };
            details.push(format!("proxy {target}: {detail}"));
        }
        details
    }
}

/// The trip of `route` in a proxy's `/config`, in words.
fn describe_trip(config: &str, route: &str) -> String {
    let view: serde_json::Value = match serde_json::from_str(config) {
        Ok(v) => v,
        Err(_) => return "tripped (its /config is not JSON)".into(),
    };
    let trip = &view["failFast"][route]["tripped"];
    match (trip["errors"].as_u64(), trip["requests"].as_u64()) {
        (Some(errors), Some(requests)) => format!(
            "{errors} of {requests} candidate requests failed within {} (limit {})",
            trip["window"].as_str().unwrap_or("its window"),
            trip["errorRatioLimit"]
        ),
        _ => "tripped".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trip_reads_in_words() {
        let config = r#"{"failFast":{"r":{"tripped":{"at":"x","requests":20,"errors":20,"errorRatioLimit":0.5,"window":"10s"}}}}"#;
        assert_eq!(
            describe_trip(config, "r"),
            "20 of 20 candidate requests failed within 10s (limit 0.5)"
        );
        assert_eq!(describe_trip("nope", "r"), "tripped (its /config is not JSON)");
    }
}
