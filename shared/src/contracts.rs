//! Message contracts: the JSON that travels on RabbitMQ, with the routing keys beside it.
//! Commands go to the `commands` exchange; events to the `events` topic exchange inside an
//! [`EventEnvelope`]. Field names are camelCase like the REST API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Categories, Description, EpisodeStatus, Title};
use crate::resource::ResourceType;
use crate::resource::composition::{CompositionChanges, CompositionName, Tracks};
use crate::resource::file::{FileName, MediaType, Sha256Hex};
// Each resource's types live in its module (`crate::resource`); these paths stay for callers.
pub use crate::resource::episode::{
    Episode, EpisodeChanges, EpisodeCreated, EpisodeDeleted, EpisodeUpdated,
};
// Events have a module of their own; these paths stay for callers.
pub use crate::event::{EVENT_VERSION, Event, EventData, EventEnvelope, OutgoingEvent};
use crate::jobs::JobStatus;

/// Who did it: carried by every command and event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    pub id: Uuid,
    pub name: String,
}

pub const COMMAND_VERSION: u32 = 1;

/// A command as the API accepted it; the command worker applies it exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandEnvelope {
    pub id: Uuid,
    pub version: u32,
    pub actor: Actor,
    pub accepted_at: DateTime<Utc>,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Command {
    CreateEpisode {
        episode_id: Uuid,
        title: Title,
        description: Description,
        status: EpisodeStatus,
        categories: Categories,
    },
    UpdateEpisode {
        episode_id: Uuid,
        changes: EpisodeChanges,
    },
    DeleteEpisode {
        episode_id: Uuid,
        permanent: bool,
    },
    CreateComposition {
        episode_id: Uuid,
        composition_id: Uuid,
        name: CompositionName,
        #[serde(default)]
        tracks: Tracks,
    },
    UpdateComposition {
        episode_id: Uuid,
        composition_id: Uuid,
        changes: CompositionChanges,
        /// `If-Match`: applied only if the composition is at this version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version: Option<i64>,
    },
    DeleteComposition {
        episode_id: Uuid,
        composition_id: Uuid,
        permanent: bool,
    },
    /// The bytes are stored already (`storage::file_key(episode_id, file_id)`); this records
    /// the file (`file.record`).
    RecordFile {
        episode_id: Uuid,
        file_id: Uuid,
        name: FileName,
        content_type: MediaType,
        size: i64,
        sha256: Sha256Hex,
    },
    DeleteFile {
        episode_id: Uuid,
        file_id: Uuid,
        permanent: bool,
    },
}

impl Command {
    /// The episode whose partition carries this command (for an episode's children, their
    /// episode): the commands of one episode apply in the order they were accepted.
    pub fn episode_id(&self) -> Uuid {
        match self {
            Self::CreateEpisode { episode_id, .. }
            | Self::UpdateEpisode { episode_id, .. }
            | Self::DeleteEpisode { episode_id, .. }
            | Self::CreateComposition { episode_id, .. }
            | Self::UpdateComposition { episode_id, .. }
            | Self::DeleteComposition { episode_id, .. }
            | Self::RecordFile { episode_id, .. }
            | Self::DeleteFile { episode_id, .. } => *episode_id,
        }
    }

