//! What a consumer checks in a message from the broker before it acts on it, beyond what serde
//! checks. Anyone who can publish on the vhost can put bytes on a queue, so every consumer takes
//! its messages through [`decode`], and refuses (parks, or drops and counts) what fails:
//!
//! - **too large**: a body over `amqp.max_message_bytes` is refused before it is parsed;
//! - **invalid UTF-8**: JSON is UTF-8; the byte offset of the first bad byte is the reason;
//! - **missing envelope**: not a JSON object, or an object with neither `id` nor `version`;
//! - **unsupported version N**: a `version` this build does not read (also when the rest of the
//!   message would not decode: a newer writer may have changed it);
//! - **undecodable**: any other serde error (unknown command type, invalid field, a known
//!   event whose `data` does not fit its type...);
//! - **forged envelope**: it decodes, but does not hold together (see each `check`): a nil id,
//!   an absurd timestamp, a command on a partition its episode does not hash to, an event whose
//!   routing key is not its resource's (`episode_created` must travel on
//!   `episode.<data.episode.id>.created`, `composition_created` on
//!   `episode.<data.composition.episodeId>.composition.created`), a known event without its actor, or an unknown event
//!   on a topic family this system owns (`episode`, `user`, `job`, `system`).
//!
//! An unknown event name on another topic is accepted (a tolerant reader: a newer writer may add
//! event kinds, and the realtime benchmark publishes its own). The trust boundary is the broker's
//! credentials: a well-formed command that a holder of them publishes is applied, since nothing
//! signs commands.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::broker::topology::{JOBS_KEY, partition_of};
use crate::config::Settings;
use crate::contracts::{
    COMMAND_VERSION, CommandEnvelope, CommandRejected, EVENT_VERSION, EpisodeCreated,
    EpisodeDeleted, EpisodeUpdated, Event, EventData, EventEnvelope, JobCancelled, JobCompleted,
    JobFailed, JobProcessorStarted, JobProgress, JobQueued, JobRequest, JobRequeued, JobRetry,
    JobStarted, NotificationCreated, ViewerJoined, ViewerLeft,
};
use crate::resource::composition::{CompositionCreated, CompositionDeleted, CompositionUpdated};
use crate::resource::file::{FileDeleted, FileUploaded};

/// Why a message was refused; its `Display` is the `x-parked-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too large: {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("invalid UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("missing envelope: {0}")]
    NoEnvelope(&'static str),
    #[error("unsupported version {0}")]
    UnsupportedVersion(u64),
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("forged envelope: {0}")]
    Forged(String),
}

/// What the checks need from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_bytes: usize,
    pub partitions: u16,
    /// How far in the future a job request's `notBefore` may lie.
    pub job_horizon: Duration,
}

impl Rules {
    pub fn from_settings(settings: &Settings) -> Self {
        let jobs = &settings.jobs;
        // The longest legitimate wait is a retry delay or a held job's lease; an hour of slack
        // covers clocks that disagree.
        let longest = jobs.max_delay_ms.max(jobs.timeout_secs.saturating_mul(1000) + 2_000);
        Self {
            max_bytes: settings.amqp.max_message_bytes,
            partitions: settings.amqp.partitions,
            job_horizon: Duration::milliseconds(i64::try_from(longest).unwrap_or(i64::MAX / 2))
                + Duration::hours(1),
        }
    }
}

/// A message type that arrives from the broker.
pub trait Inbound: DeserializeOwned {
    /// The `version` this build reads, for messages that carry one.
    const VERSION: Option<u32>;

    fn version(&self) -> Option<u32>;

    /// Does the decoded message hold together? The reason if not.
    fn check(&self, routing_key: &str, rules: &Rules, now: DateTime<Utc>) -> Result<(), String>;
}

/// Longest reason kept: serde errors quote the input, and a header must stay small.
const REASON_MAX: usize = 300;

