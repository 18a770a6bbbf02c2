//! Hostile bodies and forged envelopes are refused with their reason; every valid message
//! round-trips. The `proptest!` blocks run 256 cases under `cargo test`; the long form is
//! `PROPTEST_CASES=100000 cargo test -p showrunner-shared --release -- proptest_`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::contracts::{Actor, Command, DeleteType, Episode, EpisodeChanges, OutgoingEvent};
use crate::domain::EpisodeStatus;
use crate::event::Foreign;

const RULES: Rules = Rules { max_bytes: 65_536, partitions: 16, job_horizon: Duration::hours(2) };

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().unwrap_or_default()
}

fn actor() -> Actor {
    Actor { id: Uuid::from_u128(7), name: "Alice".into() }
}

fn command(episode_id: Uuid) -> CommandEnvelope {
    CommandEnvelope {
        id: Uuid::from_u128(1),
        version: COMMAND_VERSION,
        actor: actor(),
        accepted_at: now(),
        command: Command::DeleteEpisode { episode_id, permanent: false },
    }
}

fn key_of(envelope: &CommandEnvelope) -> String {
    partition_of(envelope.command.episode_id(), RULES.partitions).to_string()
}

fn decode_command(body: &[u8], key: &str) -> Result<CommandEnvelope, Refused> {
    decode(body, key, &RULES, now())
}

fn decode_event(body: &[u8], key: &str) -> Result<EventEnvelope, Refused> {
    decode(body, key, &RULES, now())
}

fn episode(id: Uuid) -> Episode {
    Episode {
        id,
        title: "Pilot".into(),
        description: String::new(),
        status: EpisodeStatus::Draft,
        categories: Vec::new(),
        created_by: actor().id,
        updated_by: actor().id,
        created_at: now(),
        updated_at: now(),
        deleted_at: None,
        version: 1,
    }
}

fn created(id: Uuid) -> OutgoingEvent {
    let data = EpisodeCreated { episode: episode(id), created_by: actor().id, timestamp: now() };
    OutgoingEvent::new(&id, &data, Some(actor()), None, now())
}

#[test]
fn a_valid_command_decodes() {
    let envelope = command(Uuid::from_u128(42));
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    assert_eq!(decode_command(&body, &key_of(&envelope)), Ok(envelope));
}

