//! The data lifecycle (issue 20): each retention sweep removes what it should and nothing
//! else, the activity log's monthly partitions are made ahead, take over rows that waited in
//! the default partition, and are dropped when old, the API's activity queries keep their
//! indexes across partitions, and a command's record answers 404 "expired" once swept.

use chrono::{Datelike, Duration as Age, Months, Utc};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::db::sql;
use showrunner_shared::metrics;
use showrunner_tests::{Options, TestApp};
use showrunner_workers::retention;
use uuid::Uuid;

use crate::support::{create_episode, expect_problem, settled_command, str_of};

/// A stack whose workers do not run (so no background sweep races the test's own), whose api
/// never expires presence by itself, and whose sweeps delete two rows per statement (so the
/// batching loop runs).
async fn quiet_stack() -> TestApp {
    TestApp::spawn_with(Options {
        extra: vec![
            ("retention.batch_size".into(), "2".into()),
            ("http.presence_ttl_secs".into(), "600".into()),
            ("retention.presence_grace_secs".into(), "600".into()),
        ],
        ..Options::no_workers()
    })
    .await
}

async fn exec(app: &TestApp, statement: &str, values: Vec<sea_orm::Value>) {
    if let Err(error) = app.db.execute_raw(sql(statement, values)).await {
        panic!("{statement}: {error}");
    }
}

