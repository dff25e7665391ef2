//! Where the route's metrics come from: every proxy's own `/metrics` ([`proxies`]), or a
//! Prometheus server ([`prometheus`]). Both implement the [`Metrics`] port; [`Source`] is
//! whichever the spec names.

pub mod prometheus;
pub mod proxies;
pub mod series;
pub mod text;

use crate::decide::Reading;
use crate::ports::{Metrics, MetricsError, MetricsQuery};

/// The metrics source a rollout uses.
#[derive(Debug)]
pub enum Source {
    /// Scrape the proxies.
    Proxies(proxies::ProxyScrape),
    /// Query Prometheus.
    Prometheus(prometheus::PrometheusSource),
}

impl Metrics for Source {
    async fn read(&self, query: &MetricsQuery<'_>) -> Result<Reading, MetricsError> {
        match self {
            Source::Proxies(s) => s.read(query).await,
            Source::Prometheus(s) => s.read(query).await,
        }
    }
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
