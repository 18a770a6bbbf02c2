//! Liveness, readiness and the OpenAPI document. No token needed.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;

/// The OpenAPI 3.1 document of this API, kept beside the code. What is served is this with
/// `POST /jobs`'s body generated from the deployment's job types (`routes::jobs::openapi`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|State(state): State<AppState>| async move {
                ([(header::CONTENT_TYPE, "application/json")], state.openapi.to_string())
            }),
        )
}

/// Prometheus text: the process's metrics, then the outbox backlog and the jobs by status.
async fn metrics(State(state): State<AppState>) -> Response {
    use showrunner_shared::metrics;
    let mut text = metrics::encode();
    text.push_str(&metrics::encode_database(&state.db).await);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let database = state.db.ping().await.is_ok();
    let broker = state.broker.publisher().is_some();
    let status = if database && broker { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "database": database, "broker": broker }))).into_response()
}
