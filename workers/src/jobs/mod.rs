//! The job worker: a registry of job handlers (one file per handler), the retry schedule, the
//! job row's transitions in PostgreSQL, and the consume loop that runs jobs with bounded
//! concurrency and schedules retries through the broker's delay tiers.

pub mod committer;
pub mod composition_export;
pub mod consumer;
pub mod episode_export;
pub mod file_purge;
pub mod files;
pub mod schedule;
pub mod settle;
pub mod store;
pub mod tracker;
pub mod webhook;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use showrunner_shared::config::Settings;
use showrunner_shared::jobs::types::{self, JobType, JobTypes};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why an attempt failed, and whether another attempt could succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a 5xx, a network error, a full disk...).
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Will fail the same way every time (bad payload, a 4xx...): the job fails at once.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl JobError {
    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(error.into())
    }
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// What a running job may use.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    /// Where files' bytes are (exports write files, `file.purge` removes them).
    pub storage: showrunner_shared::storage::Storage,
    signals: tracker::Signals,
}

impl JobContext {
    /// Cancelled when someone asked the job to stop (`POST /jobs/{id}/cancel`), or when the
    /// attempt is no longer this worker's. A handler that watches it and returns promptly
    /// ends the job `cancelled`; one that does not is abandoned after `jobs.cancel_grace_secs`
    /// and whatever it returns is discarded.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.signals.cancel
    }

    /// `Err` once the job was asked to stop: `ctx.stop_if_cancelled()?` between steps.
    pub fn stop_if_cancelled(&self) -> Result<(), JobError> {
        if self.signals.cancel.is_cancelled() {
            Err(JobError::permanent(anyhow::anyhow!("cancelled")))
        } else {
            Ok(())
        }
    }

    /// Reports how far the job is (0 to 100, and a short message). Cheap: the latest report
    /// is kept and written (`GET /jobs/{id}` shows it, `job_progress` tells subscribers) at
    /// most every `jobs.progress_interval_ms`.
    pub fn progress(&self, percent: u8, message: &str) {
        self.signals.report(percent, message);
    }
}

/// What running one job type means. The type itself (name, payload, schema) is declared in
/// `shared::jobs::types` (`JobType`), where the api sees it too.
pub trait JobHandler: Send + Sync + 'static {
    type Job: JobType;

    /// The result is stored in the job row and sent in `job_completed`.
    fn run(
        &self,
        ctx: &JobContext,
        payload: <Self::Job as JobType>::Payload,
    ) -> impl Future<Output = Result<serde_json::Value, JobError>> + Send;
}

type BoxedRun = Pin<Box<dyn Future<Output = Result<serde_json::Value, JobError>> + Send>>;

/// A handler with its payload type erased, so handlers of different types share a registry.
trait ErasedHandler: Send + Sync {
    fn run_json(self: Arc<Self>, ctx: JobContext, payload: serde_json::Value) -> BoxedRun;
}

impl<H: JobHandler> ErasedHandler for H {
    fn run_json(self: Arc<Self>, ctx: JobContext, payload: serde_json::Value) -> BoxedRun {
        Box::pin(async move {
            // The api checked it already; a row written before the type was declared (or a
            // payload that no longer fits a changed declaration) fails for good.
            let payload = types::parse::<H::Job>(&payload).map_err(|e| {
                JobError::permanent(anyhow::anyhow!("invalid payload for {}: {e}", H::Job::NAME))
            })?;
            self.run(&ctx, payload).await
        })
    }
}

/// Every job type a worker runs, by name, with their declarations (for the api).
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    declared: JobTypes,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self.handlers.keys().collect();
        types.sort();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Registry {
    /// The job types every deployment has.
    pub fn builtin() -> Self {
        Self::default()
            .with(webhook::Webhook)
            .with(episode_export::EpisodeExport)
            .with(file_purge::FilePurge)
            .with(composition_export::CompositionExport)
    }

    /// Adds (or replaces) the handler of `H::Job::NAME`.
    pub fn with<H: JobHandler>(mut self, handler: H) -> Self {
        self.handlers.insert(H::Job::NAME, Arc::new(handler));
        self.declared = self.declared.with::<H::Job>();
        self
    }

    /// The declarations of the types this registry runs: what the api must accept.
    pub fn job_types(&self) -> JobTypes {
        self.declared.clone()
    }

    pub fn types(&self) -> Vec<&'static str> {
        let mut types: Vec<_> = self.handlers.keys().copied().collect();
        types.sort_unstable();
        types
    }

    /// Runs the handler of `job_type`; an unknown type is a permanent failure.
    pub(crate) fn run(
        &self,
        job_type: &str,
        ctx: JobContext,
        payload: serde_json::Value,
    ) -> BoxedRun {
        match self.handlers.get(job_type) {
            Some(handler) => handler.clone().run_json(ctx, payload),
            None => {
                let message = format!("no handler for job type {job_type:?}");
                Box::pin(async move { Err(JobError::permanent(anyhow::anyhow!(message))) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_registry_runs_exactly_the_builtin_declarations() {
        // The api accepts `JobTypes::builtin()`; a type it accepts that no worker runs would
        // fail every job of it with "no handler".
        assert_eq!(Registry::builtin().types(), JobTypes::builtin().names());
        assert_eq!(Registry::builtin().job_types().names(), JobTypes::builtin().names());
    }
}