#[test]
fn hostile_bodies_are_refused_with_their_reason() {
    let envelope = command(Uuid::from_u128(42));
    let key = key_of(&envelope);
    let huge = vec![b' '; RULES.max_bytes + 1];
    assert_eq!(
        decode_command(&huge, &key),
        Err(Refused::TooLarge { size: RULES.max_bytes + 1, max: RULES.max_bytes })
    );
    assert_eq!(decode_command(b"{\"id\": \"\xff\"}", &key), Err(Refused::NotUtf8(8)));
    assert_eq!(decode_command(b"[1, 2]", &key), Err(Refused::NoEnvelope("not a JSON object")));
    assert_eq!(
        decode_command(br#"{"title": "bare data"}"#, &key),
        Err(Refused::NoEnvelope("no id and no version"))
    );
    let mut v2 = serde_json::to_value(&envelope).unwrap_or_default();
    v2["version"] = 2.into();
    let body = serde_json::to_vec(&v2).unwrap_or_default();
    assert_eq!(decode_command(&body, &key), Err(Refused::UnsupportedVersion(2)));
    // A newer version that also changed the shape still says which version it is.
    v2["command"]["type"] = "archive_episode".into();
    let body = serde_json::to_vec(&v2).unwrap_or_default();
    assert_eq!(decode_command(&body, &key), Err(Refused::UnsupportedVersion(2)));
    let reason = decode_command(br#"{"id": 1, "version": 1}"#, &key).map(|_| ());
    assert!(matches!(reason, Err(Refused::Undecodable(_))), "{reason:?}");
}

#[test]
fn forged_commands_are_refused() {
    let episode = Uuid::from_u128(42);
    let good = command(episode);
    let key = key_of(&good);
    let forged = |e: CommandEnvelope, key: &str| {
        let body = serde_json::to_vec(&e).unwrap_or_default();
        match decode_command(&body, key) {
            Err(Refused::Forged(reason)) => reason,
            other => panic!("not refused as forged: {other:?}"),
        }
    };
    let other_partition = ((key.parse::<u16>().unwrap_or(0) + 1) % RULES.partitions).to_string();
    assert!(forged(good.clone(), &other_partition).contains("partition"));
    assert!(forged(good.clone(), "not-a-partition").contains("partition"));
    assert!(forged(CommandEnvelope { id: Uuid::nil(), ..good.clone() }, &key).contains("nil"));
    let nobody = Actor { id: Uuid::nil(), name: "x".into() };
    assert!(forged(CommandEnvelope { actor: nobody, ..good.clone() }, &key).contains("actor"));
    let epoch = DateTime::from_timestamp(0, 0).unwrap_or_default();
    assert!(
        forged(CommandEnvelope { accepted_at: epoch, ..good.clone() }, &key).contains("absurd")
    );
    let future = now() + Duration::days(400);
    assert!(forged(CommandEnvelope { accepted_at: future, ..good }, &key).contains("absurd"));
}

#[test]
fn a_valid_event_decodes_and_a_misrouted_one_is_forged() {
    let id = Uuid::from_u128(42);
    let event = created(id);
    let body = serde_json::to_vec(&event.envelope).unwrap_or_default();
    assert_eq!(decode_event(&body, &event.routing_key), Ok(event.envelope.clone()));
    let elsewhere = format!("episode.{}.created", Uuid::from_u128(43));
    assert!(matches!(decode_event(&body, &elsewhere), Err(Refused::Forged(_))));
    let as_update = format!("episode.{id}.updated");
    assert!(matches!(decode_event(&body, &as_update), Err(Refused::Forged(_))));
    assert!(matches!(decode_event(&body, "episode.*.created"), Err(Refused::Forged(_))));
}

#[test]
fn forged_events_are_refused() {
    let id = Uuid::from_u128(42);
    let good = created(id);
    let forged = |e: &EventEnvelope, key: &str| {
        let body = serde_json::to_vec(e).unwrap_or_default();
        matches!(decode_event(&body, key), Err(Refused::Forged(_)))
    };
    let key = good.routing_key.as_str();
    assert!(forged(&EventEnvelope { actor: None, ..good.envelope.clone() }, key));
    assert!(forged(&EventEnvelope { id: Uuid::nil(), ..good.envelope.clone() }, key));
    let far = now() + Duration::days(30);
    assert!(forged(&EventEnvelope { occurred_at: far, ..good.envelope.clone() }, key));
    // A known event whose data does not fit its type does not decode at all.
    let mut wrong_data = serde_json::to_value(&good.envelope).unwrap_or_default();
    wrong_data["data"] = serde_json::json!({"episode": {"id": id}});
    let body = serde_json::to_vec(&wrong_data).unwrap_or_default();
    assert!(matches!(
        decode_event(&body, key),
        Err(Refused::Undecodable(reason)) if reason.starts_with("episode_created data:")
    ));
    let launched = Foreign { event: "episode_launched".into(), data: serde_json::json!({}) };
    let unknown = EventEnvelope { event: Event::Other(launched), ..good.envelope.clone() };
    assert!(forged(&unknown, key));
    assert!(forged(&unknown, &format!("user.{id}.notification")));
    // An unknown event on a topic of its own is a tolerant reader's business.
    assert!(!forged(&unknown, "bench.t17"));
    let rejected = OutgoingEvent::new(
        &actor().id,
        &CommandRejected { command_id: id, reason: "no".into() },
        Some(actor()),
        Some(id),
        now(),
    );
    assert!(!forged(&rejected.envelope, &rejected.routing_key));
    // Told to someone else than the actor whose command it was.
    assert!(forged(&rejected.envelope, &format!("user.{id}.command")));
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for body in ["[".repeat(10_000), format!("{{\"id\":{}", "{\"a\":".repeat(5_000))] {
        let refused = decode_command(body.as_bytes(), "0").map(|_| ());
        assert!(matches!(refused, Err(Refused::Undecodable(_))), "{refused:?}");
        let refused = decode_event(body.as_bytes(), "t").map(|_| ());
        assert!(matches!(refused, Err(Refused::Undecodable(_))), "{refused:?}");
    }
}

#[test]
fn reasons_stay_short() {
    let body = format!(
        r#"{{"id":"{}","version":1,"actor":{{"id":"{}","name":"a"}},"acceptedAt":"2026-01-01T00:00:00Z","command":{{"type":"{}"}}}}"#,
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        "x".repeat(10_000)
    );
    let reason = match decode_command(body.as_bytes(), "0") {
        Err(refused) => refused.to_string(),
        Ok(_) => panic!("decoded"),
    };
    assert!(reason.len() < 400, "{}", reason.len());
}

#[test]
fn job_requests_are_checked() {
    let request = JobRequest {
        job_id: Uuid::from_u128(1),
        dispatch_id: Uuid::from_u128(2),
        not_before: Some(now() + Duration::minutes(5)),
    };
    let decode_job = |r: &JobRequest, key: &str| {
        decode::<JobRequest>(&serde_json::to_vec(r).unwrap_or_default(), key, &RULES, now())
    };
    assert_eq!(decode_job(&request, JOBS_KEY), Ok(request.clone()));
    assert!(matches!(decode_job(&request, "other"), Err(Refused::Forged(_))));
    let nil = JobRequest { job_id: Uuid::nil(), ..request.clone() };
    assert!(matches!(decode_job(&nil, JOBS_KEY), Err(Refused::Forged(_))));
    let forever = JobRequest { not_before: Some(now() + Duration::days(3650)), ..request };
    assert!(matches!(decode_job(&forever, JOBS_KEY), Err(Refused::Forged(_))));
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_filter("not nil", |n| *n != 0).prop_map(Uuid::from_u128)
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020-01-01 .. the test's now, to the microsecond as PostgreSQL keeps it.
    (1_577_836_800_000_000i64..1_795_000_000_000_000)
        .prop_map(|us| DateTime::from_timestamp_micros(us).unwrap_or_default())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9][A-Za-z0-9 éß\u{4e2d}]{{0,{max}}}"))
        .unwrap_or_else(|_| unreachable!())
}

fn status() -> impl Strategy<Value = EpisodeStatus> {
    proptest::sample::select(EpisodeStatus::ALL.to_vec())
}

fn a_command() -> impl Strategy<Value = Command> {
    let create = (uuid(), text(60), text(200), status(), proptest::collection::vec(text(20), 0..5))
        .prop_filter_map("valid fields", |(episode_id, title, description, status, cats)| {
            Some(Command::CreateEpisode {
                episode_id,
                title: title.try_into().ok()?,
                description: description.try_into().ok()?,
                status,
                categories: cats.try_into().ok()?,
            })
        });
    let update = (uuid(), proptest::option::of(text(60)), proptest::option::of(status()))
        .prop_filter_map("valid fields", |(episode_id, title, status)| {
            let title = match title {
                Some(t) => Some(t.try_into().ok()?),
                None => None,
            };
            Some(Command::UpdateEpisode {
                episode_id,
                changes: EpisodeChanges { title, status, ..Default::default() },
            })
        });
    let delete = (uuid(), any::<bool>())
        .prop_map(|(episode_id, permanent)| Command::DeleteEpisode { episode_id, permanent });
    prop_oneof![create, update, delete]
}

fn a_command_envelope() -> impl Strategy<Value = CommandEnvelope> {
    (uuid(), uuid(), text(40), instant(), a_command()).prop_map(|(id, who, name, at, command)| {
        CommandEnvelope {
            id,
            version: COMMAND_VERSION,
            actor: Actor { id: who, name },
            accepted_at: at,
            command,
        }
    })
}

fn an_event() -> impl Strategy<Value = OutgoingEvent> {
    (uuid(), uuid(), instant(), 0..4u8).prop_map(|(subject, who, at, kind)| {
        let who = Actor { id: who, name: "a".into() };
        match kind {
            0 => {
                let mut e = episode(subject);
                e.created_at = at;
                let data = EpisodeCreated { episode: e, created_by: who.id, timestamp: at };
                OutgoingEvent::new(&subject, &data, Some(who), None, at)
            }
            1 => {
                let data = EpisodeDeleted {
                    episode_id: subject,
                    title: "t".into(),
                    delete_type: DeleteType::Soft,
                    deleted_by: who.id,
                    timestamp: at,
                };
                OutgoingEvent::new(&subject, &data, Some(who), Some(subject), at)
            }
            2 => {
                let data = JobFailed {
                    job_id: subject,
                    error: "boom".into(),
                    retries_exhausted: true,
                    timestamp: at,
                };
                OutgoingEvent::new(&subject, &data, Some(who), Some(subject), at)
            }
            _ => OutgoingEvent::new(
                &who.id,
                &CommandRejected { command_id: subject, reason: "no".into() },
                Some(who.clone()),
                Some(subject),
                at,
            ),
        }
    })
}

proptest! {
    #[test]
    fn proptest_arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), key in "[a-z0-9.]{0,40}") {
        let _ = decode::<CommandEnvelope>(&body, &key, &RULES, now());
        let _ = decode::<EventEnvelope>(&body, &key, &RULES, now());
        let _ = decode::<JobRequest>(&body, &key, &RULES, now());
    }

    #[test]
    fn proptest_mangled_envelopes_never_panic(
        envelope in a_command_envelope(),
        cut in any::<proptest::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        // A valid message with bytes spliced in somewhere: near-valid input reaches deeper.
        let mut body = serde_json::to_vec(&envelope).unwrap_or_default();
        let at = cut.index(body.len() + 1);
        body.splice(at..at, junk);
        let key = key_of(&envelope);
        let _ = decode::<CommandEnvelope>(&body, &key, &RULES, now());
        let _ = decode::<EventEnvelope>(&body, &key, &RULES, now());
    }

    #[test]
    fn proptest_valid_commands_round_trip(envelope in a_command_envelope()) {
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let key = key_of(&envelope);
        prop_assert_eq!(decode_command(&body, &key), Ok(envelope.clone()));
        // The same command on any other partition is forged.
        let other = ((key.parse::<u16>().unwrap_or(0) + 1) % RULES.partitions).to_string();
        prop_assert!(matches!(decode_command(&body, &other), Err(Refused::Forged(_))));
    }

    #[test]
    fn proptest_valid_events_round_trip(event in an_event(), elsewhere in uuid()) {
        let body = serde_json::to_vec(&event.envelope).unwrap_or_default();
        prop_assert_eq!(decode_event(&body, &event.routing_key), Ok(event.envelope.clone()));
        let mut words: Vec<String> = event.routing_key.split('.').map(str::to_string).collect();
        if words[1] != elsewhere.to_string() {
            words[1] = elsewhere.to_string();
            let moved = words.join(".");
            prop_assert!(matches!(decode_event(&body, &moved), Err(Refused::Forged(_))));
        }
    }
}

