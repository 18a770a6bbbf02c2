//! The frontend kit's side of the api: the AsyncAPI document of every message (the contract
//! `shared/tests/asyncapi.rs` ties to the Rust types) at `/api/v1/asyncapi.json`. Everything
//! here is embedded in the binary, so a deployment serves it without any file beside it.

use axum::Router;
use axum::http::header;
use axum::routing::get;

use crate::state::AppState;

/// The AsyncAPI 3 document: events, commands, job requests and WebSocket frames.
pub const ASYNCAPI: &str = include_str!("../asyncapi.json");

/// Routes under their full paths (merged at the top, outside the per-user rate limit, like the
/// OpenAPI document: they need no token).
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/asyncapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], ASYNCAPI) }),
    )
}
