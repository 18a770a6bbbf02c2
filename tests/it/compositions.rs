//! Compositions through the REST API and the pipeline: every route, each timeline rule as a
//! problem naming its field, the rejections, the order with the episode's own commands, and
//! the events on the WebSocket.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{TestApp, wait_for};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    DEADLINE, create_episode, expect_problem, send, settled_command, str_of, ws_next,
};

const FILE: &str = "0190f5a0-0000-7000-8000-000000000001";

fn clip(start: i64, duration: i64) -> Value {
    json!({"fileId": FILE, "startUs": start, "sourceInUs": 0, "durationUs": duration})
}

async fn episode(app: &TestApp, token: &str) -> String {
    let (status, body) = create_episode(app, token, json!({"title": "Pilot"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    str_of(&body["data"], "id").to_string()
}

fn compositions(app: &TestApp, episode: &str) -> String {
    app.api(&format!("/episodes/{episode}/compositions"))
}

/// The composition's activity rows' event names, oldest first, as `token` reads them.
async fn activity(app: &TestApp, token: &str, id: &str, expected: usize) -> Vec<String> {
    wait_for("the composition's activity rows", DEADLINE, || {
        let request = app
            .http
            .get(app.api(&format!("/activity?resourceType=composition&resourceId={id}")))
            .bearer_auth(token);
        async move {
            let (_, body) = send(request).await;
            let rows = body["data"].as_array().cloned().unwrap_or_default();
            let mut names: Vec<String> =
                rows.iter().map(|r| r["event"].as_str().unwrap_or_default().to_string()).collect();
            names.reverse();
            (names.len() >= expected).then_some(names)
        }
    })
    .await
}

#[tokio::test]
async fn every_route_creates_reads_lists_updates_and_deletes() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let admin = app.token("root", Role::Admin);
    let ep = episode(&app, &alice).await;
    let file = crate::support::upload(&app, &alice, &ep, "take.wav", b"RIFF").await;
    let clip = |start: i64, duration: i64| json!({"fileId": file, "startUs": start, "sourceInUs": 0, "durationUs": duration});

    // Create, waiting: 201 with Location and the composition as applied.
    let tracks = json!([{"kind": "video", "clips": [clip(0, 1_000), clip(2_000, 500)]},
                        {"kind": "audio", "clips": [clip(100, 4_000)]}]);
    let response = app
        .http
        .post(compositions(&app, &ep))
        .bearer_auth(&alice)
        .header("Prefer", "wait=10")
        .json(&json!({"name": "Rough cut", "tracks": tracks}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location =
        response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let created: Value = response.json().await.expect("json");
    let id = str_of(&created["data"], "id").to_string();
    assert_eq!(location, Some(format!("/api/v1/episodes/{ep}/compositions/{id}")));
    assert_eq!(created["data"]["episodeId"], ep.as_str());
    assert_eq!(created["data"]["name"], "Rough cut");
    assert_eq!(created["data"]["tracks"], tracks);
    assert_eq!(created["data"]["durationUs"], 4_100);
    assert_eq!(created["data"]["version"], 1);
    assert_eq!(created["data"]["deletedAt"], Value::Null);

    // Read: any member, with the version as ETag.
    let response = app
        .http
        .get(app.api(&format!("/episodes/{ep}/compositions/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("etag").and_then(|v| v.to_str().ok()), Some("\"1\""));
    let read: Value = response.json().await.expect("json");
    assert_eq!(read["data"], created["data"]);

    // Without waiting: 202 with the composition as it will be.
    let response = app
        .http
        .post(compositions(&app, &ep))
        .bearer_auth(&alice)
        .json(&json!({"name": "Second"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let second: Value = response.json().await.expect("json");
    assert_eq!(second["data"]["durationUs"], 0);
    assert_eq!(second["data"]["tracks"], json!([]));
    assert_eq!(
        settled_command(&app, &alice, str_of(&second, "commandId")).await["status"],
        "applied"
    );
    let second_id = str_of(&second["data"], "id").to_string();

    // List: newest first, paged.
    let (status, page) =
        send(app.http.get(format!("{}?limit=1", compositions(&app, &ep))).bearer_auth(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["data"][0]["id"], second_id.as_str());
    let cursor = str_of(&page, "nextCursor");
    let (_, rest) = send(
        app.http
            .get(format!("{}?limit=1&cursor={cursor}", compositions(&app, &ep)))
            .bearer_auth(&bob),
    )
    .await;
    assert_eq!(rest["data"][0]["id"], id.as_str());
    assert_eq!(rest["nextCursor"], Value::Null);

    // Update with the current version: the tracks replace the timeline.
    let one = app.api(&format!("/episodes/{ep}/compositions/{id}"));
    let (status, updated) = send(
        app.http
            .patch(&one)
            .bearer_auth(&bob)
            .header("Prefer", "wait=10")
            .header("If-Match", "\"1\"")
            .json(&json!({"name": "Fine cut", "tracks": [{"kind": "video", "clips": [clip(0, 9_000)]}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["name"], "Fine cut");
    assert_eq!(updated["data"]["durationUs"], 9_000);
    assert_eq!(updated["data"]["version"], 2);
    assert_eq!(updated["data"]["updatedBy"], TestApp::user_id("bob").to_string());

    // A stale version: 412 when waiting, a rejected command when not.
    let stale = || {
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("If-Match", "\"1\"")
            .json(&json!({"name": "Late"}))
    };
    expect_problem(stale().header("Prefer", "wait=10"), StatusCode::PRECONDITION_FAILED).await;
    let (status, accepted) = send(stale()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let command = settled_command(&app, &alice, str_of(&accepted, "commandId")).await;
    assert_eq!(command["status"], "rejected");
    assert_eq!(command["resourceType"], "composition");
    assert_eq!(command["resourceId"], id.as_str());
    assert!(str_of(&command, "error").contains("version 2"), "{command}");

    // Soft delete hides it; only admins delete permanently.
    let (status, deleted) =
        send(app.http.delete(&one).bearer_auth(&alice).header("Prefer", "wait=10")).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert!(deleted["data"]["deletedAt"].is_string(), "{deleted}");
    expect_problem(app.http.get(&one).bearer_auth(&alice), StatusCode::NOT_FOUND).await;
    let (_, page) = send(app.http.get(compositions(&app, &ep)).bearer_auth(&alice)).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    expect_problem(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"name": "x"})),
        StatusCode::GONE,
    )
    .await;
    expect_problem(
        app.http.delete(format!("{one}?permanent=true")).bearer_auth(&alice),
        StatusCode::FORBIDDEN,
    )
    .await;
    let (status, _) = send(
        app.http
            .delete(format!("{one}?permanent=true"))
            .bearer_auth(&admin)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.count(&format!("SELECT count(*) FROM compositions WHERE id = '{id}'")).await, 0);

    // One activity row per applied change, readable by every member.
    let events = activity(&app, &bob, &id, 4).await;
    assert_eq!(
        events,
        [
            "composition_created",
            "composition_updated",
            "composition_deleted",
            "composition_deleted"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn each_rule_is_a_problem_naming_its_field_and_nothing_is_accepted() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let ep = uuid::Uuid::now_v7();
    let many_clips: Vec<Value> = (0..1_001).map(|i| clip(i * 10, 10)).collect();
    let video = |clips: Vec<Value>| json!({"kind": "video", "clips": clips});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({}), "name"),
        (json!({"name": "n", "extra": 1}), "extra"),
        (json!({"name": "n", "tracks": vec![video(vec![]); 17]}), "tracks"),
        (json!({"name": "n", "tracks": [video(many_clips)]}), "tracks[0].clips"),
        (json!({"name": "n", "tracks": [{"kind": "subtitle"}]}), "tracks[0].kind"),
        (
            json!({"name": "n", "tracks": [video(vec![json!({"fileId": "nope", "startUs": 0, "sourceInUs": 0, "durationUs": 1})])]}),
            "tracks[0].clips[0].fileId",
        ),
        (
            json!({"name": "n", "tracks": [video(vec![]), video(vec![clip(-1, 5)])]}),
            "tracks[1].clips[0].startUs",
        ),
        (
            json!({"name": "n", "tracks": [video(vec![json!({"fileId": FILE, "startUs": 0, "sourceInUs": -3, "durationUs": 1})])]}),
            "tracks[0].clips[0].sourceInUs",
        ),
        (
            json!({"name": "n", "tracks": [video(vec![]), video(vec![clip(0, 1), clip(1, 1), clip(2, 1), clip(3, 0)])]}),
            "tracks[1].clips[3].durationUs",
        ),
        (
            json!({"name": "n", "tracks": [video(vec![clip(0, 10), clip(5, 10)])]}),
            "tracks[0].clips[1]",
        ),
        (
            json!({"name": "n", "tracks": [video(vec![json!({"fileId": FILE, "startUs": 0.5, "sourceInUs": 0, "durationUs": 1})])]}),
            "tracks[0].clips[0].startUs",
        ),
    ];
    for (body, field) in &cases {
        let problem = expect_problem(
            app.http
                .post(app.api(&format!("/episodes/{ep}/compositions")))
                .bearer_auth(&alice)
                .json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], *field, "{body} -> {problem}");
    }
    let one = app.api(&format!("/episodes/{ep}/compositions/{}", uuid::Uuid::now_v7()));
    let problem = expect_problem(
        app.http.patch(&one).bearer_auth(&alice).json(&json!({})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "body");
    let problem = expect_problem(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .json(&json!({"tracks": [video(vec![clip(0, 0)])]})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "tracks[0].clips[0].durationUs");
    let problem = expect_problem(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("If-Match", "W/\"x\"")
            .json(&json!({"name": "n"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "If-Match");
    expect_problem(
        app.http
            .get(app.api(&format!("/episodes/{ep}/compositions/not-a-uuid")))
            .bearer_auth(&alice),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn writes_under_a_missing_deleted_or_other_episode_are_rejected() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let missing = uuid::Uuid::now_v7();
    let waiting = |url: String| app.http.post(url).bearer_auth(&alice).header("Prefer", "wait=10");

    // No such episode: 404 when waiting, and nothing to list.
    let problem = expect_problem(
        waiting(compositions(&app, &missing.to_string())).json(&json!({"name": "n"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(str_of(&problem, "detail").contains("episode"), "{problem}");
    expect_problem(
        app.http.get(compositions(&app, &missing.to_string())).bearer_auth(&alice),
        StatusCode::NOT_FOUND,
    )
    .await;

    // A composition asked for under another episode's path does not exist there.
    let (first, other) = (episode(&app, &alice).await, episode(&app, &alice).await);
    let (status, created) =
        send(waiting(compositions(&app, &first)).json(&json!({"name": "n"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = str_of(&created["data"], "id");
    let elsewhere = app.api(&format!("/episodes/{other}/compositions/{id}"));
    expect_problem(app.http.get(&elsewhere).bearer_auth(&alice), StatusCode::NOT_FOUND).await;
    expect_problem(
        app.http
            .patch(&elsewhere)
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"name": "x"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        app.http.delete(&elsewhere).bearer_auth(&alice).header("Prefer", "wait=10"),
        StatusCode::NOT_FOUND,
    )
    .await;

    // A soft-deleted episode takes no writes: 410.
    let (status, _) = send(
        app.http
            .delete(app.api(&format!("/episodes/{first}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    expect_problem(
        waiting(compositions(&app, &first)).json(&json!({"name": "n"})),
        StatusCode::GONE,
    )
    .await;
    // The actor is told of each rejection: 4 so far.
    showrunner_tests::wait_until("four rejection notifications", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications WHERE kind = 'command_rejected'").await == 4
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM compositions").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_episodes_commands_apply_in_the_order_accepted() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let accepted = |request: reqwest::RequestBuilder| async move {
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    };
    // Four commands, none waited for: create episode, create composition, delete episode,
    // update composition. On the episode's partition they apply in this order, so the last
    // finds the episode deleted.
    let ep = accepted(
        app.http.post(app.api("/episodes")).bearer_auth(&alice).json(&json!({"title": "T"})),
    )
    .await;
    let ep_id = str_of(&ep["data"], "id").to_string();
    let created = accepted(
        app.http.post(compositions(&app, &ep_id)).bearer_auth(&alice).json(&json!({"name": "n"})),
    )
    .await;
    let id = str_of(&created["data"], "id").to_string();
    let deleted =
        accepted(app.http.delete(app.api(&format!("/episodes/{ep_id}"))).bearer_auth(&alice)).await;
    let updated = accepted(
        app.http
            .patch(app.api(&format!("/episodes/{ep_id}/compositions/{id}")))
            .bearer_auth(&alice)
            .json(&json!({"name": "after"})),
    )
    .await;
    let mut statuses = Vec::new();
    for body in [&ep, &created, &deleted, &updated] {
        statuses.push(settled_command(&app, &alice, str_of(body, "commandId")).await);
    }
    let names: Vec<&str> =
        statuses.iter().map(|c| c["status"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["applied", "applied", "applied", "rejected"]);
    assert!(str_of(&statuses[3], "error").contains("is deleted"), "{}", statuses[3]);
    let (name, version) = (
        app.count(&format!("SELECT count(*) FROM compositions WHERE id = '{id}' AND name = 'n'"))
            .await,
        app.count(&format!("SELECT version FROM compositions WHERE id = '{id}'")).await,
    );
    assert_eq!((name, version), (1, 1));
    app.stop().await;
}

#[tokio::test]
async fn composition_events_reach_the_episodes_subscribers() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let ep = episode(&app, &alice).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, &bob)).await.expect("websocket");
    socket
        .send(Message::Text(
            json!({"op": "subscribe", "topics": [format!("episode.{ep}.#")]}).to_string().into(),
        ))
        .await
        .expect("send");
    let reply = ws_next(&mut socket).await;
    assert_eq!(reply["op"], "subscribed", "{reply}");

    let (status, created) = send(
        app.http
            .post(compositions(&app, &ep))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"name": "n"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = str_of(&created["data"], "id").to_string();
    let one = app.api(&format!("/episodes/{ep}/compositions/{id}"));
    let (status, _) = send(
        app.http
            .patch(&one)
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"name": "m"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        send(app.http.delete(&one).bearer_auth(&alice).header("Prefer", "wait=10")).await;
    assert_eq!(status, StatusCode::OK);

    // Bob's own presence frames come and go beside them; the three events come in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = ws_next(&mut socket).await;
        if frame["op"] == "event"
            && frame["event"].as_str().is_some_and(|e| e.starts_with("composition_"))
        {
            seen.push(frame);
        }
    }
    let verbs = ["created", "updated", "deleted"];
    for (frame, verb) in seen.iter().zip(verbs) {
        assert_eq!(frame["event"], format!("composition_{verb}"));
        assert_eq!(frame["topic"], format!("episode.{ep}.composition.{verb}"));
    }
    assert_eq!(seen[0]["data"]["composition"]["id"], id.as_str());
    assert_eq!(seen[1]["data"]["changedFields"], json!(["name"]));
    assert_eq!(seen[2]["data"]["compositionId"], id.as_str());
    assert_eq!(seen[2]["data"]["deleteType"], "soft");
    let _ = socket.close(None).await;
    let _ = socket.next().await;
    app.stop().await;
}
