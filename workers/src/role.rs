//! The role skeleton, written once for every worker role. A [`Role`] is what `showrunner up`,
//! the role binaries and the tests start; each role is one or two [`Part`]s, and [`serve`] runs
//! a part the same way whatever it consumes: the database (its schema checked), then broker
//! sessions one after another (paced by `session::Pacer`, so a failing broker is never
//! hammered), each with the part's background sweeps beside it, its probe told when it
//! consumes, its connection closed after it; until shutdown, when the part leaves (gives up
//! its heartbeat row or lease) and `serve` returns. Drain is the part's own: its session
//! returns once the batch or jobs in hand are settled.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use showrunner_shared::broker::{close_bounded, process_label, topology};
use showrunner_shared::config::Settings;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumers::event_log::Importer;
use crate::runtime::{BatchHandler, Context, consume};
use crate::{jobs, notifier, ops, session, shipper, supervisor};

/// A worker role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Applies commands from the partitions it owns (`partitions::Supervisor`).
    Episode,
    /// The importer of events published from outside, and the log shipper (one active at a
    /// time, the others stand by).
    Activity,
    /// Turns events into notifications, reading the event log (one active at a time, the
    /// others stand by).
    Notification,
    /// Runs jobs (competing consumers on the jobs queue: run as many as needed).
    Job,
}

impl Role {
    pub const ALL: [Self; 4] = [Self::Episode, Self::Activity, Self::Notification, Self::Job];

    /// Its name in logs, metrics, consumer tags, `database.role_users` and the ops endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Self::Episode => "episode-worker",
            Self::Activity => "activity-worker",
            Self::Notification => "notification-worker",
            Self::Job => "job-worker",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Its binary: `showrunner-<name>`.
    pub fn binary(self) -> String {
        format!("showrunner-{}", self.name())
    }

    /// Runs the role until `cancel` (the job worker with the built-in job types).
    pub async fn run(
        self,
        settings: Arc<Settings>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        self.run_with(settings, jobs::Registry::builtin(), cancel).await
    }

    /// Runs the role until `cancel`; a job worker runs the job types of `registry` (the other
    /// roles run no jobs).
    pub async fn run_with(
        self,
        settings: Arc<Settings>,
        registry: jobs::Registry,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let ops = ops::serving(&settings, self.name(), &cancel).await;
        let ops = Some(&ops);
        match self {
            Self::Episode => {
                serve(&settings, self, supervisor::Supervisor::new(), ops, &cancel).await
            }
            Self::Activity => {
                let importer =
                    Queue { role: self, queue: topology::EVENT_LOG_QUEUE, handler: Importer };
                // The shipper has no probe: standing by is as ready as shipping.
                let (imported, shipped) = tokio::join!(
                    serve(&settings, self, importer, ops, &cancel),
                    serve(&settings, self, shipper::Shipper::new(), None, &cancel),
                );
                imported.and(shipped)
            }
            Self::Notification => {
                serve(&settings, self, notifier::Notifier::new(), ops, &cancel).await
            }
            Self::Job => {
                let worker = jobs::worker::Worker::new(&settings, registry)?;
                serve(&settings, self, worker, ops, &cancel).await
            }
        }
    }

    /// A role binary's `main`.
    pub fn main(self) {
        showrunner_shared::process::main(&self.binary(), move |settings, cancel| {
            self.run(settings, cancel)
        })
    }
}

/// One broker session of a part: the context its handlers run with, the connection (closed by
/// [`serve`] after the session), and the shutdown signal.
pub struct Session<'a> {
    pub ctx: Context,
    pub conn: &'a lapin::Connection,
    pub cancel: &'a CancellationToken,
}

/// What differs between the parts of the roles; everything else is [`serve`].
pub trait Part: Send {
    /// Its name in logs and, with a probe, in `/ready`.
    fn label(&self) -> String;