#[test]
fn the_queue_operations_and_progress_events_are_checked() {
    let job = Uuid::from_u128(42);
    let other = Uuid::from_u128(43);
    let events = [
        OutgoingEvent::new(
            &job,
            &JobQueued {
                job_id: job,
                job_type: "webhook".into(),
                max_attempts: 3,
                episode_id: None,
                run_at: None,
                timestamp: now(),
            },
            Some(actor()),
            Some(job),
            now(),
        ),
        OutgoingEvent::new(
            &job,
            &JobCancelled {
                job_id: job,
                cancelled_by: actor(),
                previous_status: crate::jobs::JobStatus::Running,
                timestamp: now(),
            },
            Some(actor()),
            Some(job),
            now(),
        ),
        OutgoingEvent::new(
            &job,
            &JobRequeued {
                job_id: job,
                requeued_by: actor(),
                previous_attempts: 3,
                timestamp: now(),
            },
            Some(actor()),
            Some(job),
            now(),
        ),
        OutgoingEvent::new(
            &job,
            &JobProgress {
                job_id: job,
                attempt: 1,
                percent: 50,
                message: "half".into(),
                timestamp: now(),
            },
            Some(actor()),
            Some(job),
            now(),
        ),
    ];
    for (event, suffix) in events.iter().zip(["queued", "cancelled", "requeued", "progress"]) {
        assert_eq!(event.routing_key, format!("job.{job}.{suffix}"));
        let body = serde_json::to_vec(&event.envelope).unwrap_or_default();
        assert_eq!(decode_event(&body, &event.routing_key), Ok(event.envelope.clone()));
        // Another job's key, or no actor: forged.
        let elsewhere = format!("job.{other}.{suffix}");
        assert!(matches!(decode_event(&body, &elsewhere), Err(Refused::Forged(_))), "{suffix}");
        let mut anonymous = event.envelope.clone();
        anonymous.actor = None;
        let body = serde_json::to_vec(&anonymous).unwrap_or_default();
        assert!(matches!(decode_event(&body, &event.routing_key), Err(Refused::Forged(_))));
    }
    let mut over = events[3].envelope.clone();
    if let Event::JobProgress(progress) = &mut over.event {
        progress.percent = 101;
    }
    let body = serde_json::to_vec(&over).unwrap_or_default();
    assert!(matches!(decode_event(&body, &events[3].routing_key), Err(Refused::Forged(_))));
}
