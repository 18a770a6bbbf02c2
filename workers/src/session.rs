//! Connecting a worker: database schema check, then a broker connection with its topology and
//! a confirm-mode publisher, retried with exponential backoff until it works or shutdown.

use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use showrunner_shared::broker::{self, Nodes, Publisher, topology};
use showrunner_shared::config::Settings;
use showrunner_shared::contracts::CommandEnvelope;
use showrunner_shared::db::{PoolMode, sql};
use showrunner_shared::outbox;
use showrunner_shared::retry::reconnect_delays;
use tokio_util::sync::CancellationToken;

use crate::runtime::Context;

/// Connects to PostgreSQL (waiting while it is unreachable) and checks the schema. A schema
/// older than this build is fatal. `None` when `cancel` fires while waiting.
pub async fn database(
    settings: &Settings,
    role: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<DatabaseConnection>> {
    database_with(settings, role, true, cancel).await
}

/// [`database`], choosing whether the pool pings connections as it hands them out.
pub async fn database_with(
    settings: &Settings,
    role: &str,
    ping_on_acquire: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<DatabaseConnection>> {
    let db = showrunner_shared::db::connect_waiting(
        &settings.database,
        role,
        PoolMode::worker(ping_on_acquire),
        cancel,
    )
    .await?;
    let Some(db) = db else { return Ok(None) };
    showrunner_migrations::ensure_current(&db).await?;
    Ok(Some(db))
}

/// Spaces a role's broker sessions. A session that ended soon after it began (the broker
/// accepts connections but a channel or a consume keeps failing) is followed by a pause that
/// doubles each time, up to 10 s; after a session that lived a while, the next connect is
/// immediate. So a role never reconnects in a tight loop, whatever fails.
#[derive(Default)]
pub struct Pacer {
    last_start: Option<std::time::Instant>,
    delays: Option<backon::ExponentialBackoff>,
    /// The broker's nodes and which one the next session tries first (failover).
    nodes: Option<Nodes>,
}

/// A session shorter than this counts as a failed one.
const SHORT_SESSION: Duration = Duration::from_secs(30);

impl Pacer {
    /// [`connect`], after the pause the previous session's length calls for.
    pub async fn connect(
        &mut self,
        settings: &Arc<Settings>,
        db: &DatabaseConnection,
        role: &str,
        cancel: &CancellationToken,
    ) -> Option<(Connection, Context)> {
        if let Some(started) = self.last_start {
            if started.elapsed() < SHORT_SESSION {
                let delays = self.delays.get_or_insert_with(reconnect_delays);
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::info!(
                    role,
                    ?delay,
                    "the last session was short, pausing before reconnecting"
                );
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            } else {
                self.delays = None;
            }
        }
        let nodes = self.nodes.get_or_insert_with(|| Nodes::new(&settings.amqp));
        let session = connect(settings, nodes, db, role, cancel).await;
        self.last_start = Some(std::time::Instant::now());
        session
    }
}

/// A channel on `conn`, or `None` (logged) when the broker refuses or does not answer: the
/// caller starts a new session.
pub async fn open_channel(conn: &Connection) -> Option<lapin::Channel> {
    match broker::bounded(conn.create_channel()).await {
        Some(Ok(channel)) => Some(channel),
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot open a channel, reconnecting");
            None
        }
        None => {
            tracing::warn!("no answer to opening a channel, reconnecting");
            None
        }
    }
}

/// Longest connect, topology declaration and publisher opening, together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live broker connection and the context handlers run with. `None` on shutdown.
pub async fn connect(
    settings: &Arc<Settings>,
    nodes: &Nodes,
    db: &DatabaseConnection,
    role: &str,
    cancel: &CancellationToken,
) -> Option<(Connection, Context)> {
    let mut delays = reconnect_delays();
    loop {
        // Bounded as a whole: a node that is still starting may accept and then not answer.
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, try_connect(settings, nodes, db, role));
        let result = tokio::select! {
            () = cancel.cancelled() => return None,
            r = attempt => r.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        match result {
            Ok(session) => return Some(session),
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(%error, ?delay, "RabbitMQ unavailable, retrying");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn try_connect(
    settings: &Arc<Settings>,
    nodes: &Nodes,
    db: &DatabaseConnection,
    role: &str,
) -> anyhow::Result<(Connection, Context)> {
    let (conn, node) = nodes.connect(role).await?;
    topology::declare_or_verify(&conn, &settings.amqp).await?;
    let publisher =
        Publisher::open(&conn, Duration::from_secs(settings.amqp.confirm_timeout_secs)).await?;
    tracing::info!(role, %node, "connected to RabbitMQ");
    showrunner_shared::metrics::BROKER_RECONNECTS.inc(&[role]);
    Ok((conn, Context { db: db.clone(), publisher, settings: settings.clone() }))
}

/// Publishes what crashes left behind: outbox rows past their age, and accepted commands still
/// pending long after their publish (the api died between recording and publishing them).
pub async fn sweep(ctx: &Context) {
    let workers = &ctx.settings.workers;
    match outbox::sweep(
        &ctx.db,
        &ctx.publisher,
        Duration::from_secs(workers.outbox_sweep_after_secs),
        500,
    )
    .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "sweeper published outbox rows"),
        Err(error) => tracing::warn!(%error, "outbox sweep failed"),
    }
    match republish_pending(ctx).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "sweeper republished pending commands"),
        Err(error) => tracing::warn!(%error, "command sweep failed"),
    }
}

#[derive(FromQueryResult)]
struct PendingCommand {
    message: serde_json::Value,
    traceparent: Option<String>,
}

async fn republish_pending(ctx: &Context) -> anyhow::Result<usize> {
    use sea_orm::TransactionTrait;
    let txn = ctx.db.begin().await?;
    let rows = PendingCommand::find_by_statement(sql(
        "SELECT message, message->>'traceparent' AS traceparent FROM commands \
         WHERE status = 'pending' AND message IS NOT NULL \
         AND COALESCE(republished_at, accepted_at) < now() - make_interval(secs => $1) \
         ORDER BY accepted_at LIMIT 100 FOR UPDATE SKIP LOCKED",
        [(ctx.settings.workers.command_republish_after_secs as f64).into()],
    ))
    .all(&txn)
    .await?;
    let mut ids = Vec::new();
    for row in &rows {
        // The api stores the request's trace beside the envelope (see `accept::submit`).
        let mut message = row.message.clone();
        if let Some(fields) = message.as_object_mut() {
            fields.remove("traceparent");
        }
        let envelope: CommandEnvelope = serde_json::from_value(message)?;
        let body = serde_json::to_vec(&envelope)?;
        showrunner_shared::commands::publish(
            &ctx.publisher,
            ctx.settings.amqp.partitions,
            &envelope,
            &body,
            row.traceparent.as_deref(),
        )
        .await?;
        ids.push(envelope.id);
    }
    if !ids.is_empty() {
        txn.execute_raw(sql(
            "UPDATE commands SET republished_at = now() WHERE id = ANY($1)",
            [ids.clone().into()],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(ids.len())
}
