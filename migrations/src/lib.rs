//! Showrunner's database schema as sea-orm migrations, and the checks the processes run at start.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

mod m20261125_000001_initial;
mod m20261125_000002_jobs;
mod m20261125_000003_event_log;
mod m20261202_000001_job_operations;
mod m20261202_000004_compositions;
mod m20261203_000001_event_path;
mod m20261203_000002_files;
mod m20261204_000001_partitioned_activity;
mod m20261204_000002_lifecycle;
mod m20261205_000001_notification_cursor;
mod m20261206_000001_event_log_time_unindexed;
mod m20261207_000001_event_log_numbered_at_insert;
mod m20261208_000001_jobs_park_pending;
mod m20261209_000001_jobs_unsettled_index;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_jobs::Migration),
            Box::new(m20261125_000003_event_log::Migration),
            Box::new(m20261202_000001_job_operations::Migration),
            Box::new(m20261202_000004_compositions::Migration),
            Box::new(m20261203_000001_event_path::Migration),
            Box::new(m20261203_000002_files::Migration),
            Box::new(m20261204_000001_partitioned_activity::Migration),
            Box::new(m20261204_000002_lifecycle::Migration),
            Box::new(m20261205_000001_notification_cursor::Migration),
            Box::new(m20261206_000001_event_log_time_unindexed::Migration),
            Box::new(m20261207_000001_event_log_numbered_at_insert::Migration),
            Box::new(m20261208_000001_jobs_park_pending::Migration),
            Box::new(m20261209_000001_jobs_unsettled_index::Migration),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error(
        "the database schema is older than this build needs ({0} pending migration(s), first {1}); run `showrunner-migrate` first"
    )]
    Outdated(usize, String),
}

/// Lock id for `pg_advisory_lock`: replicas starting together apply migrations one at a time.
const MIGRATION_LOCK: i64 = 0x0053_484f_5752_554e; // "SHOWRUN"

/// Applies every pending migration, serialised across processes by an advisory lock.
pub async fn migrate(url: &str) -> Result<(), DbErr> {
    create_database_if_missing(url).await?;
    // One connection, so the session lock and the migrations share a session.
    let mut options = ConnectOptions::new(url.to_string());
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).await?;
    let result = Migrator::up(&db, None).await;
    db.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).await?;
    db.close().await?;
    result
}

/// Refuses to go on when a migration this build knows of has not been applied.
pub async fn ensure_current(db: &DatabaseConnection) -> Result<(), SchemaError> {
    let pending = Migrator::get_pending_migrations_read_only(db).await?;
    match pending.first() {
        None => Ok(()),
        Some(first) => Err(SchemaError::Outdated(pending.len(), first.name().to_string())),
    }
}

/// A fresh machine has no `showrunner` database yet: create it through the server's
/// maintenance database, so one command brings a new system up.
async fn create_database_if_missing(url: &str) -> Result<(), DbErr> {
    let Some((server, name)) = url.split('?').next().and_then(|u| u.rsplit_once('/')) else {
        return Ok(());
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        // Leave unusual names to the operator rather than quoting them here.
        return Ok(());
    }
    let mut options = ConnectOptions::new(format!("{server}/postgres"));
    options.max_connections(1).sqlx_logging(false);
    let Ok(admin) = Database::connect(options).await else {
        return Ok(()); // no maintenance database: the real connect below says what is wrong
    };
    let exists = admin
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_sql_and_values(
            sea_orm_migration::sea_orm::DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await?
        .is_some();
    if !exists {
        // Two processes racing here: the loser's "already exists" is harmless.
        let _ = admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await;
    }
    admin.close().await
}
