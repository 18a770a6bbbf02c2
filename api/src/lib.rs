//! Showrunner's API: REST under `/api/v1`. Writes become commands on RabbitMQ (answered 202
//! after a publisher confirm); reads come from PostgreSQL.

pub mod accept;
pub mod edge;
pub mod error;
pub mod extract;
pub mod kit;
pub mod limits;
pub mod link;
pub mod observe;
pub mod recorder;
pub mod relay;
pub mod routes;
pub mod settled;
pub mod state;
pub mod waiters;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use showrunner_shared::config::Settings;
use showrunner_shared::jobs::types::JobTypes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::link::BrokerLink;
use crate::relay::hub::Hub;
use crate::state::AppState;
use crate::waiters::Waiters;

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(routes::episodes::router())
        .merge(routes::compositions::router())
        .merge(routes::files::router())
        .merge(routes::commands::router())
        .merge(routes::jobs::router())
        .merge(routes::activity::router())
        .merge(routes::notifications::router())
        .merge(relay::router())
        // Per-user request limits; health, readiness and the OpenAPI document stay exempt.
        .route_layer(axum::middleware::from_fn_with_state(
            limits::rate_state(&state),
            limits::rate_limit,
        ))
        .merge(routes::health::router());
    Router::new()
        .nest("/api/v1", v1)
        .merge(routes::health::router())
        .merge(kit::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .layer(DefaultBodyLimit::max(state.settings.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            std::time::Duration::from_secs(state.settings.http.body_timeout_secs),
            edge::body_deadline,
        ))
        .layer(axum::middleware::from_fn(observe::track))
        .with_state(state)
}

/// Connects, checks the schema, serves on `listener` (through [`edge::serve`], which bounds
/// slow and greedy clients) until `cancel`, then drains: stops accepting, closes WebSockets
/// with 1001, ends `Prefer: wait` early (202), lets requests in flight finish, and only then
/// closes the broker link. Accepts the built-in job types.
pub async fn run(
    settings: Arc<Settings>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_with(settings, JobTypes::builtin(), listener, cancel).await
}

/// [`run`], accepting the job types `job_types` (a deployment's own beside the built-in ones;
/// its job workers must run the same types).
pub async fn run_with(
    settings: Arc<Settings>,
    job_types: JobTypes,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let Some(db) = showrunner_shared::db::connect_waiting(
        &settings.database,
        "api",
        showrunner_shared::db::PoolMode::API,
        &cancel,
    )
    .await?
    else {
        return Ok(());
    };
    showrunner_migrations::ensure_current(&db).await?;
    let storage = showrunner_shared::storage::Storage::open(&settings.storage)?;
    tracing::info!(?storage, "file storage");
    let broker = Arc::new(BrokerLink::default());
    let waiters = Arc::new(Waiters::default());
    let hub = Arc::new(Hub::default());
    // The broker link outlives the listener: requests still in flight when the signal comes
    // need it to publish their command.
    let link_cancel = CancellationToken::new();
    let link = tokio::spawn(broker.clone().maintain(
        settings.clone(),
        db.clone(),
        waiters.clone(),
        hub.clone(),
        link_cancel.clone(),
    ));
    // `Prefer: wait` hears of settled commands from PostgreSQL itself, at their commit.
    let listen = tokio::spawn(settled::listen(
        settings.database.clone(),
        db.clone(),
        waiters.clone(),
        link_cancel.clone(),
    ));
    let recorder = recorder::Recorder::start(db.clone());
    let verifier = Arc::new(showrunner_shared::auth::Verifier::new(&settings.auth));
    let openapi = routes::jobs::openapi(routes::health::OPENAPI, &job_types).into();
    let state = AppState::new(state::Shared {
        settings: settings.clone(),
        db,
        broker,
        waiters,
        hub,
        recorder,
        verifier,
        job_types: Arc::new(job_types),
        openapi,
        storage,
        shutdown: cancel.clone(),
    });
    let expiry = tokio::spawn(relay::presence::expire_forever(state.clone(), cancel.clone()));
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    edge::serve(listener, app(state), &settings.http, cancel.clone()).await?;
    cancel.cancel();
    link_cancel.cancel();
    let _ = link.await;
    let _ = listen.await;
    let _ = expiry.await;
    tracing::info!("api stopped");
    Ok(())
}
