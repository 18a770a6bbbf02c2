//! Liveness, readiness and the OpenAPI document. No token needed.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

/// The OpenAPI 3.1 document of this API, kept beside the code. What is served is this with
/// `POST /jobs`'s body generated from the deployment's job types (`routes::jobs::openapi`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(Liveness { status: Alive::Ok }) }))
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

/// `GET /health`: `{"status": "ok"}` whenever the process answers at all.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Liveness {
    status: Alive,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
enum Alive {
    Ok,
}

/// `GET /ready`: which dependency answered.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Readiness {
    database: bool,
    broker: bool,
}

async fn ready(State(state): State<AppState>) -> Response {
    let database = state.db.ping().await.is_ok();
    let broker = state.broker.publisher().is_some();
    let status = if database && broker { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { database, broker })).into_response()
}
