//! What every handler shares.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use showrunner_shared::config::Settings;

use crate::link::BrokerLink;
use crate::waiters::Waiters;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub broker: Arc<BrokerLink>,
    pub waiters: Arc<Waiters>,
}
