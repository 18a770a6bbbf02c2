//! Following `nextCursor` to the end of `/activity`, `/notifications` and `/jobs`: every row
//! once, newest first, pages no larger than asked, and the last page says it is the last.

use reqwest::StatusCode;
use sea_orm::FromQueryResult;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::db::sql;
use showrunner_tests::{TestApp, wait_until};

use crate::support::{DEADLINE, create_episode, send, str_of};

/// Every page of `path` with `limit`, following `nextCursor`; the ids in the order served.
async fn follow(app: &TestApp, token: &str, path: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = app.api(&format!("{path}{sep}limit={limit}"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = send(app.http.get(url).bearer_auth(token)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let ids: Vec<String> = body["data"]
            .as_array()
            .map(|a| a.iter().map(|r| str_of(r, "id").to_string()).collect())
            .unwrap_or_default();
        assert!(ids.len() <= limit, "{path}: a page of {} with limit {limit}", ids.len());
        pages.push(ids);
        assert!(pages.len() <= 20, "{path}: more pages than rows: {pages:?}");
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return pages,
        }
    }
}

#[derive(FromQueryResult)]
struct Id {
    id: uuid::Uuid,
}

/// The ids `query` selects, as strings, in its order.
async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    Id::find_by_statement(sql(query, []))
        .all(&app.db)
        .await
        .expect("ids")
        .into_iter()
        .map(|r| r.id.to_string())
        .collect()
}

/// `path` paged by 2 and by exactly its size, against `expected` (newest first).
async fn check(app: &TestApp, token: &str, path: &str, expected: &[String]) {
    assert_eq!(expected.len(), 5, "{path}: {expected:?}");
    let pages = follow(app, token, path, 2).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1], "{path}: {pages:?}");
    assert_eq!(pages.concat(), expected, "{path}");
    // A last page that is exactly full is still the last: no cursor to an empty page.
    let pages = follow(app, token, path, 5).await;
    assert_eq!(pages, [expected.to_vec()], "{path}");
}

#[tokio::test]
async fn following_next_cursor_reaches_every_row_once() {
    // The test job types, so that POST /jobs accepts `test.permanent`; no job worker runs.
    let registry = showrunner_tests::job_handlers::registry(&Default::default());
    let app = TestApp::spawn_with(showrunner_tests::Options {
        job_registry: registry,
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    for i in 0..5 {
        let (status, body) =
            create_episode(&app, &alice, json!({"title": format!("Paged {i}")}), true).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = send(
            app.http
                .post(app.api("/jobs"))
                .bearer_auth(&alice)
                .json(&json!({"type": "test.permanent", "payload": {"n": i}})),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // Five creations and five job_queued.
    wait_until("ten activity rows and five notifications", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 10
            && app.count("SELECT count(*) FROM notifications").await == 5
    })
    .await;
    // Each resource type's five rows, paged through its own filter.
    for kind in ["episode", "job"] {
        let query =
            format!("SELECT id FROM activity_log WHERE resource_type = '{kind}' ORDER BY id DESC");
        let activity = ids(&app, &query).await;
        check(&app, &alice, &format!("/activity?resourceType={kind}"), &activity).await;
    }
    let notifications = ids(&app, "SELECT id FROM notifications ORDER BY id DESC").await;
    check(&app, &alice, "/notifications", &notifications).await;
    let jobs = ids(&app, "SELECT id FROM jobs ORDER BY id DESC").await;
    check(&app, &alice, "/jobs", &jobs).await;
    app.stop().await;
}
