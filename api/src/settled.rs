//! The api's one `LISTEN` connection: the command worker's batch transaction notifies the ids
//! of the commands it settled (`showrunner_shared::settled`), PostgreSQL delivers the
//! notification when that transaction commits, and this wakes the requests waiting on them
//! (`Prefer: wait`), whose answer reads the committed outcome. No broker hop, no log shipper.
//!
//! Notifications sent while the connection is down are lost: after every (re)connection, once
//! `LISTEN` is in effect, the commands waited on are read once from `commands`, so a command
//! settled in between wakes its request too. The connection is kept with the reconnect backoff
//! of every process. The shipped events still wake waiters as well (`link.rs`).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{DatabaseConnection, FromQueryResult};
use showrunner_shared::config::DatabaseSettings;
use showrunner_shared::db::sql;
use showrunner_shared::resource::CommandStatus;
use showrunner_shared::retry::reconnect_delays;
use showrunner_shared::settled::{CHANNEL, Settled, parse};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::waiters::Waiters;

/// Longest connect and `LISTEN`, together.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the listening connection until `cancel`, waking `waiters` by command id.
pub async fn listen(
    settings: DatabaseSettings,
    db: DatabaseConnection,
    waiters: Arc<Waiters>,
    cancel: CancellationToken,
) {
    let mut delays = reconnect_delays();
    loop {
        let started = std::time::Instant::now();
        let error = tokio::select! {
            () = cancel.cancelled() => return,
            result = session(&settings, &db, &waiters) => match result {
                Ok(never) => match never {},
                Err(error) => error,
            },
        };
        if started.elapsed() > Duration::from_secs(30) {
            // It had been up a while: a new outage starts from the short delays.
            delays = reconnect_delays();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(%error, ?delay, "command notifications not heard, reconnecting");
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's life; it ends only by an error (a lost connection).
async fn session(
    settings: &DatabaseSettings,
    db: &DatabaseConnection,
    waiters: &Waiters,
) -> anyhow::Result<std::convert::Infallible> {
    let mut listener = tokio::time::timeout(SETUP_TIMEOUT, connect(settings))
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {SETUP_TIMEOUT:?}"))??;
    // From here on every commit notifies this connection; what committed before is in the
    // table, read after `LISTEN` took effect.
    let woken = wake_settled(db, waiters).await?;
    tracing::info!(woken, "listening to command notifications");
    loop {
        // `None`: the connection was lost (sqlx's own reconnect is off, so this loop's backoff
        // and the read above run after every reconnection).
        let notification = listener
            .try_recv()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the listening connection was lost"))?;
        waiters.wake_all(parse(notification.payload()));
    }
}

async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgListener> {
    let options = settings
        .url
        .parse::<PgConnectOptions>()?
        .application_name("showrunner-api-listen")
        // The server drops this session within a minute of the api's host going away: a
        // listener that never reads would hold PostgreSQL's notification queue.
        .options([
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SETUP_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Wakes the requests waiting on a command that is no longer pending; how many.
pub async fn wake_settled(db: &DatabaseConnection, waiters: &Waiters) -> anyhow::Result<usize> {
    #[derive(FromQueryResult)]
    struct Row {
        id: Uuid,
        status: CommandStatus,
    }
    let waiting = waiters.waiting();
    if waiting.is_empty() {
        return Ok(0);
    }
    let settled = Row::find_by_statement(sql(
        "SELECT id, status FROM commands WHERE id = ANY($1) AND status <> 'pending'",
        [waiting.into()],
    ))
    .all(db)
    .await?;
    let woken = settled.len();
    waiters.wake_all(settled.into_iter().map(|row| {
        let how =
            if row.status == CommandStatus::Applied { Settled::Applied } else { Settled::Settled };
        (row.id, how)
    }));
    Ok(woken)
}
