//! The controller's admin listener: `/metrics` (OpenMetrics text), `/healthz`, and `/targets`
//! (the proxy admin endpoints scraped, and those refused with why).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::lease::Leadership;
use super::metrics::ControllerMetrics;
use super::targets::SharedTargets;

/// Binds `addr` and serves until the process ends; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<ControllerMetrics>,
    targets: SharedTargets,
    leadership: Leadership,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, targets, leadership) = (Arc::clone(&metrics), Arc::clone(&targets), leadership.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (metrics, targets, leadership) =
                        (Arc::clone(&metrics), Arc::clone(&targets), leadership.clone());
                    async move { Ok::<_, Infallible>(handle(&req, &metrics, &targets, &leadership)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn handle(
    req: &Request<Incoming>,
    metrics: &ControllerMetrics,
    targets: &SharedTargets,
    leadership: &Leadership,
) -> Response<Full<Bytes>> {
    let read_only = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
    let (status, content_type, body) = match req.uri().path() {
        // Nothing here changes state: nothing here takes anything but GET and HEAD.
        _ if !read_only => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are served here\n".to_owned(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned()),
        "/targets" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&**targets.load()).unwrap_or_default(),
        ),
        "/metrics" => match metrics.encode(leadership) {
            Ok(text) => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "encoding metrics failed\n".to_owned(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics, /healthz or /targets\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response from valid parts")
}
