//! PostgreSQL access: the pool, and a helper for the hand-written SQL that the hot paths use
//! (multi-row statements over `UNNEST` arrays that the query builder cannot express).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement,
    Value,
};
use uuid::Uuid;

use crate::contracts::Episode;
use crate::domain::EpisodeStatus;

use crate::config::DatabaseSettings;

pub async fn connect(settings: &DatabaseSettings, role: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(settings, role, true).await
}

/// [`connect`], choosing whether the pool pings a connection each time it hands one out.
/// Without the ping (the job worker, whose statements are short and many) a connection broken
/// by a database restart fails one statement instead, which the caller must retry.
pub async fn connect_with(
    settings: &DatabaseSettings,
    role: &str,
    ping_on_acquire: bool,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .set_application_name(format!("showrunner-{role}"))
        .test_before_acquire(ping_on_acquire)
        .sqlx_logging(false);
    Database::connect(options).await
}

/// A PostgreSQL statement with `$n` placeholders.
pub fn sql(text: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, text, values)
}

/// An `episodes` row (`SELECT *`).
#[derive(Debug, FromQueryResult)]
pub struct EpisodeRow {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub status: String,
    pub categories: Vec<String>,
    pub created_by: Uuid,
    pub updated_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl TryFrom<EpisodeRow> for Episode {
    type Error = DbErr;
    fn try_from(r: EpisodeRow) -> Result<Self, DbErr> {
        let status = EpisodeStatus::parse(&r.status)
            .ok_or_else(|| DbErr::Custom(format!("unknown episode status {:?}", r.status)))?;
        Ok(Episode {
            id: r.id,
            title: r.title,
            description: r.description,
            status,
            categories: r.categories,
            created_by: r.created_by,
            updated_by: r.updated_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
            version: r.version,
        })
    }
}
