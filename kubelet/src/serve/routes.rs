//! The endpoint's routes. Anything else is a 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// prometheus-client writes OpenMetrics text (with `# EOF`), which Prometheus negotiates.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(registry: Arc<Registry>) -> Router {
    // /livez as kube-proxy serves it on its healthz port; same meaning here.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(registry)
}

/// The endpoint only runs while the agent's loops do, so answering at all means healthy.
async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "encoding metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response()
        }
    }
}