    /// Whether the database pool pings a connection as it hands it out.
    fn ping_on_acquire(&self) -> bool {
        true
    }

    /// Starts the background sweeps that run beside a session (aborted when it ends): by
    /// default [`sweep_forever`], what every worker sweeps. A part's own sweeps go here.
    fn sweeps(&self, ctx: &Context, cancel: &CancellationToken, sweeps: &mut JoinSet<()>) {
        sweeps.spawn(sweep_forever(ctx.clone(), cancel.child_token()));
    }

    /// Consumes until `cancel` (then `Ok`, what was in hand settled) or until the session fails
    /// (`Err`: [`serve`] reconnects).
    fn session(&mut self, session: Session<'_>) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// After the last session: gives up what the part holds (a heartbeat row, a lease).
    fn leave(&mut self, _db: &DatabaseConnection) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs `part` of `role` until `cancel`: see the module's doc. `ops`: where its probe reports
/// (`None`: no probe).
pub async fn serve<P: Part>(
    settings: &Arc<Settings>,
    role: Role,
    mut part: P,
    ops: Option<&ops::Ops>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let name = role.name();
    let label = part.label();
    let db = session::database_with(settings, name, part.ping_on_acquire(), cancel).await?;
    let Some(db) = db else { return Ok(()) };
    let probe = ops.map(|ops| ops.probe(label.clone(), &db));
    tracing::info!(role = name, part = %label, "starting");
    let mut pacer = session::Pacer::default();
    while let Some((conn, ctx)) = pacer.connect(settings, &db, name, cancel).await {
        let mut sweeps = JoinSet::new();
        part.sweeps(&ctx, cancel, &mut sweeps);
        if let Some(probe) = &probe {
            probe.connected(&conn);
            probe.consuming(true);
        }
        let result = part.session(Session { ctx, conn: &conn, cancel }).await;
        if let Some(probe) = &probe {
            probe.consuming(false);
        }
        sweeps.abort_all();
        let _ = close_bounded(conn.close(200, "stopping".into())).await;
        match result {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(role = name, part = %label, %error, "session ended, reconnecting")
            }
        }
    }
    part.leave(&db).await;
    tracing::info!(role = name, part = %label, "stopped");
    Ok(())
}

/// A part that consumes one queue through the consume loop (`runtime::consume`): competing
/// consumers, run as many as needed.
struct Queue<H> {
    role: Role,
    queue: &'static str,
    handler: H,
}

impl<H: BatchHandler> Part for Queue<H> {
    fn label(&self) -> String {
        format!("{}/{}", self.role.name(), self.queue)
    }

    async fn session(&mut self, s: Session<'_>) -> anyhow::Result<()> {
        let Some(channel) = session::open_channel(s.conn).await else {
            anyhow::bail!("no channel");
        };
        // The queue in the tag tells the consumer's role and queue in the management UI.
        let tag = format!("{}/{}", process_label(self.role.name()), self.queue);
        let result = consume(&s.ctx, &channel, self.queue, &tag, &self.handler, s.cancel).await;
        let _ = close_bounded(channel.close(200, "stopping".into())).await;
        Ok(result?)
    }
}

/// What every worker sweeps, every second: the outbox rows and pending commands crashes left
/// behind (`session::sweep`); and, at most every `retention.interval_secs`, the retention sweep
/// in a task of its own (`retention::tick`).
pub async fn sweep_forever(ctx: Context, cancel: CancellationToken) {
    every_second(&cancel, || async {
        session::sweep(&ctx).await;
        crate::retention::tick(&ctx);
    })
    .await;
}

/// Runs `sweep` every second (a sweep that overran is followed by the next at once) until
/// `cancel`.
pub async fn every_second<F, Fut>(cancel: &CancellationToken, mut sweep: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => sweep().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        assert_eq!(Role::parse("api"), None);
        assert_eq!(Role::Job.binary(), "showrunner-job-worker");
    }
}
