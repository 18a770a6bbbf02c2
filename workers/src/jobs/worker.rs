//! The job worker's part of the role skeleton (`crate::role`): per broker session, a channel,
//! the `job_processor_started` announcement, the job sweeps beside the consume loop
//! (`consumer::consume`), and the committer flushed before the connection closes.

use std::sync::Arc;
use std::time::Duration;

use showrunner_shared::broker::{close_bounded, process_label};
use showrunner_shared::config::Settings;
use showrunner_shared::storage::Storage;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::role::{Part, Role, Session, every_second};
use crate::runtime::Context;
use crate::session;

/// A job worker with the job types of its registry.
pub struct Worker {
    registry: super::Registry,
    tag: String,
    http: reqwest::Client,
    storage: Storage,
}

impl Worker {
    pub fn new(settings: &Arc<Settings>, registry: super::Registry) -> anyhow::Result<Self> {
        let storage = Storage::open(&settings.storage)?;
        tracing::info!(types = ?registry.types(), ?storage, "job worker starting");
        Ok(Self {
            registry,
            tag: format!("{}/{}", process_label(Role::Job.name()), Uuid::now_v7()),
            http: super::webhook::client()?,
            storage,
        })
    }
}

impl Part for Worker {
    fn label(&self) -> String {
        Role::Job.name().to_string()
    }

    /// No ping per acquire: it would double the round trips of the short job statements; a
    /// connection broken by a restart fails one request, which comes back through a delay tier.
    fn ping_on_acquire(&self) -> bool {
        false
    }

    fn sweeps(&self, ctx: &Context, cancel: &CancellationToken, sweeps: &mut JoinSet<()>) {
        sweeps.spawn(sweep_jobs_forever(ctx.clone(), cancel.child_token()));
        sweeps.spawn(super::files::sweep_orphans_forever(
            ctx.clone(),
            self.storage.clone(),
            cancel.child_token(),
        ));
    }

    async fn session(&mut self, s: Session<'_>) -> anyhow::Result<()> {
        let Some(channel) = session::open_channel(s.conn).await else {
            anyhow::bail!("no channel");
        };
        announce(&s.ctx, &self.tag).await;
        // Shared by every job task (one `Arc` each: a clone of the runner itself copied the job
        // type registry and a dozen handles per job).
        let runner = std::sync::Arc::new(super::consumer::Runner::new(
            s.ctx,
            self.registry.clone(),
            self.http.clone(),
            self.storage.clone(),
        ));
        let result = super::consumer::consume(&runner, &channel, &self.tag, s.cancel).await;
        // What the finished jobs handed the committer is written before the connection closes
        // (the flush waits until every handle, the job tasks' included, is gone).
        let committer = runner.committer.clone();
        drop(runner);
        committer.flush(Duration::from_secs(5)).await;
        let _ = close_bounded(channel.close(200, "stopping".into())).await;
        Ok(result?)
    }
}

/// The job worker's sweeper: what every worker sweeps (`session::sweep`), plus job requests
/// that seem lost (see `store::stranded`), every second.
pub async fn sweep_jobs_forever(ctx: Context, cancel: CancellationToken) {
    every_second(&cancel, || async {
        session::sweep(&ctx).await;
        crate::retention::tick(&ctx);
        match republish_stranded(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "sweeper republished stranded job requests"),
            Err(error) => tracing::warn!(%error, "job sweep failed"),
        }
    })
    .await;
}

async fn republish_stranded(ctx: &Context) -> anyhow::Result<usize> {
    let after = Duration::from_secs(ctx.settings.workers.command_republish_after_secs);
    let (txn, requests) = super::store::stranded(&ctx.db, after, 100).await?;
    let now = chrono::Utc::now();
    for request in &requests {
        showrunner_shared::jobs::publish(&ctx.publisher, request, now).await?;
    }
    txn.commit().await?;
    Ok(requests.len())
}

/// `job_processor_started`, through the event log like every event.
async fn announce(ctx: &Context, instance: &str) {
    use showrunner_shared::contracts::{JobProcessorStarted, OutgoingEvent};
    use showrunner_shared::event_log::{self, StoredEvent};
    let jobs = &ctx.settings.jobs;
    let event = OutgoingEvent::new(
        &(),
        &JobProcessorStarted {
            instance: instance.to_string(),
            prefetch: jobs.prefetch,
            max_concurrent: jobs.max_in_flight,
        },
        None,
        None,
        chrono::Utc::now(),
    );
    let events = [StoredEvent::from_outgoing(&event, None)];
    if let Err(error) = event_log::record_new(&ctx.db, &events).await {
        tracing::warn!(%error, "could not announce the job worker");
    }
}
