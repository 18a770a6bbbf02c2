//! `Prefer: wait` is answered from the command worker's commit (its `NOTIFY`), not from the
//! event that the log shipper publishes later: with no shipper running, every wait is answered
//! with the applied resource or its rejection; and a command settled while the api's listening
//! connection was away still wakes its request once the connection is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_tests::{PG_SERVER, wait_until};

use crate::support::{DEADLINE, expect_problem, send, stack, str_of};

/// Longer than any answer below may take: a request answered 202 at this deadline was not woken.
const WAIT: &str = "wait=30";

#[tokio::test]
async fn prefer_wait_is_answered_at_the_commit_while_no_log_shipper_runs() {
    // The episode worker only: no activity worker, so nothing is shipped to `showrunner.live`.
    let app = stack(true, false, false).await;
    let alice = app.token("alice", Role::Member);
    let root = app.token("root", Role::Admin);
    let started = Instant::now();

    let (status, created) = send(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": "Pilot"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["title"], "Pilot");
    let id = str_of(&created["data"], "id").to_string();
    let one = app.api(&format!("/episodes/{id}"));

    let (status, updated) = send(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": "Pilot, revised"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["title"], "Pilot, revised");
    assert_eq!(updated["data"]["version"], 2);

    // Rejections are settled commands too: their problem, not a 202.
    let nowhere = app.api(&format!("/episodes/{}", uuid::Uuid::now_v7()));
    expect_problem(
        app.http
            .patch(&nowhere)
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": "x"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    let compositions = app.api(&format!("/episodes/{id}/compositions"));
    let (status, composition) = send(
        app.http
            .post(&compositions)
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"name": "Cut", "tracks": []})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{composition}");
    let cut =
        app.api(&format!("/episodes/{id}/compositions/{}", str_of(&composition["data"], "id")));
    expect_problem(
        app.http
            .patch(&cut)
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .header("If-Match", "\"7\"")
            .json(&json!({"name": "Late"})),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;

    let (status, deleted) =
        send(app.http.delete(&one).bearer_auth(&alice).header("Prefer", WAIT)).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert!(deleted["data"]["deletedAt"].is_string(), "{deleted}");
    expect_problem(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": "Back"})),
        StatusCode::GONE,
    )
    .await;
    let (status, _) = send(
        app.http.delete(format!("{one}?permanent=true")).bearer_auth(&root).header("Prefer", WAIT),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Eight waits, none of them to its deadline; and nothing was shipped meanwhile.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status <> 'pending'").await, 8);
    assert_eq!(app.count("SELECT count(*) FROM event_log").await, 8);
    assert_eq!(app.count("SELECT count(*) FROM event_log WHERE seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_command_settled_while_the_listener_was_away_wakes_its_request_on_reconnect() {
    let app = stack(true, false, false).await;
    let alice = app.token("alice", Role::Member);
    let create = |title: &str| {
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": title}))
    };
    // The listener is up: a wait is answered.
    let (status, body) = send(create("first")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Its connection is cut and cannot come back: the database takes no new connections (the
    // pools keep those they have).
    let admin = Database::connect(format!("{PG_SERVER}/postgres")).await.expect("admin");
    let allow = |yes: bool| format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {yes}", app.name);
    admin.execute_unprepared(&allow(false)).await.expect("connections refused");
    let listeners = format!(
        "SELECT {{}} FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'showrunner-api-listen'",
        app.name
    );
    let terminated = app.count(&listeners.replace("{}", "count(pg_terminate_backend(pid))")).await;
    assert_eq!(terminated, 1, "the api's one listening connection");
    wait_until("the listener's backend to end", DEADLINE, || async {
        app.count(&listeners.replace("{}", "count(*)")).await == 0
    })
    .await;

    // A command applied now notifies nobody.
    let started = Instant::now();
    let waiting = tokio::spawn(send(create("second")));
    wait_until("the second command to be applied", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands WHERE status = 'applied'").await == 2
    })
    .await;
    assert!(!waiting.is_finished(), "answered with no listener and no shipper");

    // The listener comes back and finds it settled.
    admin.execute_unprepared(&allow(true)).await.expect("connections allowed");
    let (status, body) = waiting.await.expect("request");
    assert_eq!(status, StatusCode::CREATED, "{body} after {:?}", started.elapsed());
    assert_eq!(body["data"]["title"], "second");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    app.stop().await;
}

/// The notification that wakes a waiting request carries the resource as its command left it,
/// and the request answers with exactly that: the same JSON as a read afterwards. A resource
/// too large for one notification is only marked applied, and read.
#[tokio::test]
async fn a_waiting_write_answers_with_the_resource_its_notification_carried() {
    use sea_orm::sqlx::postgres::PgListener;
    use showrunner_shared::settled::{CHANNEL, Settled, parse};

    let app = stack(true, false, false).await;
    let alice = app.token("alice", Role::Member);
    let mut listener =
        PgListener::connect(&format!("{PG_SERVER}/{}", app.name)).await.expect("listener");
    listener.listen(CHANNEL).await.expect("listen");
    // What the notifications said of `command`, once one named it.
    let mut heard = async |command: &str| -> Settled {
        let command = uuid::Uuid::parse_str(command).expect("command id");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let notification = tokio::time::timeout(left, listener.recv())
                .await
                .expect("a notification naming the command")
                .expect("listening connection");
            if let Some((_, how)) = parse(notification.payload()).find(|(id, _)| *id == command) {
                return how;
            }
        }
    };
    let read = async |path: &str| {
        let (status, body) = send(app.http.get(app.api(path)).bearer_auth(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    };

    // Commas, quotes, a line break and letters beyond ASCII: the JSON travels on one line.
    let title = "Pilot, \"one\"\nä";
    let (status, created) = send(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"title": title, "categories": ["news", "b,c"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let Settled::AppliedAs(json) = heard(str_of(&created, "commandId")).await else {
        panic!("the creation's notification did not carry the episode");
    };
    let carried: serde_json::Value = serde_json::from_str(&json).expect("carried JSON");
    assert_eq!(created["data"], carried);
    assert_eq!(created["data"]["title"], title);
    let id = str_of(&created["data"], "id").to_string();
    assert_eq!(read(&format!("/episodes/{id}")).await, carried);

    let (status, composition) = send(
        app.http
            .post(app.api(&format!("/episodes/{id}/compositions")))
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"name": "Cut", "tracks": [{"kind": "video", "clips": []}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{composition}");
    assert!(matches!(heard(str_of(&composition, "commandId")).await, Settled::AppliedAs(_)));
    let cut = format!("/episodes/{id}/compositions/{}", str_of(&composition["data"], "id"));
    assert_eq!(read(&cut).await, composition["data"]);

    // Too long for one notification (PostgreSQL's limit is 8,000 bytes): marked, then read.
    let description = "é".repeat(5_000);
    let (status, updated) = send(
        app.http
            .patch(app.api(&format!("/episodes/{id}")))
            .bearer_auth(&alice)
            .header("Prefer", WAIT)
            .json(&json!({"description": description})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(heard(str_of(&updated, "commandId")).await, Settled::Applied);
    assert_eq!(updated["data"]["description"], description.as_str());
    assert_eq!(updated["data"]["version"], 2);
    assert_eq!(read(&format!("/episodes/{id}")).await, updated["data"]);
    app.stop().await;
}