async fn ids(app: &TestApp, query: &str) -> Vec<Uuid> {
    #[derive(FromQueryResult)]
    struct Id {
        id: Uuid,
    }
    let mut ids: Vec<Uuid> = Id::find_by_statement(sql(query, []))
        .all(&app.db)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

#[tokio::test]
async fn each_sweep_removes_what_it_should_and_nothing_else() {
    let app = quiet_stack().await;
    let now = Utc::now();
    let user = Uuid::now_v7();

    // Commands: finished and older than 48 h go; pending ones stay whatever their age.
    let (old_applied, old_rejected, old_applied_2) =
        (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (old_pending, new_applied) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, status, age) in [
        (old_applied, "applied", Age::hours(49)),
        (old_rejected, "rejected", Age::hours(72)),
        (old_applied_2, "applied", Age::days(30)),
        (old_pending, "pending", Age::days(30)),
        (new_applied, "applied", Age::hours(47)),
    ] {
        exec(
            &app,
            "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, \
             accepted_at, completed_at) VALUES ($1, $2, 'create_episode', 'episode', $1, $3, $4, \
             CASE WHEN $3 = 'pending' THEN NULL ELSE $4 END)",
            vec![id.into(), user.into(), status.into(), (now - age).into()],
        )
        .await;
    }

    // Event log: shipped rows older than the retention (24 h) that the notification worker has
    // read go; an unshipped row stays however old, so does one the notification worker has not
    // read yet (after its position, 2 here), and so does a recent one.
    let (old_shipped, old_unshipped, new_shipped) =
        (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let not_notified = Uuid::now_v7();
    for (id, seq, age) in [
        (old_shipped, Some(1_i64), Age::hours(25)),
        (old_unshipped, Some(4), Age::hours(25)),
        (new_shipped, Some(2), Age::hours(23)),
        (not_notified, Some(3), Age::hours(25)),
    ] {
        exec(
            &app,
            "INSERT INTO event_log (id, routing_key, body, logged_at, seq) \
             VALUES ($1, 'episode.x.created', '{}', $2, $3)",
            vec![id.into(), (now - age).into(), seq.into()],
        )
        .await;
    }

    // No notification worker runs here: its position says how far one read; no shipper either:
    // it published up to 3 (4 is not shipped yet).
    exec(&app, "UPDATE notification_cursor SET position = 2", vec![]).await;
    exec(&app, "UPDATE event_log_shipper SET published_seq = 3", vec![]).await;

    // Jobs: finished more than 30 days ago go (their activity rows stay); running or recent
    // ones stay.
    let (old_done, old_failed, old_cancelled) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (old_running, new_done) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, status, finished) in [
        (old_done, "succeeded", Some(Age::days(31))),
        (old_failed, "failed", Some(Age::days(40))),
        (old_cancelled, "cancelled", Some(Age::days(31))),
        (old_running, "running", None),
        (new_done, "succeeded", Some(Age::days(29))),
    ] {
        exec(
            &app,
            "INSERT INTO jobs (id, type, payload, status, max_attempts, created_by, created_at, \
             completed_at) VALUES ($1, 'webhook', '{}', $2, 3, $3, $4, $5)",
            vec![
                id.into(),
                status.into(),
                user.into(),
                (now - Age::days(60)).into(),
                finished.map(|age| now - age).into(),
            ],
        )
        .await;
        exec(
            &app,
            "INSERT INTO activity_log (id, event, resource_type, resource_id, actor_id, data, \
             occurred_at) VALUES ($1, 'job_completed', 'job', $2, $3, '{}', now())",
            vec![Uuid::now_v7().into(), id.into(), user.into()],
        )
        .await;
    }

    // Notifications: read more than 30 days ago go; unread ones stay whatever their age.
    let (old_read, old_unread, new_read) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (id, read) in
        [(old_read, Some(Age::days(31))), (old_unread, None), (new_read, Some(Age::days(29)))]
    {
        exec(
            &app,
            "INSERT INTO notifications (id, user_id, event_id, kind, title, message, read_at, \
             created_at) VALUES ($1, $2, $1, 'episode_created', 't', 'm', $3, $4)",
            vec![
                id.into(),
                user.into(),
                read.map(|age| now - age).into(),
                (now - Age::days(90)).into(),
            ],
        )
        .await;
    }

    // Presence: past the TTL (600 s) plus the grace (600 s) go.
    let (stale_episode, live_episode) = (Uuid::now_v7(), Uuid::now_v7());
    for (episode, age) in [(stale_episode, Age::seconds(1300)), (live_episode, Age::seconds(1100))]
    {
        exec(
            &app,
            "INSERT INTO user_presence (episode_id, user_id, user_name, session, last_seen) \
             VALUES ($1, $2, 'alice', 'ws-1', $3)",
            vec![episode.into(), user.into(), (now - age).into()],
        )
        .await;
    }

    let tables = ["commands", "event_log", "jobs", "notifications", "user_presence"];
    // The metrics are the process's: other tests' sweeps may add to them, never take away.
    let deleted = || tables.map(|t| metrics::RETENTION_DELETED.get(&[t]));
    let before = deleted();
    let swept = match retention::sweep(&app.db, &app.settings).await {
        Ok(swept) => swept,
        Err(error) => panic!("retention sweep failed: {error}"),
    };
    assert_eq!(
        (swept.commands, swept.event_log, swept.jobs, swept.notifications, swept.presence),
        (3, 1, 3, 1, 1),
        "{swept:?}"
    );
    let after = deleted();
    for ((table, before), (after, expected)) in
        tables.iter().zip(before).zip(after.into_iter().zip([3, 1, 3, 1, 1]))
    {
        assert!(after - before >= expected, "{table}: metric {before} -> {after}");
    }
    let text = metrics::encode();
    for table in tables {
        let series = format!("showrunner_retention_sweep_seconds_count{{table=\"{table}\"}}");
        assert!(text.contains(&series), "{series} missing from /metrics");
    }

    assert_eq!(ids(&app, "SELECT id FROM commands").await, sorted(vec![old_pending, new_applied]));
    assert_eq!(
        ids(&app, "SELECT id FROM event_log").await,
        sorted(vec![old_unshipped, new_shipped, not_notified])
    );
    assert_eq!(ids(&app, "SELECT id FROM jobs").await, sorted(vec![old_running, new_done]));
    assert_eq!(app.count("SELECT count(*) FROM activity_log WHERE resource_type = 'job'").await, 5);
    assert_eq!(ids(&app, "SELECT id FROM notifications").await, sorted(vec![old_unread, new_read]));
    assert_eq!(ids(&app, "SELECT episode_id AS id FROM user_presence").await, vec![live_episode]);

    // A second sweep finds nothing more.
    let again = retention::sweep(&app.db, &app.settings).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (again.commands, again.event_log, again.jobs, again.notifications, again.presence),
        (0, 0, 0, 0, 0)
    );
    app.stop().await;
}

