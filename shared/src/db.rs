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

/// How a pool's connections behave.
#[derive(Debug, Clone, Copy)]
pub struct PoolMode {
    /// Ping a connection each time the pool hands it out. Without the ping (the job worker,
    /// whose statements are short and many) a connection broken by a database restart fails
    /// one statement instead, which the caller must retry.
    pub ping_on_acquire: bool,
    /// `plan_cache_mode = force_generic_plan` on every connection: each prepared statement is
    /// planned once per connection instead of at every execution. PostgreSQL's default keeps
    /// planning a statement anew each time when a plan for the actual values looks cheaper than
    /// the generic one, which is likely always for the workers' `UNNEST` batches (a generic
    /// plan assumes ten rows per array): with this, PostgreSQL's CPU per job in the job
    /// benchmark fell by about a sixth (README, "Jobs, side by side"; planning time itself was
    /// not measured). For the workers only: every statement of theirs
    /// has one good plan whatever its values (keys, `= ANY`, `UNNEST`, index ranges in index
    /// order with a `LIMIT`); the api's searches may need a plan for their values.
    pub generic_plans: bool,
}

impl PoolMode {
    /// The api's pool (and the default): pings, plans per execution as PostgreSQL chooses.
    pub const API: Self = Self { ping_on_acquire: true, generic_plans: false };

    /// A worker's pool.
    pub const fn worker(ping_on_acquire: bool) -> Self {
        Self { ping_on_acquire, generic_plans: true }
    }
}

/// The pool of `role` (its size: [`DatabaseSettings::pool_size_for`]).
pub async fn connect(settings: &DatabaseSettings, role: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(settings, role, PoolMode::API).await
}

/// [`connect`], its connections behaving as `mode` says.
pub async fn connect_with(
    settings: &DatabaseSettings,
    role: &str,
    mode: PoolMode,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    if mode.generic_plans {
        // A startup parameter: no statement more per connection.
        options.map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_generic_plan")]));
    }
    options
        .max_connections(settings.pool_size_for(role))
        .min_connections(1)
        // A statement that finds every connection busy waits this long, then fails with
        // `DbErr::ConnectionAcquire`, which [`unreachable`] counts as "retry later": the api
        // answers 503, a worker retries its batch without acking.
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .connect_timeout(Duration::from_secs(5))
        .set_application_name(format!("showrunner-{role}"))
        .test_before_acquire(mode.ping_on_acquire)
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
    mode: PoolMode,
    cancel: &CancellationToken,
) -> Result<Option<DatabaseConnection>, DbErr> {
    let mut delays = crate::retry::reconnect_delays();
    loop {
        match connect_with(settings, role, mode).await {
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
