//! Events as they travel on the events exchange: the [`EventEnvelope`] (id, actor, times,
//! correlation) around one [`Event`], the enum of every event this system publishes, tagged by
//! its name (`event`) with its typed payload (`data`). An event is parsed into it once, by
//! `inbound::decode`, and every consumer matches on it; nothing reads a payload by a string
//! path. An event name this build does not know is kept as [`Event::Other`] with its data as
//! JSON (a tolerant reader: `inbound` refuses it on the topic families this system owns).
//!
//! Adding an event: its payload type with an [`EventData`] impl beside its resource, and its
//! name in the `events!` list below (the wire format test in `tests/wire.rs` then asks for its
//! snapshot).

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::contracts::{
    Actor, CommandRejected, JobCancelled, JobCompleted, JobFailed, JobProcessorStarted,
    JobProgress, JobQueued, JobRequeued, JobRetry, JobStarted, NotificationCreated, ViewerJoined,
    ViewerLeft,
};
use crate::resource::composition::{CompositionCreated, CompositionDeleted, CompositionUpdated};
use crate::resource::episode::{EpisodeCreated, EpisodeDeleted, EpisodeUpdated};
use crate::resource::file::{FileDeleted, FileUploaded};

pub const EVENT_VERSION: u32 = 1;

/// A typed event payload: its name on the wire, its routing key, and its [`Event`] variant.
pub trait EventData: Serialize + Clone + Into<Event> {
    const NAME: &'static str;
    type Subject: ?Sized;
    fn routing_key(subject: &Self::Subject) -> String;
}

/// An event whose name this build does not know, kept as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Foreign {
    pub event: String,
    pub data: serde_json::Value,
}

/// Declares [`Event`] from a list of payload types, each variant named like its type, and the
/// one mapping between a variant and its wire name (`EventData::NAME`) both ways.
macro_rules! events {
    ($($variant:ident),* $(,)?) => {
        /// Every event, by name; see the module's documentation.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($variant($variant),)*
            /// Not one of ours (a newer writer's, or a foreign publisher's).
            Other(Foreign),
        }

        impl Event {
            /// Every name this build knows, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($variant::NAME),*];

            /// The `event` field on the wire.
            pub fn name(&self) -> &str {
                match self {
                    $(Self::$variant(_) => $variant::NAME,)*
                    Self::Other(f) => &f.event,
                }
            }

            /// The event named `name` with this `data`; an error if the name is one of ours
            /// and the data does not fit its type.
            pub fn from_parts(name: String, data: serde_json::Value) -> Result<Self, String> {
                match name.as_str() {
                    $($variant::NAME => $variant::deserialize(data)
                        .map(Self::$variant)
                        .map_err(|error| format!("{name} data: {error}")),)*
                    _ => Ok(Self::Other(Foreign { event: name, data })),
                }
            }

            fn serialize_data<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Self::$variant(d) => d.serialize(s),)*
                    Self::Other(f) => f.data.serialize(s),
                }
            }
        }

        $(impl From<$variant> for Event {
            fn from(data: $variant) -> Self {
                Self::$variant(data)
            }
        })*
    };
}

events!(
    EpisodeCreated,
    EpisodeUpdated,
    EpisodeDeleted,
    CompositionCreated,
    CompositionUpdated,
    CompositionDeleted,
    FileUploaded,
    FileDeleted,
    ViewerJoined,
    ViewerLeft,
    CommandRejected,
    NotificationCreated,
    JobProcessorStarted,
    JobQueued,
    JobStarted,
    JobProgress,
    JobCompleted,
    JobRetry,
    JobFailed,
    JobCancelled,
    JobRequeued,
);

impl Event {
    /// The payload as JSON (the activity log's `data`, a WebSocket frame's `data`).
    pub fn data_value(&self) -> serde_json::Value {
        // Serializing these plain structs into a `Value` cannot fail.
        self.serialize_data(serde_json::value::Serializer).unwrap_or(serde_json::Value::Null)
    }

    /// The payload alone, for a `Serialize` that places it itself.
    pub fn data(&self) -> impl Serialize + '_ {
        Data(self)
    }
}

struct Data<'a>(&'a Event);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_data(s)
    }
}

/// Every event on the events exchange: who, when, why (the command it answers), and what.
/// On the wire `event` is the name and `data` the payload, in the field order below.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub id: Uuid,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub actor: Option<Actor>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub event: Event,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    id: Uuid,
    event: &'a str,
    version: u32,
    occurred_at: DateTime<Utc>,
    actor: &'a Option<Actor>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    data: Data<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    id: Uuid,
    event: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    actor: Option<Actor>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    data: serde_json::Value,
}

impl Serialize for EventEnvelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            id: self.id,
            event: self.event.name(),
            version: self.version,
            occurred_at: self.occurred_at,
            actor: &self.actor,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            data: Data(&self.event),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireIn::deserialize(d)?;
        let event = Event::from_parts(wire.event, wire.data).map_err(D::Error::custom)?;
        Ok(Self {
            id: wire.id,
            version: wire.version,
            occurred_at: wire.occurred_at,
            actor: wire.actor,
            correlation_id: wire.correlation_id,
            causation_id: wire.causation_id,
            event,
        })
    }
}

/// An event ready to be written to an outbox: its envelope and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    pub routing_key: String,
    pub envelope: EventEnvelope,
}

impl OutgoingEvent {
    /// Builds an event with a fresh time-ordered id.
    pub fn new<D: EventData>(
        subject: &D::Subject,
        data: &D,
        actor: Option<Actor>,
        correlation_id: Option<Uuid>,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            routing_key: D::routing_key(subject),
            envelope: EventEnvelope {
                id: Uuid::now_v7(),
                version: EVENT_VERSION,
                occurred_at,
                actor,
                correlation_id,
                causation_id: correlation_id,
                event: data.clone().into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names = Event::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::NAMES.len());
        let other = Event::from_parts("bench.tick".into(), serde_json::json!({"n": 1}));
        assert_eq!(
            other,
            Ok(Event::Other(Foreign {
                event: "bench.tick".into(),
                data: serde_json::json!({"n": 1})
            }))
        );
        let bad = Event::from_parts("job_progress".into(), serde_json::json!({"jobId": 1}));
        assert!(bad.is_err_and(|e| e.starts_with("job_progress data:")));
    }
}
