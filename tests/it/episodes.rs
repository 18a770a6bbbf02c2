//! The episode life cycle through the REST API.

use reqwest::StatusCode;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_tests::{TestApp, wait_for, wait_until};

use crate::support::{DEADLINE, create_episode, encode, send, settled_command, str_of};

#[tokio::test]
async fn create_then_read_with_prefer_wait() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);

    let (status, body) =
        create_episode(&app, &alice, json!({"title": "Pilot", "categories": ["drama"]}), true)
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = str_of(&body["data"], "id").to_string();
    assert_eq!(body["data"]["title"], "Pilot");
    assert_eq!(body["data"]["status"], "draft");
    assert_eq!(body["data"]["version"], 1);
    assert_eq!(body["data"]["createdBy"], TestApp::user_id("alice").to_string());

    let (status, read) =
        send(app.http.get(app.api(&format!("/episodes/{id}"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["data"], body["data"]);
    assert_eq!(
        read["viewers"],
        json!([{"userId": TestApp::user_id("alice"), "userName": "alice"}])
    );

    let command = settled_command(&app, &alice, str_of(&body, "commandId")).await;
    assert_eq!(command["status"], "applied");
    assert_eq!(command["resourceId"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn without_wait_the_answer_is_202_and_the_command_applies() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let response = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Later"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location =
        response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body: serde_json::Value = response.json().await.expect("json");
    let command_id = str_of(&body, "commandId");
    assert_eq!(location.as_deref(), Some(format!("/api/v1/commands/{command_id}").as_str()));
    assert_eq!(settled_command(&app, &alice, command_id).await["status"], "applied");
    let id = str_of(&body["data"], "id");
    let (status, _) =
        send(app.http.get(app.api(&format!("/episodes/{id}"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn update_reports_changed_fields() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let (_, created) =
        create_episode(&app, &alice, json!({"title": "Pilot", "description": "d"}), true).await;
    let id = str_of(&created["data"], "id").to_string();

    let (status, updated) = send(
        app.http
            .patch(app.api(&format!("/episodes/{id}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(
                &json!({"title": "Pilot, revised", "description": "d", "status": "in_production"}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["title"], "Pilot, revised");
    assert_eq!(updated["data"]["status"], "in_production");
    assert_eq!(updated["data"]["version"], 2);

    // The event names only what really changed: the description was sent unchanged.
    let update = wait_for("the update in the activity log", DEADLINE, || {
        let request =
            app.http.get(app.api(&format!("/activity?resourceId={id}"))).bearer_auth(&alice);
        async move {
            let (_, body) = send(request).await;
            body["data"]
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["event"] == "episode_updated"))
                .cloned()
        }
    })
    .await;
    assert_eq!(update["data"]["changedFields"], json!(["title", "status"]));
    assert_eq!(update["actorId"], TestApp::user_id("alice").to_string());
    app.stop().await;
}

#[tokio::test]
async fn soft_delete_hides_and_only_admins_delete_permanently() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let root = app.token("root", Role::Admin);
    let (_, a) = create_episode(&app, &alice, json!({"title": "Soft"}), true).await;
    let (_, b) = create_episode(&app, &alice, json!({"title": "Hard"}), true).await;
    let (soft, hard) = (str_of(&a["data"], "id").to_string(), str_of(&b["data"], "id").to_string());

    let (status, body) = send(
        app.http
            .delete(app.api(&format!("/episodes/{soft}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["deletedAt"].is_string());
    let (status, _) =
        send(app.http.get(app.api(&format!("/episodes/{soft}"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM episodes WHERE id = '{soft}' AND deleted_at IS NOT NULL"
        ))
        .await,
        1
    );

    let (status, body) = send(
        app.http.delete(app.api(&format!("/episodes/{hard}?permanent=true"))).bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["status"], 403);
    let (status, _) = send(
        app.http
            .delete(app.api(&format!("/episodes/{hard}?permanent=true")))
            .bearer_auth(&root)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{hard}'")).await, 0);

    // An update of the soft-deleted episode is rejected, with the reason.
    let (status, body) = send(
        app.http
            .patch(app.api(&format!("/episodes/{soft}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"title": "Back"})),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let mut ids = Vec::new();
    for i in 0..7 {
        let status = if i % 2 == 0 { "draft" } else { "published" };
        let categories = if i < 3 { json!(["news"]) } else { json!(["drama", "long"]) };
        let (s, body) = create_episode(&app, &alice, json!({"title": format!("Episode {i} 100%"), "status": status, "categories": categories}), true).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        ids.push(str_of(&body["data"], "id").to_string());
    }
    let list = |query: &str| {
        send(app.http.get(app.api(&format!("/episodes?{query}"))).bearer_auth(&alice))
    };
    let titles = |body: &serde_json::Value| -> Vec<String> {
        body["data"]
            .as_array()
            .map(|a| {
                a.iter().map(|e| e["title"].as_str().unwrap_or_default().to_string()).collect()
            })
            .unwrap_or_default()
    };

    let (_, page1) = list("limit=3").await;
    assert_eq!(titles(&page1), ["Episode 6 100%", "Episode 5 100%", "Episode 4 100%"]);
    let cursor = str_of(&page1, "nextCursor").to_string();
    let (_, page2) = list(&format!("limit=3&cursor={cursor}")).await;
    assert_eq!(titles(&page2), ["Episode 3 100%", "Episode 2 100%", "Episode 1 100%"]);
    let (_, page3) = list(&format!("limit=3&cursor={}", str_of(&page2, "nextCursor"))).await;
    assert_eq!(titles(&page3), ["Episode 0 100%"]);
    assert!(page3["nextCursor"].is_null());

    let (_, published) = list("status=published").await;
    assert_eq!(titles(&published), ["Episode 5 100%", "Episode 3 100%", "Episode 1 100%"]);
    let (_, news) = list("category=news").await;
    assert_eq!(titles(&news), ["Episode 2 100%", "Episode 1 100%", "Episode 0 100%"]);
    let (_, search) = list("q=episode%204").await;
    assert_eq!(titles(&search), ["Episode 4 100%"]);

    let (status, body) = list("status=live").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = list("limit=1000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = list("cursor=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = list("color=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn search_takes_percent_underscore_and_backslash_literally() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    // Each pair: a title holding the special character, and one that the character would
    // match as a LIKE wildcard (or escape) but not as itself.
    for title in ["Sale 50% off", "Sale 50 cents", "file_1", "fileX1", r"x\y", "xy"] {
        let (status, body) = create_episode(&app, &alice, json!({"title": title}), true).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let search = |q: &'static str| {
        let request =
            app.http.get(app.api(&format!("/episodes?q={}", encode(q)))).bearer_auth(&alice).send();
        async move {
            let body: serde_json::Value = request.await.expect("sent").json().await.expect("json");
            let mut titles: Vec<String> = body["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["title"].as_str()).map(str::to_string).collect())
                .unwrap_or_default();
            titles.sort();
            titles
        }
    };
    assert_eq!(search("50%").await, ["Sale 50% off"]);
    assert_eq!(search("file_1").await, ["file_1"]);
    assert_eq!(search(r"\y").await, [r"x\y"]);
    assert_eq!(search("%").await, ["Sale 50% off"]);
    assert_eq!(search("_").await, ["file_1"]);
    // Case does not matter; the plain words still find both of a pair.
    assert_eq!(search("sale 50").await, ["Sale 50 cents", "Sale 50% off"]);
    app.stop().await;
}

/// Messages waiting in the command partition queues (a passive declare counts the ready
/// ones; with no episode worker running, that is all of them).
pub(crate) async fn queued_commands(app: &TestApp) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    let mut total = 0;
    for partition in 0..app.settings.amqp.partitions {
        let queue = showrunner_shared::broker::topology::command_queue(partition);
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = channel
            .queue_declare(queue.as_str().into(), options, Default::default())
            .await
            .expect("passive declare");
        total += declared.message_count();
    }
    let _ = conn.close(200, "counted".into()).await;
    total
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_answer_and_publishes_nothing() {
    let mut app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let post = |body: serde_json::Value, key: &str, token: &str| {
        send(
            app.http
                .post(app.api("/episodes"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let (s1, first) = post(json!({"title": "Once"}), "key-1", &alice).await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    assert_eq!(
        settled_command(&app, &alice, str_of(&first, "commandId")).await["status"],
        "applied"
    );

    // With the command applied and no episode worker left to take messages, whatever a retry
    // publishes stays in the partition queues, where it can be counted.
    app.stop_episode_worker(0);
    wait_until("the episode worker to leave", DEADLINE, || async {
        app.count("SELECT count(*) FROM worker_heartbeats").await == 0
    })
    .await;
    let (s2, second) = post(json!({"title": "Once"}), "key-1", &alice).await;
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(first, second);
    // The same key with another body is refused.
    let (status, body) = post(json!({"title": "Twice"}), "key-1", &alice).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(queued_commands(&app).await, 0, "a retry of an applied command published it");

    // Another user's identical key is another command, and is published.
    let bob = app.token("bob", Role::Member);
    let (status, bobs) = post(json!({"title": "Once"}), "key-1", &bob).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(bobs["commandId"], first["commandId"]);
    assert_eq!(queued_commands(&app).await, 1);
    app.start_episode_worker();
    assert_eq!(settled_command(&app, &bob, str_of(&bobs, "commandId")).await["status"], "applied");

    wait_until("two activity rows", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 2
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM episodes").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_command() {
    // They race in the api (and may share one batch of its group insert): one command results.
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let posts = (0..16).map(|_| {
        send(
            app.http
                .post(app.api("/episodes"))
                .bearer_auth(&alice)
                .header("Idempotency-Key", "same-key")
                .json(&json!({"title": "Raced"})),
        )
    });
    let answers = futures_util::future::join_all(posts).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, body)| str_of(body, "commandId").to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one command id for one key: {answers:?}");
    // Any other answer can only be the 409 of a request that raced the winner's publish.
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT));
    let id = ids.into_iter().next().unwrap_or_default();
    settled_command(&app, &alice, &id).await;
    wait_until("one activity row", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 1
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM episodes").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn update_of_a_missing_episode_is_rejected_and_the_actor_told() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let missing = uuid::Uuid::now_v7();
    let response = app
        .http
        .patch(app.api(&format!("/episodes/{missing}")))
        .bearer_auth(&alice)
        .json(&json!({"title": "Ghost"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await.expect("json");
    let command = settled_command(&app, &alice, str_of(&body, "commandId")).await;
    assert_eq!(command["status"], "rejected");
    assert!(str_of(&command, "error").contains("does not exist"));

    // Waiting on it answers with the problem.
    let (status, problem) = send(
        app.http
            .patch(app.api(&format!("/episodes/{missing}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"title": "Ghost"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    wait_until("two rejection notifications", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications WHERE kind = 'command_rejected'").await == 2
    })
    .await;
    let (_, notes) =
        send(app.http.get(app.api("/notifications?unread=true")).bearer_auth(&alice)).await;
    assert_eq!(notes["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.count("SELECT count(*) FROM episodes").await, 0);
    // Nobody else sees the command.
    let bob = app.token("bob", Role::Member);
    let (status, _) = send(
        app.http
            .get(app.api(&format!("/commands/{}", str_of(&body, "commandId"))))
            .bearer_auth(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn every_change_leaves_one_activity_row_and_the_right_notifications() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let (_, created) = create_episode(&app, &alice, json!({"title": "Tracked"}), true).await;
    let id = str_of(&created["data"], "id").to_string();
    let patch = |title: &str| {
        send(
            app.http
                .patch(app.api(&format!("/episodes/{id}")))
                .bearer_auth(&alice)
                .header("Prefer", "wait=10")
                .json(&json!({"title": title})),
        )
    };
    assert_eq!(patch("Tracked 2").await.0, StatusCode::OK);
    assert_eq!(patch("Tracked 3").await.0, StatusCode::OK);
    let (status, _) = send(
        app.http
            .delete(app.api(&format!("/episodes/{id}")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    wait_until("four activity rows", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 4
    })
    .await;
    wait_until("two notifications", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications").await == 2
    })
    .await;
    let (_, activity) = send(
        app.http
            .get(app.api(&format!("/activity?resourceType=episode&resourceId={id}")))
            .bearer_auth(&alice),
    )
    .await;
    let events: Vec<&str> = activity["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        events,
        ["episode_deleted", "episode_updated", "episode_updated", "episode_created"]
    );

    let (_, notes) = send(app.http.get(app.api("/notifications")).bearer_auth(&alice)).await;
    let kinds: Vec<&str> = notes["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["episode_deleted", "episode_created"]);
    let (_, count) =
        send(app.http.get(app.api("/notifications/unread-count")).bearer_auth(&alice)).await;
    assert_eq!(count["count"], 2);
    let first = str_of(&notes["data"][0], "id").to_string();
    let (status, _) =
        send(app.http.post(app.api(&format!("/notifications/{first}/read"))).bearer_auth(&alice))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, count) =
        send(app.http.get(app.api("/notifications/unread-count")).bearer_auth(&alice)).await;
    assert_eq!(count["count"], 1);
    // Bob cannot mark Alice's notification, nor see it.
    let bob = app.token("bob", Role::Member);
    let (status, _) =
        send(app.http.post(app.api(&format!("/notifications/{first}/read"))).bearer_auth(&bob))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bobs) = send(app.http.get(app.api("/notifications")).bearer_auth(&bob)).await;
    assert_eq!(bobs["data"], json!([]));
    let (_, all) =
        send(app.http.post(app.api("/notifications/read-all")).bearer_auth(&alice)).await;
    assert_eq!(all["count"], 1);
    app.stop().await;
}
