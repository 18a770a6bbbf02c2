//! PostgreSQL access: the pool, and a helper for the hand-written SQL that the hot paths use
//! (multi-row statements over `UNNEST` arrays that the query builder cannot express).

use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlxError,
    Statement, Value,
};
use tokio_util::sync::CancellationToken;

pub use crate::resource::episode::EpisodeRow;

use crate::config::DatabaseSettings;

/// The pool of `role` (its size: [`DatabaseSettings::pool_size_for`]).
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
        .max_connections(settings.pool_size_for(role))
        .min_connections(1)
        // A statement that finds every connection busy waits this long, then fails with
        // `DbErr::ConnectionAcquire`, which [`unreachable`] counts as "retry later": the api
        // answers 503, a worker retries its batch without acking.
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .connect_timeout(Duration::from_secs(5))
        .set_application_name(format!("showrunner-{role}"))
        .test_before_acquire(ping_on_acquire)
        .sqlx_logging(false);
    Database::connect(options).await
}

/// Whether connecting failed because PostgreSQL is not there (yet): down, restarting, or not
/// accepting connections. A wrong password or a missing database is not: waiting cannot fix it.
pub fn unreachable(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            SqlxError::Io(_) | SqlxError::PoolTimedOut | SqlxError::Tls(_) => true,
            // 57P: shutting down or starting up; 08: connection exceptions.
            SqlxError::Database(db) => {
                db.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
            }
            _ => false,
        },
        _ => false,
    }
}

/// [`connect_with`], waiting (exponential backoff up to 10 s) for as long as PostgreSQL is
/// [`unreachable`], so a process started before its database waits instead of exiting.
/// `None` when `cancel` fires first.
pub async fn connect_waiting(
    settings: &DatabaseSettings,
    role: &str,
    ping_on_acquire: bool,
    cancel: &CancellationToken,
) -> Result<Option<DatabaseConnection>, DbErr> {
    let mut delays = crate::retry::reconnect_delays();
    loop {
        match connect_with(settings, role, ping_on_acquire).await {
            Ok(db) => return Ok(Some(db)),
            Err(error) if unreachable(&error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(role, %error, ?delay, "PostgreSQL unreachable, waiting for it");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// A PostgreSQL statement with `$n` placeholders.
pub fn sql(text: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, text, values)
}