    /// The resource the command acts on, as its `commands` row names it.
    pub fn resource(&self) -> (ResourceType, Uuid) {
        match self {
            Self::CreateEpisode { episode_id, .. }
            | Self::UpdateEpisode { episode_id, .. }
            | Self::DeleteEpisode { episode_id, .. } => (ResourceType::Episode, *episode_id),
            Self::CreateComposition { composition_id, .. }
            | Self::UpdateComposition { composition_id, .. }
            | Self::DeleteComposition { composition_id, .. } => {
                (ResourceType::Composition, *composition_id)
            }
            Self::RecordFile { file_id, .. } | Self::DeleteFile { file_id, .. } => {
                (ResourceType::File, *file_id)
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateEpisode { .. } => "create_episode",
            Self::UpdateEpisode { .. } => "update_episode",
            Self::DeleteEpisode { .. } => "delete_episode",
            Self::CreateComposition { .. } => "create_composition",
            Self::UpdateComposition { .. } => "update_composition",
            Self::DeleteComposition { .. } => "delete_composition",
            Self::RecordFile { .. } => "record_file",
            Self::DeleteFile { .. } => "delete_file",
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteType {
    Soft,
    Permanent,
}

impl DeleteType {
    /// The type of a delete asked for with `?permanent=`.
    pub fn of(permanent: bool) -> Self {
        if permanent { Self::Permanent } else { Self::Soft }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Permanent => "permanent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRejected {
    pub command_id: Uuid,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub event_id: Uuid,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationCreated {
    pub notification: Notification,
}

/// Someone who is looking at an episode.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Viewer {
    pub user_id: Uuid,
    pub user_name: String,
}

/// `viewer_joined` and `viewer_left` carry the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub episode_id: Uuid,
    pub user_id: Uuid,
    pub user_name: String,
    pub viewers: Vec<Viewer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ViewerJoined(pub Presence);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ViewerLeft(pub Presence);

use crate::resource::episode::episode_event;

episode_event!(ViewerJoined, "viewer_joined", "presence");
episode_event!(ViewerLeft, "viewer_left", "presence");

impl EventData for CommandRejected {
    const NAME: &'static str = "command_rejected";
    type Subject = Uuid;
    fn routing_key(user_id: &Uuid) -> String {
        format!("user.{user_id}.command")
    }
}

impl EventData for NotificationCreated {
    const NAME: &'static str = "notification_created";
    type Subject = Uuid;
    fn routing_key(user_id: &Uuid) -> String {
        format!("user.{user_id}.notification")
    }
}

/// The message on the jobs queue: "run this job's next attempt". The job row is the truth
/// (payload, attempts, status); the message only says which copy may run and from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRequest {
    pub job_id: Uuid,
    /// Must equal the row's `dispatch_id`, or this copy is stale and is skipped.
    pub dispatch_id: Uuid,
    /// Not to run before this instant (a delayed retry travelling through the delay tiers).
    pub not_before: Option<DateTime<Utc>>,
}

/// `system.jobs.started`: a job worker is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProcessorStarted {
    pub instance: String,
    pub prefetch: u16,
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStarted {
    pub job_id: Uuid,
    pub attempt: i32,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCompleted {
    pub job_id: Uuid,
    pub results: serde_json::Value,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRetry {
    pub job_id: Uuid,
    /// Attempts made so far (the failed one included).
    pub retry_count: i32,
    /// Milliseconds until the next attempt.
    pub delay: u64,
    pub error: String,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFailed {
    pub job_id: Uuid,
    pub error: String,
    /// Always true: no further attempt will run (the seed's field).
    pub retries_exhausted: bool,
    pub timestamp: DateTime<Utc>,
}

/// `job.{id}.queued`: `POST /jobs` accepted the job (its request is confirmed by the broker).
/// Like every job event its actor is the job's creator (the WebSocket audience of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobQueued {
    pub job_id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub max_attempts: i32,
    pub episode_id: Option<Uuid>,
    /// Not to run before this instant (`runAt` of `POST /jobs`), if scheduled.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    pub timestamp: DateTime<Utc>,
}

/// `job.{id}.cancelled`: the job will not run (again). The actor is the job's creator; who
/// cancelled it is `cancelledBy` (the creator or an admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCancelled {
    pub job_id: Uuid,
    pub cancelled_by: Actor,
    /// The status it left: `queued`, `scheduled`, `retrying`, or `running` (its handler was
    /// asked to stop).
    pub previous_status: JobStatus,
    pub timestamp: DateTime<Utc>,
}

/// `job.{id}.requeued`: an admin replayed a failed job from attempt 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequeued {
    pub job_id: Uuid,
    pub requeued_by: Actor,
    /// Attempts the failed run had made.
    pub previous_attempts: i32,
    pub timestamp: DateTime<Utc>,
}

/// `job.{id}.progress`: how far a running job is (at most a few per second per job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub job_id: Uuid,
    pub attempt: i32,
    /// 0 to 100.
    pub percent: u8,
    pub message: String,
    pub timestamp: DateTime<Utc>,
}

impl EventData for JobProcessorStarted {
    const NAME: &'static str = "job_processor_started";
    type Subject = ();
    fn routing_key((): &()) -> String {
        "system.jobs.started".into()
    }
}

macro_rules! job_event {
    ($ty:ty, $name:literal, $suffix:literal) => {
        impl EventData for $ty {
            const NAME: &'static str = $name;
            type Subject = Uuid;
            fn routing_key(job_id: &Uuid) -> String {
                format!("job.{job_id}.{}", $suffix)
            }
        }
    };
}

job_event!(JobStarted, "job_started", "started");
job_event!(JobCompleted, "job_completed", "completed");
job_event!(JobRetry, "job_retry", "retry");
job_event!(JobFailed, "job_failed", "failed");
job_event!(JobQueued, "job_queued", "queued");
job_event!(JobCancelled, "job_cancelled", "cancelled");
job_event!(JobRequeued, "job_requeued", "requeued");
job_event!(JobProgress, "job_progress", "progress");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_has_a_stable_wire_format() {
        let id = Uuid::from_u128(1);
        let envelope = CommandEnvelope {
            id,
            version: COMMAND_VERSION,
            actor: Actor { id, name: "Alice".into() },
            accepted_at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            command: Command::DeleteEpisode { episode_id: id, permanent: true },
        };
        let json = serde_json::to_string(&envelope).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"id":"00000000-0000-0000-0000-000000000001","version":1,"actor":{"id":"00000000-0000-0000-0000-000000000001","name":"Alice"},"acceptedAt":"1970-01-01T00:00:00Z","command":{"type":"delete_episode","episodeId":"00000000-0000-0000-0000-000000000001","permanent":true}}"#
        );
        let back: CommandEnvelope = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, envelope);
    }

    #[test]
    fn a_command_with_an_invalid_field_does_not_decode() {
        let bad = r#"{"id":"00000000-0000-0000-0000-000000000001","version":1,"actor":{"id":"00000000-0000-0000-0000-000000000001","name":"A"},"acceptedAt":"1970-01-01T00:00:00Z","command":{"type":"update_episode","episodeId":"00000000-0000-0000-0000-000000000001","changes":{"title":""}}}"#;
        assert!(serde_json::from_str::<CommandEnvelope>(bad).is_err());
        let unknown = bad.replace("update_episode", "launch_rocket");
        assert!(serde_json::from_str::<CommandEnvelope>(&unknown).is_err());
    }

    #[test]
    fn routing_keys() {
        let id = Uuid::from_u128(7);
        assert_eq!(EpisodeCreated::routing_key(&id), format!("episode.{id}.created"));
        assert_eq!(CommandRejected::routing_key(&id), format!("user.{id}.command"));
        assert_eq!(NotificationCreated::routing_key(&id), format!("user.{id}.notification"));
        assert_eq!(JobRetry::routing_key(&id), format!("job.{id}.retry"));
        assert_eq!(JobProcessorStarted::routing_key(&()), "system.jobs.started");
    }

    #[test]
    fn job_events_keep_the_seed_field_names() {
        let at = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let id = Uuid::from_u128(1);
        let retry = JobRetry {
            job_id: id,
            retry_count: 2,
            delay: 400,
            error: "boom".into(),
            timestamp: at,
        };
        assert_eq!(
            serde_json::to_string(&retry).unwrap_or_default(),
            r#"{"jobId":"00000000-0000-0000-0000-000000000001","retryCount":2,"delay":400,"error":"boom","timestamp":"1970-01-01T00:00:00Z"}"#
        );
        let failed =
            JobFailed { job_id: id, error: "boom".into(), retries_exhausted: true, timestamp: at };
        assert_eq!(
            serde_json::to_string(&failed).unwrap_or_default(),
            r#"{"jobId":"00000000-0000-0000-0000-000000000001","error":"boom","retriesExhausted":true,"timestamp":"1970-01-01T00:00:00Z"}"#
        );
        let started = JobProcessorStarted { instance: "w".into(), prefetch: 8, max_concurrent: 4 };
        assert_eq!(
            serde_json::to_string(&started).unwrap_or_default(),
            r#"{"instance":"w","prefetch":8,"maxConcurrent":4}"#
        );
    }
}