/// The name of the partition that holds the activity row `id`.
async fn partition_of(app: &TestApp, id: Uuid) -> Option<String> {
    #[derive(FromQueryResult)]
    struct Part {
        part: String,
    }
    Part::find_by_statement(sql(
        "SELECT tableoid::regclass::text AS part FROM activity_log WHERE id = $1",
        [id.into()],
    ))
    .one(&app.db)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .map(|p| p.part)
}

async fn insert_activity(app: &TestApp, id: Uuid) {
    exec(
        app,
        "INSERT INTO activity_log (id, event, resource_type, resource_id, data, occurred_at) \
         VALUES ($1, 'episode_created', 'episode', $1, '{}', now())",
        vec![id.into()],
    )
    .await;
}

fn v7_at(at: chrono::DateTime<Utc>) -> Uuid {
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0))
}

#[tokio::test]
async fn activity_partitions_are_made_ahead_and_dropped_when_old() {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            ("retention.activity_months".into(), "3".into()),
            ("retention.activity_months_ahead".into(), "2".into()),
        ],
        ..Options::no_workers()
    })
    .await;
    let first = Utc::now().date_naive().with_day(1).unwrap_or_default();
    let month = |m: u32| first.checked_add_months(Months::new(m)).unwrap_or(first);
    let name = |m: u32| month(m).format("activity_log_%Y_%m").to_string();

    // The migration made this month and two ahead.
    let this_month = Uuid::now_v7();
    insert_activity(&app, this_month).await;
    assert_eq!(partition_of(&app, this_month).await, Some(name(0)));

    // An id five months ahead (an event from outside with its own id) waits in the default
    // partition until its month is made, then moves into it with its row intact.
    let ahead = v7_at(month(5).and_hms_opt(12, 0, 0).unwrap_or_default().and_utc());
    insert_activity(&app, ahead).await;
    assert_eq!(partition_of(&app, ahead).await.as_deref(), Some("activity_log_default"));
    // An id of another version is kept wherever its bits put it.
    let foreign = Uuid::from_u128(0x5f0e_0b6c_2a4e_4c1d_9a7b_3c2d_1e0f_a9b8);
    insert_activity(&app, foreign).await;

    // Four months later the sweep makes that month and two ahead (4, 5, 6), moving the
    // waiting row, and drops the months wholly older than three months before then (0).
    let later = month(4);
    let (made, dropped) = retention::partitions(&app.db, &app.settings, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((made, dropped), (3, 1));
    assert_eq!(partition_of(&app, ahead).await, Some(name(5)));
    assert_eq!(partition_of(&app, this_month).await, None, "an old month is dropped");
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{}'", name(0))).await,
        0
    );
    for kept in [1, 2, 3, 4, 5, 6] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{}'", name(kept)))
                .await,
            i64::from(kept != 3),
            "month {kept}"
        );
    }
    assert!(partition_of(&app, foreign).await.is_some(), "a v4 id stays");
    // Making them again makes and drops nothing.
    let again = retention::partitions(&app.db, &app.settings, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, (0, 0));
    app.stop().await;
}