/// Decodes and checks one message body that arrived with `routing_key`.
pub fn decode<T: Inbound>(
    body: &[u8],
    routing_key: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<T, Refused> {
    if body.len() > rules.max_bytes {
        return Err(Refused::TooLarge { size: body.len(), max: rules.max_bytes });
    }
    let text = std::str::from_utf8(body).map_err(|e| Refused::NotUtf8(e.valid_up_to()))?;
    let message: T = serde_json::from_str(text).map_err(|e| diagnose::<T>(text, &e))?;
    if let (Some(supported), Some(version)) = (T::VERSION, message.version())
        && version != supported
    {
        return Err(Refused::UnsupportedVersion(u64::from(version)));
    }
    message.check(routing_key, rules, now).map_err(|reason| Refused::Forged(clip(reason)))?;
    Ok(message)
}

/// Why `text` did not decode as `T`: looked at only on failure, so the hot path parses once.
fn diagnose<T: Inbound>(text: &str, error: &serde_json::Error) -> Refused {
    let undecodable = || Refused::Undecodable(clip(error.to_string()));
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return undecodable();
    };
    let Some(object) = value.as_object() else {
        return Refused::NoEnvelope("not a JSON object");
    };
    let Some(supported) = T::VERSION else {
        return undecodable();
    };
    if !object.contains_key("id") && !object.contains_key("version") {
        return Refused::NoEnvelope("no id and no version");
    }
    match object.get("version").and_then(serde_json::Value::as_u64) {
        Some(version) if version != u64::from(supported) => Refused::UnsupportedVersion(version),
        _ => undecodable(),
    }
}

