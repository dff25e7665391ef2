//! The admin listener: `/metrics`, `/healthz`, `/readyz` and `/config`. Read-only; it changes
//! no state, so it needs no token. Loopback by default.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::body::ProxyBody;
use std::collections::BTreeMap;

use crate::config::ProxyConfig;
use crate::failfast::Trip;
use crate::state::{ConfigState, LayerStatus, ReloadStatus};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints.
#[derive(Clone, Debug)]
pub struct AdminService {
    state: Arc<ConfigState>,
    registry: Arc<Registry>,
}

impl AdminService {
    /// An admin service over the live config and the metrics registry.
    pub fn new(state: Arc<ConfigState>, registry: Arc<Registry>) -> Self {
        AdminService { state, registry }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.state.not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    Bytes::from(format!("{why}\n")),
                ),
            },
            "/metrics" => self.metrics(req),
            "/config" => self.config(),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /config\n",
            ),
        }
    }

    fn metrics(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let mut exposition = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut exposition, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n");
        }
        let wants_openmetrics = req
            .headers()
            .get_all(ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
        let (body, content_type) = if wants_openmetrics {
            (exposition, OPENMETRICS)
        } else {
            (openmetrics_to_prometheus(&exposition), PROMETHEUS_TEXT)
        };
        respond(StatusCode::OK, content_type, Bytes::from(body))
    }

    fn config(&self) -> Response<ProxyBody> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ConfigView<'a> {
            version: u64,
            config: Option<&'a ProxyConfig>,
            last_reload: Option<ReloadStatus>,
            /// The route ConfigMaps merged in, with `--kube-routes`.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            kubernetes: Vec<LayerStatus>,
            fail_fast: BTreeMap<&'a str, FailFastView<'a>>,
            /// Each followed Service port (`namespace/name:port`) with its ready endpoints.
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            discovered: BTreeMap<String, Vec<String>>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct FailFastView<'a> {
            tripped: Option<&'a Trip>,
        }
        let table = self.state.table();
        let view = ConfigView {
            version: table.as_ref().map_or(0, |t| t.version),
            config: table.as_deref().map(|t| &*t.config),
            last_reload: self.state.last_reload(),
            kubernetes: self.state.layers(),
            fail_fast: table
                .as_deref()
                .map(|t| {
                    t.fail_fast()
                        .map(|(route, f)| (route, FailFastView { tripped: f.tripped() }))
                        .collect()
                })
                .unwrap_or_default(),
            discovered: self.state.discovery().snapshot(),
        };
        match serde_json::to_vec_pretty(&view) {
            Ok(body) => respond(StatusCode::OK, "application/json", Bytes::from(body)),
            Err(error) => {
                tracing::error!(%error, "encoding /config failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "encoding the config failed\n")
            }
        }
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: no `# EOF` or `# UNIT`,
/// and counter families named with their `_total` suffix, as Prometheus-format parsers expect.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    respond(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut rsp = Response::new(ProxyBody::full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

impl hyper::service::Service<Request<Incoming>> for AdminService {
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let rsp = self.handle(&req);
        Box::pin(async move { Ok(rsp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_suffix_in_prometheus_text() {
        let om = "# HELP weir_requests Requests.\n# TYPE weir_requests counter\nweir_requests_total{route=\"a\"} 1\n# HELP weir_w Weight.\n# TYPE weir_w gauge\n# UNIT weir_w bp\nweir_w 5\n# EOF\n";
        let text = openmetrics_to_prometheus(om);
        assert_eq!(
            text,
            "# HELP weir_requests_total Requests.\n# TYPE weir_requests_total counter\nweir_requests_total{route=\"a\"} 1\n# HELP weir_w Weight.\n# TYPE weir_w gauge\nweir_w 5\n"
        );
    }
}
