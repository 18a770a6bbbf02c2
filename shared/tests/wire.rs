//! The wire formats, pinned: every command, every event and the job request as they travel on
//! RabbitMQ (their JSON in `snapshots/`), each read back into the same value. A change to the
//! wire fails here until its snapshot is reviewed (`cargo insta review`, or
//! `INSTA_UPDATE=always cargo test -p showrunner-shared --test wire` and read the diff).
//! A new command variant or event name fails to compile (`slot`) or fails
//! `every_event_is_pinned` until it has a sample here.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use showrunner_shared::contracts::{
    Actor, COMMAND_VERSION, Command, CommandEnvelope, CommandRejected, DeleteType, Episode,
    EpisodeChanges, EpisodeCreated, EpisodeDeleted, EpisodeUpdated, Event, EventData,
    EventEnvelope, JobCancelled, JobCompleted, JobFailed, JobProcessorStarted, JobProgress,
    JobQueued, JobRequest, JobRequeued, JobRetry, JobStarted, Notification, NotificationCreated,
    OutgoingEvent, Presence, Viewer, ViewerJoined, ViewerLeft,
};
use showrunner_shared::domain::EpisodeStatus;
use showrunner_shared::jobs::JobStatus;
use showrunner_shared::resource::composition::{
    Clip, Composition, CompositionChanges, CompositionCreated, CompositionDeleted,
    CompositionUpdated, Track, TrackKind, Tracks,
};
use showrunner_shared::resource::file::{File, FileDeleted, FileUploaded};
use uuid::Uuid;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).single().unwrap_or_default()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn alice() -> Actor {
    Actor { id: id(0xa), name: "Alice".into() }
}

fn parse<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid sample")
}

/// What travels, and that it reads back as the same value.
fn wire<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: &T) -> String {
    let text = serde_json::to_string_pretty(message).expect("serializes");
    let back: T = serde_json::from_str(&text).expect("reads back");
    assert_eq!(&back, message);
    text
}

fn tracks() -> Tracks {
    let clip =
        Clip { file_id: id(0xf), start_us: 0, source_in_us: 500_000, duration_us: 2_000_000 };
    Tracks::validate(vec![Track { kind: TrackKind::Audio, clips: vec![clip] }])
        .expect("valid tracks")
}

/// The SHA-256 of the empty input, as a file's checksum sample.
const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn file() -> File {
    File {
        id: id(0xf),
        episode_id: id(1),
        name: "stem.wav".into(),
        content_type: "audio/wav".into(),
        size: 1_048_576,
        sha256: SHA256.into(),
        created_by: alice().id,
        created_at: at(),
        deleted_at: None,
    }
}

fn episode() -> Episode {
    Episode {
        id: id(1),
        title: "Pilot".into(),
        description: "The first one".into(),
        status: EpisodeStatus::Draft,
        categories: vec!["tech".into()],
        created_by: alice().id,
        updated_by: alice().id,
        created_at: at(),
        updated_at: at(),
        deleted_at: None,
        version: 1,
    }
}

fn composition() -> Composition {
    let tracks = tracks();
    Composition {
        id: id(2),
        episode_id: id(1),
        name: "Rough cut".into(),
        duration_us: tracks.duration_us(),
        tracks: tracks.into(),
        version: 1,
        created_by: alice().id,
        updated_by: alice().id,
        created_at: at(),
        updated_at: at(),
        deleted_at: None,
    }
}

/// Each command kind's place in [`commands`]: a new variant does not compile until it has one.
fn slot(command: &Command) -> usize {
    match command {
        Command::CreateEpisode { .. } => 0,
        Command::UpdateEpisode { .. } => 1,
        Command::DeleteEpisode { .. } => 2,
        Command::CreateComposition { .. } => 3,
        Command::UpdateComposition { .. } => 4,
        Command::DeleteComposition { .. } => 5,
        Command::RecordFile { .. } => 6,
        Command::DeleteFile { .. } => 7,
    }
}

