//! Jobs as every process sees them: the declared job types ([`types`]), and publishing job
//! requests: straight to the jobs queue, or, while their `notBefore` is ahead, into the delay
//! tier that fits what remains (the worker sends them on until it is reached).

pub mod types;

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};

use crate::broker::topology::{
    JOBS_DELAY_EXCHANGE, JOBS_EXCHANGE, JOBS_KEY, job_delay_queue, job_delay_tier,
};
use crate::broker::{Outgoing, PublishError, Publisher, publisher_json_properties};
use crate::contracts::JobRequest;

/// Where a job is, as `jobs.status` stores it (and its CHECK constraint lists).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    sea_orm::EnumIter,
    sea_orm::DeriveActiveEnum,
)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Waiting for its `runAt`.
    Scheduled,
    Running,
    /// Failed an attempt, the next one waits in a delay tier.
    Retrying,
    Succeeded,
    /// Out of attempts (or failed permanently): parked.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Scheduled,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Not yet running, so it can be cancelled without asking a worker.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::Scheduled | Self::Retrying)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Milliseconds from `now` until the request may run (0 when it may run now).
pub fn remaining_ms(request: &JobRequest, now: DateTime<Utc>) -> u64 {
    request.not_before.map(|at| (at - now).num_milliseconds().max(0) as u64).unwrap_or(0)
}

/// Publishes `request` with a confirm: to a delay tier if it must wait, else to the jobs queue.
pub async fn publish(
    publisher: &Publisher,
    request: &JobRequest,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    publish_traced(publisher, request, now, None).await
}

/// [`publish`] with a W3C `traceparent` header (the trace of the request that made the job).
pub async fn publish_traced(
    publisher: &Publisher,
    request: &JobRequest,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent {
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    }
    // Serializing ids and a timestamp cannot fail.
    let body = serde_json::to_vec(request).unwrap_or_default();
    let tier = job_delay_tier(remaining_ms(request, now)).map(job_delay_queue);
    let (exchange, routing_key) = match &tier {
        Some(queue) => (JOBS_DELAY_EXCHANGE, queue.as_str()),
        None => (JOBS_EXCHANGE, JOBS_KEY),
    };
    publisher
        .publish(Outgoing {
            exchange,
            routing_key,
            body: &body,
            properties: publisher_json_properties(&request.dispatch_id.to_string(), "job", headers),
            mandatory: true,
        })
        .await
}
