//! The HTTP server. This version answers `GET /health`; the API proper
//! (keys, workflows, runs, files) builds on it.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub fn router() -> Router {
    Router::new().route("/health", get(health))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Serves until shutdown, then drains open requests.
pub async fn http_worker(listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let result = axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http server stopped");
    }
}