/// The plan of `query`, with sequential scans forbidden: the tables are tiny, so this shows
/// which index paths exist (with none, PostgreSQL still falls back to a sequential scan).
async fn plan(app: &TestApp, query: &str) -> String {
    let txn = app.db.begin().await.unwrap_or_else(|e| panic!("{e}"));
    txn.execute_unprepared("SET LOCAL enable_seqscan = off")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = txn
        .query_all_raw(sql(&format!("EXPLAIN {query}"), []))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rows.iter()
        .filter_map(|r| r.try_get::<String>("", "QUERY PLAN").ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The event log's sweep reads the oldest rows by `seq`, through its index, now that
/// `logged_at` has none (every event paid for it at its insert and again at its numbering).
#[tokio::test]
async fn the_event_log_sweep_reads_the_seq_index() {
    let app = quiet_stack().await;
    let indexed = "SELECT count(*) FROM pg_indexes WHERE indexname = 'event_log_logged'";
    assert_eq!(app.count(indexed).await, 0, "event_log_logged is still there");
    let delete = retention::statement("event_log").expect("the event log's rule");
    let sweep = plan(&app, &delete.replace("$1", "86400").replace("$2", "500")).await;
    assert!(sweep.contains("event_log_seq"), "{sweep}");
    assert!(!sweep.contains("Seq Scan on event_log"), "{sweep}");
    app.stop().await;
}

#[tokio::test]
async fn activity_queries_use_indexes_and_the_cursor_prunes_partitions() {
    let app = quiet_stack().await;
    let by_resource = plan(
        &app,
        "SELECT * FROM activity_log WHERE resource_type = 'episode' \
         AND resource_id = '00000000-0000-0000-0000-000000000001' ORDER BY id DESC LIMIT 21",
    )
    .await;
    assert!(by_resource.contains("resource_type_resource_id_id_idx"), "{by_resource}");
    assert!(!by_resource.contains("Seq Scan"), "{by_resource}");
    let by_actor = plan(
        &app,
        "SELECT * FROM activity_log WHERE actor_id = '00000000-0000-0000-0000-000000000001' \
         ORDER BY id DESC LIMIT 21",
    )
    .await;
    assert!(by_actor.contains("actor_id_id_idx"), "{by_actor}");
    assert!(!by_actor.contains("Seq Scan"), "{by_actor}");
    // A cursor in this month leaves the months ahead out of the plan.
    let cursor = Uuid::now_v7();
    let by_cursor = plan(
        &app,
        &format!("SELECT * FROM activity_log WHERE id < '{cursor}' ORDER BY id DESC LIMIT 21"),
    )
    .await;
    let this_month = Utc::now().date_naive().format("activity_log_%Y_%m").to_string();
    let next_month = Utc::now()
        .date_naive()
        .with_day(1)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .map(|d| d.format("activity_log_%Y_%m").to_string())
        .unwrap_or_default();
    assert!(by_cursor.contains(&this_month), "{by_cursor}");
    assert!(!by_cursor.contains(&next_month), "{by_cursor}");
    assert!(!by_cursor.contains("Seq Scan"), "{by_cursor}");
    app.stop().await;
}

#[tokio::test]
async fn a_swept_command_answers_404_and_says_it_expired() {
    // The episode worker applies commands; no worker that runs the retention sweep is started,
    // so only the test's own sweep deletes.
    let app = TestApp::spawn_with(Options {
        activity_workers: 0,
        notification_workers: 0,
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let (status, created) = create_episode(&app, &alice, json!({"title": "Kept"}), false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let command = str_of(&created, "commandId").to_string();
    settled_command(&app, &alice, &command).await;
    // Lean rows: once applied, the command keeps its outcome, not its message.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM commands WHERE id = '{command}' AND status = 'applied' \
             AND message IS NULL"
        ))
        .await,
        1
    );

    // A command accepted three days ago, applied, and swept since.
    let old = v7_at(Utc::now() - Age::days(3));
    exec(
        &app,
        "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, accepted_at, \
         completed_at) VALUES ($1, $2, 'create_episode', 'episode', $1, 'applied', $3, $3)",
        vec![old.into(), TestApp::user_id("alice").into(), (Utc::now() - Age::days(3)).into()],
    )
    .await;
    let seen = app.http.get(app.api(&format!("/commands/{old}"))).bearer_auth(&alice);
    assert_eq!(seen.send().await.map(|r| r.status()).ok(), Some(StatusCode::OK));
    let swept = retention::sweep(&app.db, &app.settings).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(swept.commands >= 1, "{swept:?}");
    let gone = expect_problem(
        app.http.get(app.api(&format!("/commands/{old}"))).bearer_auth(&alice),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(str_of(&gone, "detail").contains("has expired"), "{gone}");
    // The recent one is still there, and an unknown recent id does not claim to have expired.
    let kept = app.http.get(app.api(&format!("/commands/{command}"))).bearer_auth(&alice);
    assert_eq!(kept.send().await.map(|r| r.status()).ok(), Some(StatusCode::OK));
    let unknown = expect_problem(
        app.http.get(app.api(&format!("/commands/{}", Uuid::now_v7()))).bearer_auth(&alice),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(!str_of(&unknown, "detail").contains("has expired"), "{unknown}");
    app.stop().await;
}