fn commands() -> Vec<Command> {
    vec![
        Command::CreateEpisode {
            episode_id: id(1),
            title: parse(serde_json::json!("Pilot")),
            description: parse(serde_json::json!("The first one")),
            status: EpisodeStatus::Draft,
            categories: parse(serde_json::json!(["tech"])),
        },
        Command::UpdateEpisode {
            episode_id: id(1),
            changes: EpisodeChanges {
                title: Some(parse(serde_json::json!("Pilot, again"))),
                status: Some(EpisodeStatus::Published),
                ..EpisodeChanges::default()
            },
        },
        Command::DeleteEpisode { episode_id: id(1), permanent: false },
        Command::CreateComposition {
            episode_id: id(1),
            composition_id: id(2),
            name: parse(serde_json::json!("Rough cut")),
            tracks: tracks(),
        },
        Command::UpdateComposition {
            episode_id: id(1),
            composition_id: id(2),
            changes: CompositionChanges {
                name: Some(parse(serde_json::json!("Fine cut"))),
                tracks: None,
            },
            if_version: Some(3),
        },
        Command::DeleteComposition { episode_id: id(1), composition_id: id(2), permanent: true },
        Command::RecordFile {
            episode_id: id(1),
            file_id: id(0xf),
            name: parse(serde_json::json!("stem.wav")),
            content_type: parse(serde_json::json!("audio/wav")),
            size: 1_048_576,
            sha256: parse(serde_json::json!(SHA256)),
        },
        Command::DeleteFile { episode_id: id(1), file_id: id(0xf), permanent: false },
    ]
}

#[test]
fn every_command_is_pinned() {
    let commands = commands();
    let slots: Vec<usize> = commands.iter().map(slot).collect();
    assert_eq!(slots, (0..8).collect::<Vec<_>>(), "one sample per command kind, in order");
    for command in commands {
        let kind = command.kind();
        let envelope = CommandEnvelope {
            id: id(0xc),
            version: COMMAND_VERSION,
            actor: alice(),
            accepted_at: at(),
            command,
        };
        insta::assert_snapshot!(format!("command_{kind}"), wire(&envelope));
    }
}

fn job<D: EventData<Subject = Uuid>>(data: D) -> OutgoingEvent {
    OutgoingEvent::new(&id(3), &data, Some(alice()), Some(id(3)), at())
}

fn presence() -> Presence {
    Presence {
        episode_id: id(1),
        user_id: alice().id,
        user_name: alice().name,
        viewers: vec![Viewer { user_id: alice().id, user_name: alice().name }],
    }
}

