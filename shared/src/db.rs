//! PostgreSQL access: the pool, and a helper for the hand-written SQL that the hot paths use
//! (multi-row statements over `UNNEST` arrays that the query builder cannot express).

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, Statement, Value};

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
