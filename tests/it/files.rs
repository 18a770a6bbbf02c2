//! Files through the REST API and the pipeline: an upload streamed into storage and read back
//! whole, in ranges and conditionally; the limits (size, type, episode) storing nothing; an
//! upload cut off or refused by the worker leaving no object; deletes, the purge job and the
//! compositions that keep a file; the orphan sweeper; exports as files (OTIO).

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use showrunner_shared::auth::Role;
use showrunner_shared::storage::{self, Storage};
use showrunner_tests::{Options, TestApp, wait_until};
use tokio::io::AsyncWriteExt;

use crate::support::{
    DEADLINE, create_episode, expect_problem, send, settled_command, str_of, upload,
};

async fn episode(app: &TestApp, token: &str) -> String {
    let (status, body) = create_episode(app, token, json!({"title": "Pilot"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    str_of(&body["data"], "id").to_string()
}

fn files(app: &TestApp, episode: &str) -> String {
    app.api(&format!("/episodes/{episode}/files"))
}

/// The stack's store (the same memory store its api and job workers use).
fn store(app: &TestApp) -> Storage {
    Storage::open(&app.settings.storage).expect("storage")
}

/// How many file objects the store holds.
async fn objects(app: &TestApp) -> usize {
    let store = store(app);
    store.store().list(Some(&storage::files_prefix())).count().await
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn with_jobs(extra: &[(&str, &str)]) -> Options {
    Options {
        job_workers: 1,
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    }
}

#[tokio::test]
async fn an_upload_is_stored_and_read_whole_in_ranges_and_conditionally() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let ep = episode(&app, &alice).await;
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();

    // Waiting: 201 with the file as recorded; the name from Content-Disposition.
    let response = app
        .http
        .post(files(&app, &ep))
        .bearer_auth(&alice)
        .header("Content-Type", "audio/wav")
        .header("Content-Disposition", "attachment; filename=\"take \\\"1\\\".wav\"")
        .header("Prefer", "wait=10")
        .body(bytes.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location =
        response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let created: Value = response.json().await.expect("json");
    let id = str_of(&created["data"], "id").to_string();
    assert_eq!(location, Some(format!("/api/v1/episodes/{ep}/files/{id}")));
    let sha = hex_sha256(&bytes);
    assert_eq!(created["data"]["name"], "take \"1\".wav");
    assert_eq!(created["data"]["contentType"], "audio/wav");
    assert_eq!(created["data"]["size"], 10_000);
    assert_eq!(created["data"]["sha256"], sha.as_str());
    assert_eq!(created["data"]["episodeId"], ep.as_str());
    assert_eq!(created["data"]["createdBy"], TestApp::user_id("alice").to_string());

    // Without waiting: 202 with the file as it will be; the name from ?name=.
    let (status, accepted) = send(
        app.http
            .post(format!("{}?name=notes.txt", files(&app, &ep)))
            .bearer_auth(&bob)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("hello"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["data"]["contentType"], "text/plain");
    assert_eq!(accepted["data"]["size"], 5);
    let command = settled_command(&app, &bob, str_of(&accepted, "commandId")).await;
    assert_eq!(command["status"], "applied", "{command}");

    // Metadata and the list, newest first; any member reads them.
    let (status, read) =
        send(app.http.get(format!("{}/{id}", files(&app, &ep))).bearer_auth(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["data"], created["data"]);
    let (status, page) = send(app.http.get(files(&app, &ep)).bearer_auth(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let names: Vec<&str> =
        page["data"].as_array().into_iter().flatten().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["notes.txt", "take \"1\".wav"]);

    // The bytes, whole.
    let content = format!("{}/{id}/content", files(&app, &ep));
    let response = app.http.get(&content).bearer_auth(&bob).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    assert_eq!(header(&response, "etag"), format!("\"{sha}\""));
    assert_eq!(header(&response, "content-type"), "audio/wav");
    assert_eq!(header(&response, "content-length"), "10000");
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename=\"take _1_.wav\"; filename*=UTF-8''take%20%221%22.wav"
    );
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes.as_slice());

    // One range: 206 with exactly those bytes.
    let response = app
        .http
        .get(&content)
        .bearer_auth(&bob)
        .header("Range", "bytes=100-299")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&response, "content-range"), "bytes 100-299/10000");
    assert_eq!(header(&response, "content-length"), "200");
    assert_eq!(response.bytes().await.expect("body").as_ref(), &bytes[100..300]);
    let response = app
        .http
        .get(&content)
        .bearer_auth(&bob)
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.expect("body").as_ref(), &bytes[9_990..]);

    // Beyond the end: 416 naming the size.
    let response = app
        .http
        .get(&content)
        .bearer_auth(&bob)
        .header("Range", "bytes=10000-")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "content-range"), "bytes */10000");

    // The ETag the client holds: 304, no body.
    let response = app
        .http
        .get(&content)
        .bearer_auth(&bob)
        .header("If-None-Match", format!("\"{sha}\""))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(response.bytes().await.expect("body").is_empty());

    // Under another episode's path: 404.
    let other = episode(&app, &alice).await;
    expect_problem(
        app.http.get(format!("{}/{id}/content", files(&app, &other))).bearer_auth(&bob),
        StatusCode::NOT_FOUND,
    )
    .await;

    // The upload left one activity row, readable by every member.
    wait_until("the file's activity row", DEADLINE, || async {
        let (_, rows) = send(
            app.http
                .get(app.api(&format!("/activity?resourceType=file&resourceId={id}")))
                .bearer_auth(&bob),
        )
        .await;
        rows["data"].as_array().is_some_and(|r| r.len() == 1 && r[0]["event"] == "file_uploaded")
    })
    .await;
    assert_eq!(objects(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn uploads_over_the_limit_of_a_refused_type_or_episode_store_nothing() {
    let app = TestApp::spawn_with(with_jobs(&[("files.max_bytes", "1000")])).await;
    let alice = app.token("alice", Role::Member);
    let admin = app.token("root", Role::Admin);
    let ep = episode(&app, &alice).await;
    let post =
        |ep: &str| app.http.post(format!("{}?name=a.wav", files(&app, ep))).bearer_auth(&alice);

    // Declared too large: 413 before a byte is read.
    expect_problem(
        post(&ep).header("Content-Type", "audio/wav").body(vec![0u8; 1001]),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // Streamed without a length: 413 as soon as the limit is passed.
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 100]))),
    );
    expect_problem(
        post(&ep).header("Content-Type", "audio/wav").body(reqwest::Body::wrap_stream(chunks)),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // A type outside files.allowed_types, or none: 415.
    expect_problem(
        post(&ep).header("Content-Type", "application/x-msdownload").body("MZ"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    expect_problem(post(&ep).body("x"), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // No name, or a name with a slash: 422 naming it.
    let problem = expect_problem(
        app.http
            .post(files(&app, &ep))
            .bearer_auth(&alice)
            .header("Content-Type", "audio/wav")
            .body("x"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "name");
    expect_problem(
        app.http
            .post(format!("{}?name=a%2Fb", files(&app, &ep)))
            .bearer_auth(&alice)
            .header("Content-Type", "audio/wav")
            .body("x"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // A missing episode: 404; a deleted one: 410.
    let missing = uuid::Uuid::now_v7().to_string();
    expect_problem(
        post(&missing).header("Content-Type", "audio/wav").body("x"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let (status, _) = send(
        app.http
            .delete(app.api(&format!("/episodes/{ep}")))
            .bearer_auth(&admin)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    expect_problem(post(&ep).header("Content-Type", "audio/wav").body("x"), StatusCode::GONE).await;

    assert_eq!(objects(&app).await, 0);
    assert_eq!(app.count("SELECT count(*) FROM files").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE resource_type = 'file'").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_upload_cut_off_midway_leaves_no_object_and_no_row() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let ep = episode(&app, &alice).await;
    // 9 MiB of a promised 20: past the first part, so a multipart upload had begun.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/episodes/{ep}/files?name=big.wav HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {alice}\r\nContent-Type: audio/wav\r\n\
         Content-Length: {}\r\n\r\n",
        20 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![7u8; 1024 * 1024];
    for _ in 0..9 {
        stream.write_all(&chunk).await.expect("body");
    }
    stream.flush().await.expect("flush");
    // Gone before its end.
    drop(stream);
    // The api reads what arrived, sees the body end early and aborts the upload.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    wait_until("the cut-off upload to be cleaned up", DEADLINE, || async {
        objects(&app).await == 0
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM files").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE resource_type = 'file'").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_record_the_worker_refuses_removes_its_object() {
    let app = TestApp::spawn_with(with_jobs(&[])).await;
    let alice = app.token("alice", Role::Member);
    let admin = app.token("root", Role::Admin);
    let ep = episode(&app, &alice).await;
    // The upload starts while the episode is live...
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let request = app
        .http
        .post(format!("{}?name=late.wav", files(&app, &ep)))
        .bearer_auth(&alice)
        .header("Content-Type", "audio/wav")
        .header("Prefer", "wait=10")
        .body(body)
        .send();
    let upload = tokio::spawn(request);
    tx.send(Ok(bytes::Bytes::from_static(b"first half "))).await.expect("send");
    // ...the episode is deleted meanwhile (its command goes first on the partition)...
    let (status, _) = send(
        app.http
            .delete(app.api(&format!("/episodes/{ep}")))
            .bearer_auth(&admin)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // ...then the bytes end and are stored: the worker refuses the record (410).
    tx.send(Ok(bytes::Bytes::from_static(b"second half"))).await.expect("send");
    drop(tx);
    let response = upload.await.expect("joined").expect("sent");
    assert_eq!(response.status(), StatusCode::GONE);
    // The refusal queued a purge: the object goes, then the purge job's success is committed
    // (the job worker writes successes in batches, after the handler returned).
    wait_until("the refused upload's object purged by a job that succeeded", DEADLINE, || async {
        objects(&app).await == 0
            && app
                .count(
                    "SELECT count(*) FROM jobs WHERE type = 'file.purge' AND status = 'succeeded'",
                )
                .await
                == 1
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM files").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM jobs WHERE type = 'file.purge'").await, 1);
    app.stop().await;
}

/// A receiver as a stream (tokio-stream is not a dependency of the tests).
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[tokio::test]
async fn a_file_in_use_is_kept_and_a_permanent_delete_purges_its_bytes() {
    let app = TestApp::spawn_with(with_jobs(&[])).await;
    let alice = app.token("alice", Role::Member);
    let admin = app.token("root", Role::Admin);
    let ep = episode(&app, &alice).await;
    let other = episode(&app, &alice).await;
    let file = upload(&app, &alice, &ep, "a.wav", b"aaaa").await;
    let foreign = upload(&app, &alice, &other, "b.wav", b"bbbb").await;
    let gone = upload(&app, &alice, &ep, "c.wav", b"cccc").await;
    let (status, _) = send(
        app.http
            .delete(format!("{}/{gone}", files(&app, &ep)))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let compositions = app.api(&format!("/episodes/{ep}/compositions"));
    let with_clip = |file: &str| {
        json!({"name": "Cut", "tracks": [{"kind": "audio", "clips": [
            {"fileId": file, "startUs": 0, "sourceInUs": 0, "durationUs": 10}]}]})
    };
    // A clip naming a file of another episode, a deleted file or no file: rejected naming it.
    for bad in [foreign.clone(), gone.clone(), uuid::Uuid::now_v7().to_string()] {
        let problem = expect_problem(
            app.http
                .post(&compositions)
                .bearer_auth(&alice)
                .header("Prefer", "wait=10")
                .json(&with_clip(&bad)),
            StatusCode::CONFLICT,
        )
        .await;
        let detail = str_of(&problem, "detail");
        assert!(detail.starts_with("tracks[0].clips[0]: file "), "{detail}");
    }
    let (status, created) = send(
        app.http
            .post(&compositions)
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&with_clip(&file)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let composition = str_of(&created["data"], "id").to_string();
    // An update's tracks are checked against the files table the same way.
    let problem = expect_problem(
        app.http
            .patch(format!("{compositions}/{composition}"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"tracks": with_clip(&foreign)["tracks"]})),
        StatusCode::CONFLICT,
    )
    .await;
    let detail = str_of(&problem, "detail");
    assert!(detail.starts_with("tracks[0].clips[0]: file "), "{detail}");

    // Used by a live composition: neither delete goes through.
    let one = format!("{}/{file}", files(&app, &ep));
    for (url, token) in [(one.clone(), &alice), (format!("{one}?permanent=true"), &admin)] {
        expect_problem(
            app.http.delete(&url).bearer_auth(token).header("Prefer", "wait=10"),
            StatusCode::CONFLICT,
        )
        .await;
    }
    // Members may not delete permanently.
    expect_problem(
        app.http.delete(format!("{one}?permanent=true")).bearer_auth(&alice),
        StatusCode::FORBIDDEN,
    )
    .await;
    // Once the composition is deleted, the file can go, bytes and all.
    let (status, _) = send(
        app.http
            .delete(format!("{compositions}/{composition}"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let store = store(&app);
    let key = storage::file_key(ep.parse().expect("uuid"), file.parse().expect("uuid"));
    assert!(store.store().head(&key).await.is_ok());
    let response = app
        .http
        .delete(format!("{one}?permanent=true"))
        .bearer_auth(&admin)
        .header("Prefer", "wait=10")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    wait_until("the purge job to remove the bytes", DEADLINE, || async {
        store.store().head(&key).await.is_err()
    })
    .await;
    expect_problem(app.http.get(&one).bearer_auth(&alice), StatusCode::NOT_FOUND).await;
    expect_problem(
        app.http.get(format!("{one}/content")).bearer_auth(&alice),
        StatusCode::NOT_FOUND,
    )
    .await;
    // The soft-deleted file keeps its bytes; the other episode's file is untouched.
    assert_eq!(objects(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn an_object_no_row_names_is_swept_after_its_age() {
    let app = TestApp::spawn_with(with_jobs(&[("files.orphan_after_secs", "10")])).await;
    let alice = app.token("alice", Role::Member);
    let ep = episode(&app, &alice).await;
    let kept = upload(&app, &alice, &ep, "kept.wav", b"keep").await;
    // What a crash between storing an upload and recording it leaves.
    let store = store(&app);
    let orphan = storage::file_key(ep.parse().expect("uuid"), uuid::Uuid::now_v7());
    store.store().put(&orphan, b"lost".to_vec().into()).await.expect("put");
    wait_until("the orphan to be swept", std::time::Duration::from_secs(40), || async {
        store.store().head(&orphan).await.is_err()
    })
    .await;
    let kept_key = storage::file_key(ep.parse().expect("uuid"), kept.parse().expect("uuid"));
    assert!(store.store().head(&kept_key).await.is_ok(), "a recorded file's object stays");
    app.stop().await;
}

#[tokio::test]
async fn a_composition_exports_as_an_otio_timeline_file() {
    let app = TestApp::spawn_with(with_jobs(&[])).await;
    let alice = app.token("alice", Role::Member);
    let ep = episode(&app, &alice).await;
    let video = upload(&app, &alice, &ep, "picture.mov", b"video").await;
    let audio = upload(&app, &alice, &ep, "dialogue.wav", b"audio").await;
    let tracks = json!([
        {"kind": "video", "clips": [
            {"fileId": video, "startUs": 1_000_000, "sourceInUs": 500_000, "durationUs": 2_000_000},
            {"fileId": video, "startUs": 0, "sourceInUs": 0, "durationUs": 1_000_000}]},
        {"kind": "audio", "clips": [
            {"fileId": audio, "startUs": 250_000, "sourceInUs": 0, "durationUs": 750_000}]}
    ]);
    let (status, created) = send(
        app.http
            .post(app.api(&format!("/episodes/{ep}/compositions")))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"name": "Rough cut", "tracks": tracks})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let composition = str_of(&created["data"], "id").to_string();
    let (status, job) = send(app.http.post(app.api("/jobs")).bearer_auth(&alice).json(&json!({
        "type": "composition.export",
        "payload": {"episodeId": ep, "compositionId": composition}
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = str_of(&job["data"], "id").to_string();
    let done = showrunner_tests::wait_for("the export to succeed", DEADLINE, || {
        let request = app.http.get(app.api(&format!("/jobs/{job_id}"))).bearer_auth(&alice);
        async move {
            let (_, body) = send(request).await;
            (body["data"]["status"] == "succeeded").then(|| body["data"].clone())
        }
    })
    .await;
    let url = str_of(&done["result"], "url").to_string();
    let response = app
        .http
        .get(format!("http://{}{url}", app.addr))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let otio: Value = response.json().await.expect("json");

    let time = |v: &Value| (v["OTIO_SCHEMA"].clone(), v["rate"].as_f64(), v["value"].as_f64());
    let rt = |us: f64| (json!("RationalTime.1"), Some(1_000_000.0), Some(us));
    assert_eq!(otio["OTIO_SCHEMA"], "Timeline.1");
    assert_eq!(otio["name"], "Rough cut");
    assert_eq!(otio["tracks"]["OTIO_SCHEMA"], "Stack.1");
    let tracks = otio["tracks"]["children"].as_array().cloned().unwrap_or_default();
    assert_eq!(tracks.len(), 2);
    assert_eq!(
        (tracks[0]["OTIO_SCHEMA"].as_str(), tracks[0]["kind"].as_str()),
        (Some("Track.1"), Some("Video"))
    );
    assert_eq!(tracks[1]["kind"], "Audio");
    // Video: the clips in time order, back to back.
    let v = tracks[0]["children"].as_array().cloned().unwrap_or_default();
    let schemas: Vec<&str> = v.iter().filter_map(|c| c["OTIO_SCHEMA"].as_str()).collect();
    assert_eq!(schemas, ["Clip.2", "Clip.2"]);
    assert_eq!(time(&v[1]["source_range"]["start_time"]), rt(500_000.0));
    assert_eq!(time(&v[1]["source_range"]["duration"]), rt(2_000_000.0));
    assert_eq!(v[1]["source_range"]["OTIO_SCHEMA"], "TimeRange.1");
    let reference = &v[1]["media_references"][str_of(&v[1], "active_media_reference_key")];
    assert_eq!(reference["OTIO_SCHEMA"], "ExternalReference.1");
    assert_eq!(reference["target_url"], format!("/api/v1/episodes/{ep}/files/{video}/content"));
    assert_eq!(v[0]["name"], "picture.mov");
    // Audio: a gap, then the clip.
    let a = tracks[1]["children"].as_array().cloned().unwrap_or_default();
    let schemas: Vec<&str> = a.iter().filter_map(|c| c["OTIO_SCHEMA"].as_str()).collect();
    assert_eq!(schemas, ["Gap.1", "Clip.2"]);
    assert_eq!(time(&a[0]["source_range"]["duration"]), rt(250_000.0));
    assert_eq!(time(&a[1]["source_range"]["duration"]), rt(750_000.0));
    app.stop().await;
}

/// The S3-compatible server of the S3 tests: `SHOWRUNNER_TEST_S3` if set (CI starts moto and
/// sets it), else the one `tests/s3/moto.sh` starts (installing moto from PyPI the first time).
/// `None`, with the reason printed, when neither can be had: the test is then skipped.
fn s3_endpoint() -> Option<String> {
    if let Ok(endpoint) = std::env::var("SHOWRUNNER_TEST_S3") {
        return Some(endpoint);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/s3/moto.sh");
    match std::process::Command::new("bash").arg(script).output() {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => {
            eprintln!(
                "SKIPPED: no S3 server: {script} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(error) => {
            eprintln!("SKIPPED: no S3 server: cannot run {script}: {error}");
            None
        }
    }
}

/// A test's own bucket on the S3 server, emptied and removed by [`S3Bucket::remove`] (moto keeps
/// buckets in memory: one a failed test leaves goes with the server).
struct S3Bucket {
    endpoint: String,
    name: String,
}

impl S3Bucket {
    async fn create(endpoint: &str) -> Self {
        let name = format!("sr-test-{}", uuid::Uuid::now_v7().simple());
        // moto takes unsigned bucket requests.
        let response = showrunner_shared::tls::client()
            .put(format!("{endpoint}/{name}"))
            .send()
            .await
            .expect("create the bucket");
        assert!(response.status().is_success(), "create bucket: {}", response.status());
        Self { endpoint: endpoint.to_string(), name }
    }

    fn settings(&self) -> Vec<(String, String)> {
        [
            ("storage.url", format!("s3://{}", self.name)),
            ("storage.s3.endpoint", self.endpoint.clone()),
            ("storage.s3.allow_http", "true".into()),
            ("storage.s3.access_key_id", "test".into()),
            ("storage.s3.secret_access_key", "test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Empties and removes the bucket.
    async fn remove(self, store: &Storage) {
        let keys: Vec<_> =
            store.store().list(None).filter_map(|m| async { m.ok() }).collect().await;
        for meta in keys {
            let _ = store.delete(&meta.location).await;
        }
        let _ = showrunner_shared::tls::client()
            .delete(format!("{}/{}", self.endpoint, self.name))
            .send()
            .await;
    }
}

#[tokio::test]
async fn files_live_in_an_s3_bucket_streamed_in_parts() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = S3Bucket::create(&endpoint).await;
    let mut options = with_jobs(&[]);
    options.extra.extend(bucket.settings());
    let app = TestApp::spawn_with(options).await;
    let alice = app.token("alice", Role::Member);
    let admin = app.token("root", Role::Admin);
    let ep = episode(&app, &alice).await;

    // 20 MiB in 1 MiB pieces: past the first part, so a multipart upload of three parts.
    let piece: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut hasher = Sha256::new();
    for _ in 0..20 {
        hasher.update(&piece);
    }
    let sha: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let chunks = {
        let piece = bytes::Bytes::from(piece.clone());
        futures_util::stream::iter((0..20).map(move |_| Ok::<_, std::io::Error>(piece.clone())))
    };
    let (status, created) = send(
        app.http
            .post(format!("{}?name=stems.wav", files(&app, &ep)))
            .bearer_auth(&alice)
            .header("Content-Type", "audio/wav")
            .header("Prefer", "wait=10")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["size"], 20 * 1024 * 1024);
    assert_eq!(created["data"]["sha256"], sha.as_str());
    let id = str_of(&created["data"], "id").to_string();
    let store = store(&app);
    let key = storage::file_key(ep.parse().expect("uuid"), id.parse().expect("uuid"));
    assert_eq!(store.store().head(&key).await.expect("in the bucket").size, 20 * 1024 * 1024);

    // A range across a part boundary (8 MiB), read back from the bucket.
    let content = format!("{}/{id}/content", files(&app, &ep));
    let start = 8 * 1024 * 1024 - 10;
    let response = app
        .http
        .get(&content)
        .bearer_auth(&alice)
        .header("Range", format!("bytes={start}-{}", start + 19))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    let expected: Vec<u8> =
        (start..start + 20).map(|i| ((i % (1024 * 1024)) % 253) as u8).collect();
    assert_eq!(response.bytes().await.expect("body").as_ref(), expected.as_slice());

    // The permanent delete's purge empties the bucket.
    let response = app
        .http
        .delete(format!("{}/{id}?permanent=true", files(&app, &ep)))
        .bearer_auth(&admin)
        .header("Prefer", "wait=10")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    wait_until("the purge to empty the bucket", DEADLINE, || async {
        store.store().list(None).count().await == 0
    })
    .await;
    app.stop().await;
    bucket.remove(&store).await;
}