/// One event of every kind, as its writer builds it (routing key included).
fn events() -> Vec<OutgoingEvent> {
    let by = Some(alice());
    let cause = Some(id(0xc));
    vec![
        OutgoingEvent::new(
            &id(1),
            &EpisodeCreated { episode: episode(), created_by: alice().id, timestamp: at() },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &EpisodeUpdated {
                episode: Episode { version: 2, status: EpisodeStatus::Published, ..episode() },
                changed_fields: vec!["status".into()],
                updated_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &EpisodeDeleted {
                episode_id: id(1),
                title: "Pilot".into(),
                delete_type: DeleteType::Soft,
                deleted_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &CompositionCreated {
                composition: composition(),
                created_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &CompositionUpdated {
                composition: Composition { version: 2, name: "Fine cut".into(), ..composition() },
                changed_fields: vec!["name".into()],
                updated_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &CompositionDeleted {
                composition_id: id(2),
                episode_id: id(1),
                name: "Rough cut".into(),
                delete_type: DeleteType::Permanent,
                deleted_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &FileUploaded { file: file(), uploaded_by: alice().id, timestamp: at() },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &id(1),
            &FileDeleted {
                file_id: id(0xf),
                episode_id: id(1),
                name: "stem.wav".into(),
                delete_type: DeleteType::Soft,
                deleted_by: alice().id,
                timestamp: at(),
            },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(&id(1), &ViewerJoined(presence()), by.clone(), None, at()),
        OutgoingEvent::new(
            &id(1),
            &ViewerLeft(Presence { viewers: Vec::new(), ..presence() }),
            by.clone(),
            None,
            at(),
        ),
        OutgoingEvent::new(
            &alice().id,
            &CommandRejected { command_id: id(0xc), reason: "episode 1 was deleted".into() },
            by.clone(),
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &alice().id,
            &NotificationCreated {
                notification: Notification {
                    id: id(4),
                    user_id: alice().id,
                    kind: "episode_created".into(),
                    title: "Episode created".into(),
                    message: "Your episode \"Pilot\" was created.".into(),
                    resource_type: Some("episode".into()),
                    resource_id: Some(id(1)),
                    event_id: id(5),
                    read_at: None,
                    created_at: at(),
                },
            },
            None,
            cause,
            at(),
        ),
        OutgoingEvent::new(
            &(),
            &JobProcessorStarted {
                instance: "job-worker-1".into(),
                prefetch: 8,
                max_concurrent: 4,
            },
            None,
            None,
            at(),
        ),
        job(JobQueued {
            job_id: id(3),
            job_type: "episode_export".into(),
            max_attempts: 3,
            episode_id: Some(id(1)),
            run_at: None,
            timestamp: at(),
        }),
        job(JobStarted { job_id: id(3), attempt: 1, timestamp: at() }),
        job(JobProgress {
            job_id: id(3),
            attempt: 1,
            percent: 40,
            message: "rendering".into(),
            timestamp: at(),
        }),
        job(JobCompleted {
            job_id: id(3),
            results: serde_json::json!({"path": "exports/1.json"}),
            timestamp: at(),
        }),
        job(JobRetry {
            job_id: id(3),
            retry_count: 1,
            delay: 2_000,
            error: "timed out".into(),
            timestamp: at(),
        }),
        job(JobFailed {
            job_id: id(3),
            error: "timed out".into(),
            retries_exhausted: true,
            timestamp: at(),
        }),
        job(JobCancelled {
            job_id: id(3),
            cancelled_by: alice(),
            previous_status: JobStatus::Running,
            timestamp: at(),
        }),
        job(JobRequeued {
            job_id: id(3),
            requeued_by: alice(),
            previous_attempts: 3,
            timestamp: at(),
        }),
    ]
}

#[test]
fn every_event_is_pinned() {
    let mut names = Vec::new();
    for mut event in events() {
        // The id is fresh per event; pin it too.
        event.envelope.id = id(0xe);
        let name = event.envelope.event.name().to_string();
        let text = format!("routing key: {}\n{}", event.routing_key, wire(&event.envelope));
        insta::assert_snapshot!(format!("event_{name}"), text);
        names.push(name);
    }
    assert_eq!(names, Event::NAMES, "one sample per event, in the order `events!` lists them");
}

#[test]
fn the_job_request_is_pinned() {
    let now = JobRequest { job_id: id(3), dispatch_id: id(6), not_before: None };
    insta::assert_snapshot!("job_request", wire(&now));
    let later = JobRequest { not_before: Some(at()), ..now };
    insta::assert_snapshot!("job_request_delayed", wire(&later));
}

#[test]
fn an_unknown_event_travels_as_it_came() {
    let text = r#"{"id":"00000000-0000-0000-0000-00000000000e","event":"bench.tick","version":1,"occurredAt":"2026-12-03T12:00:00Z","actor":null,"correlationId":null,"causationId":null,"data":{"seq":1}}"#;
    let envelope: EventEnvelope = serde_json::from_str(text).expect("decodes");
    assert!(matches!(&envelope.event, Event::Other(f) if f.event == "bench.tick"));
    assert_eq!(serde_json::to_string(&envelope).unwrap_or_default(), text);
}