fn clip(mut reason: String) -> String {
    if reason.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// Timestamps before this are not from this system (the epoch, or garbage).
fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

/// A time from a peer: not before 2020 and not more than a day ahead of this clock.
fn sane_time(what: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    if at < earliest() || at > now + Duration::days(1) {
        return Err(format!("{what} {at} is absurd"));
    }
    Ok(())
}

fn not_nil(what: &str, id: Uuid) -> Result<(), String> {
    if id.is_nil() { Err(format!("{what} is the nil uuid")) } else { Ok(()) }
}

impl Inbound for CommandEnvelope {
    const VERSION: Option<u32> = Some(COMMAND_VERSION);

    fn version(&self) -> Option<u32> {
        Some(self.version)
    }

    fn check(&self, routing_key: &str, rules: &Rules, now: DateTime<Utc>) -> Result<(), String> {
        not_nil("id", self.id)?;
        not_nil("actor.id", self.actor.id)?;
        let episode = self.command.episode_id();
        not_nil("episodeId", episode)?;
        let (resource, id) = self.command.resource();
        not_nil(&format!("{} id", resource.as_str()), id)?;
        sane_time("acceptedAt", self.accepted_at, now)?;
        let partition = partition_of(episode, rules.partitions);
        if routing_key != partition.to_string() {
            return Err(format!(
                "episode {episode} belongs to partition {partition}, not {routing_key:?}"
            ));
        }
        Ok(())
    }
}

impl Inbound for JobRequest {
    const VERSION: Option<u32> = None;

    fn version(&self) -> Option<u32> {
        None
    }

    fn check(&self, routing_key: &str, rules: &Rules, now: DateTime<Utc>) -> Result<(), String> {
        not_nil("jobId", self.job_id)?;
        not_nil("dispatchId", self.dispatch_id)?;
        if routing_key != JOBS_KEY {
            return Err(format!("job request on routing key {routing_key:?}"));
        }
        if let Some(at) = self.not_before
            && (at < earliest() || at > now + rules.job_horizon)
        {
            // It would travel the delay tiers for that long.
            return Err(format!("notBefore {at} is absurd"));
        }
        Ok(())
    }
}

/// Topic families this system publishes on: only its known events may use them.
const OWNED_FAMILIES: &[&str] = &["episode", "user", "job", "system"];

impl Inbound for EventEnvelope {
    const VERSION: Option<u32> = Some(EVENT_VERSION);

    fn version(&self) -> Option<u32> {
        Some(self.version)
    }

    fn check(&self, routing_key: &str, _rules: &Rules, now: DateTime<Utc>) -> Result<(), String> {
        not_nil("id", self.id)?;
        sane_time("occurredAt", self.occurred_at, now)?;
        let name = self.event.name();
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            return Err("event name is empty, too long or not [a-z0-9_.-]".into());
        }
        if !is_topic(routing_key) {
            return Err(format!("routing key {routing_key:?} is not a topic"));
        }
        if let Some(actor) = &self.actor {
            not_nil("actor.id", actor.id)?;
        }
        match known_event(self, routing_key) {
            Some(result) => result,
            None => {
                let family = routing_key.split('.').next().unwrap_or_default();
                if OWNED_FAMILIES.contains(&family) {
                    Err(format!("unknown event {name:?} on {family}.* topic"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A topic as published: 1 to 255 bytes of non-empty words of `[A-Za-z0-9_-]`, no wildcards.
pub fn is_topic(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= crate::topics::PATTERN_MAX
        && key.split('.').all(|w| {
            !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The checks of a known event: `None` if the event is not one of ours.
fn known_event(e: &EventEnvelope, key: &str) -> Option<Result<(), String>> {
    /// The routing key must be `D`'s for the subject the data names.
    fn keyed<D: EventData<Subject = Uuid>>(key: &str, subject: Uuid) -> Result<(), String> {
        let expected = D::routing_key(&subject);
        if key == expected {
            Ok(())
        } else {
            Err(format!("{} of {subject} on {key:?}, expected {expected:?}", D::NAME))
        }
    }
    let actor = || {
        e.actor.as_ref().map(|a| a.id).ok_or_else(|| format!("{} without an actor", e.event.name()))
    };
    let result = match &e.event {
        Event::EpisodeCreated(d) => {
            actor().and_then(|_| keyed::<EpisodeCreated>(key, d.episode.id))
        }
        Event::EpisodeUpdated(d) => {
            actor().and_then(|_| keyed::<EpisodeUpdated>(key, d.episode.id))
        }
        Event::EpisodeDeleted(d) => {
            actor().and_then(|_| keyed::<EpisodeDeleted>(key, d.episode_id))
        }
        Event::CompositionCreated(d) => {
            actor().and_then(|_| keyed::<CompositionCreated>(key, d.composition.episode_id))
        }
        Event::CompositionUpdated(d) => {
            actor().and_then(|_| keyed::<CompositionUpdated>(key, d.composition.episode_id))
        }
        Event::CompositionDeleted(d) => {
            actor().and_then(|_| keyed::<CompositionDeleted>(key, d.episode_id))
        }
        Event::ViewerJoined(d) => actor().and_then(|_| keyed::<ViewerJoined>(key, d.0.episode_id)),
        Event::ViewerLeft(d) => actor().and_then(|_| keyed::<ViewerLeft>(key, d.0.episode_id)),
        Event::FileUploaded(d) => {
            actor().and_then(|_| keyed::<FileUploaded>(key, d.file.episode_id))
        }
        Event::FileDeleted(d) => actor().and_then(|_| keyed::<FileDeleted>(key, d.episode_id)),
        // Told to the actor whose command it was.
        Event::CommandRejected(_) => actor().and_then(|a| keyed::<CommandRejected>(key, a)),
        Event::NotificationCreated(d) => keyed::<NotificationCreated>(key, d.notification.user_id),
        Event::JobStarted(d) => actor().and_then(|_| keyed::<JobStarted>(key, d.job_id)),
        Event::JobCompleted(d) => actor().and_then(|_| keyed::<JobCompleted>(key, d.job_id)),
        Event::JobRetry(d) => actor().and_then(|_| keyed::<JobRetry>(key, d.job_id)),
        Event::JobFailed(d) => actor().and_then(|_| keyed::<JobFailed>(key, d.job_id)),
        Event::JobQueued(d) => actor().and_then(|_| keyed::<JobQueued>(key, d.job_id)),
        Event::JobCancelled(d) => actor().and_then(|_| {
            not_nil("cancelledBy.id", d.cancelled_by.id)?;
            keyed::<JobCancelled>(key, d.job_id)
        }),
        Event::JobRequeued(d) => actor().and_then(|_| {
            not_nil("requeuedBy.id", d.requeued_by.id)?;
            keyed::<JobRequeued>(key, d.job_id)
        }),
        Event::JobProgress(d) => actor().and_then(|_| {
            if d.percent > 100 {
                return Err(format!("job_progress percent {} is over 100", d.percent));
            }
            keyed::<JobProgress>(key, d.job_id)
        }),
        Event::JobProcessorStarted(_) => {
            let expected = JobProcessorStarted::routing_key(&());
            if key == expected { Ok(()) } else { Err(format!("job_processor_started on {key:?}")) }
        }
        Event::Other(_) => return None,
    };
    Some(result)
}

#[cfg(test)]
mod tests;
