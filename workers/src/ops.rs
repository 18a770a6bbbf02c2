//! The ops endpoints of the worker roles: `/health` (the process answers), `/ready` (200 only
//! while every role of the process has its database, its broker connection and its consumers;
//! 503 with a JSON body naming what is down otherwise) and `/metrics` (Prometheus text).
//!
//! One server per process. A worker binary serves its role on `ops.addr` (default: the role's
//! own port, see `OpsSettings::addr_for`). Where several roles share a process (`showrunner up`,
//! tests), the caller creates one [`Ops`], serves it, and runs the roles inside [`scoped`]; each
//! role then registers its [`Probe`] there instead of opening a server of its own.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sea_orm::DatabaseConnection;
use showrunner_shared::config::Settings;
use showrunner_shared::metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The roles of one process, as the ops server sees them.
#[derive(Clone, Default)]
pub struct Ops {
    probes: Arc<Mutex<Vec<Probe>>>,
}

/// What one role instance reports: its database pool, its current broker connection, and
/// whether its consumers run.
#[derive(Clone)]
pub struct Probe(Arc<ProbeState>);

struct ProbeState {
    name: String,
    db: DatabaseConnection,
    broker: Mutex<Option<lapin::ConnectionStatus>>,
    consuming: AtomicBool,
}

impl Probe {
    /// The role is connected through `conn` (its live status is read at each `/ready`).
    pub fn connected(&self, conn: &lapin::Connection) {
        *self.0.broker.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.status().clone());
    }

    /// Its consumers started (`true`) or stopped (`false`).
    pub fn consuming(&self, running: bool) {
        self.0.consuming.store(running, Ordering::Relaxed);
    }

    fn broker_up(&self) -> bool {
        self.0
            .broker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.connected())
    }
}

tokio::task_local! {
    static SCOPE: Ops;
}

/// Runs `roles` so that every role started inside registers with `ops` (one server for all).
pub fn scoped<F: Future>(ops: Ops, roles: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(ops, roles)
}

impl Ops {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a role instance; `name` shows in `/ready`.
    pub fn probe(&self, name: impl Into<String>, db: &DatabaseConnection) -> Probe {
        let probe = Probe(Arc::new(ProbeState {
            name: name.into(),
            db: db.clone(),
            broker: Mutex::new(None),
            consuming: AtomicBool::new(false),
        }));
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).push(probe.clone());
        probe
    }

    /// Serves the endpoints on `listener` until `cancel`.
    pub async fn serve(self, listener: TcpListener, cancel: CancellationToken) {
        let app = Router::new()
            .route("/health", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics_text))
            .with_state(self);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "ops server stopped");
        }
    }

    /// Every role's state, and whether all of them are ready (none registered yet: not ready).
    pub async fn readiness(&self) -> (bool, serde_json::Value) {
        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut roles = Vec::with_capacity(probes.len());
        let mut down = Vec::new();
        let mut all = !probes.is_empty();
        for probe in &probes {
            let database = tokio::time::timeout(Duration::from_secs(2), probe.0.db.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            let broker = probe.broker_up();
            let consuming = probe.0.consuming.load(Ordering::Relaxed);
            for (ok, what) in [(database, "database"), (broker, "broker"), (consuming, "consumers")]
            {
                if !ok {
                    down.push(format!("{}: {what}", probe.0.name));
                }
            }
            all &= database && broker && consuming;
            roles.push(serde_json::json!({
                "role": probe.0.name,
                "database": database,
                "broker": broker,
                "consuming": consuming,
            }));
        }
        if probes.is_empty() {
            down.push("no role has started yet".to_string());
        }
        (all, serde_json::json!({ "ready": all, "down": down, "roles": roles }))
    }
}

async fn ready(State(ops): State<Ops>) -> Response {
    let (ok, body) = ops.readiness().await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    let db = ops.probes.lock().unwrap_or_else(|p| p.into_inner()).first().map(|p| p.0.db.clone());
    let mut text = metrics::encode();
    if let Some(db) = db {
        text.push_str(&metrics::encode_database(&db).await);
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// The [`Ops`] a role registers with: the surrounding [`scoped`] one, or else a server of this
/// process's own on `ops.addr_for(role)` (unless `ops.enabled` is false). A port that is taken
/// is logged and the role runs without the endpoints: the work matters more than the probe.
pub async fn serving(settings: &Settings, role: &str, cancel: &CancellationToken) -> Ops {
    if let Ok(ops) = SCOPE.try_with(Ops::clone) {
        return ops;
    }
    let ops = Ops::new();
    if !settings.ops.enabled {
        return ops;
    }
    let addr = settings.ops.addr_for(role);
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let shown = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
            tracing::info!(addr = %shown, role, "ops endpoints: /health /ready /metrics");
            tokio::spawn(ops.clone().serve(listener, cancel.clone()));
        }
        Err(error) => tracing::error!(
            %addr, %error,
            "cannot serve /health, /ready and /metrics (set ops.addr); running without them"
        ),
    }
    ops
}
