//! What every handler shares.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use showrunner_shared::config::Settings;

use crate::link::BrokerLink;
use crate::recorder::Recorder;
use crate::relay::hub::Hub;
use crate::waiters::Waiters;

/// What every handler shares, behind one `Arc`: axum clones the state for every request and
/// every middleware layer, and a clone of a dozen shared fields was a dozen atomic increments
/// and decrements each time (about 2 % of the api's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub broker: Arc<BrokerLink>,
    pub waiters: Arc<Waiters>,
    /// Writes the `commands` rows of concurrent requests together.
    pub recorder: Recorder,
    pub hub: Arc<Hub>,
    /// Checks bearer tokens; holds the identity providers' cached keys.
    pub verifier: Arc<showrunner_shared::auth::Verifier>,
    /// The job types `POST /jobs` accepts.
    pub job_types: Arc<showrunner_shared::jobs::types::JobTypes>,
    /// The OpenAPI document served, with the job types above in `POST /jobs`.
    pub openapi: Arc<str>,
    /// Where files' bytes are.
    pub storage: showrunner_shared::storage::Storage,
    /// Cancelled when the process shuts down: WebSocket sessions close on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}
