//! SIGTERM drains: real role processes (`sr-role`, the same `process::main` as the shipped
//! binaries) under load get SIGTERM, must exit 0 within `shutdown.grace_secs`, and nothing
//! they accepted is lost or applied twice: the api, an episode worker (which also deletes its
//! heartbeat), the activity worker (the sequencer) with the notification worker, and a job
//! worker (one job past the grace exits 3 and runs again).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, job_handlers, wait_until};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, send};

const GRACE_SECS: u64 = 10;

/// A role process, its output in a file of its own: shown when its drain fails, so that a
/// failure says which step the process was in (the log is at `info`, with times).
struct RoleProcess {
    child: Child,
    log: std::path::PathBuf,
}

fn role(app: &TestApp, role: &str, extra: &[(&str, String)]) -> RoleProcess {
    let log = std::env::temp_dir().join(format!("sr-drain-{role}-{}.log", uuid::Uuid::now_v7()));
    let file = std::fs::File::create(&log).expect("role log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sr-role"))
        .arg(role)
        .envs(app.env())
        .env("SHOWRUNNER__SHUTDOWN__GRACE_SECS", GRACE_SECS.to_string())
        .env("SHOWRUNNER__WORKERS__HEARTBEAT_SECS", "1")
        .env("SHOWRUNNER__WORKERS__HEARTBEAT_TTL_SECS", "4")
        .env("SHOWRUNNER__LOG__FILTER", "info")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(file.try_clone().expect("role log file"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start sr-role {role}: {e}"));
    RoleProcess { child, log }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// SIGTERM, then the exit status and how long the drain took. A drain that did not end with
/// 0 within the grace prints the last lines of the process's log.
async fn terminate(process: &mut RoleProcess) -> (std::process::ExitStatus, Duration) {
    let child = &mut process.child;
    let pid = child.id().expect("still running");
    let started = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let limit = Duration::from_secs(GRACE_SECS + 5);
    let status = tokio::time::timeout(limit, child.wait()).await;
    let took = started.elapsed();
    let drained =
        matches!(&status, Ok(Ok(s)) if s.success()) && took < Duration::from_secs(GRACE_SECS);
    if !drained {
        let log = std::fs::read_to_string(&process.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!(
            "--- sr-role (pid {pid}) after SIGTERM: {status:?} in {took:?}; its last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let status =
        status.unwrap_or_else(|_| panic!("still running {limit:?} after SIGTERM")).expect("wait");
    (status, took)
}

/// Creates episodes through `base` until `stop`; the ids of those accepted (2xx).
async fn writer(
    http: reqwest::Client,
    base: String,
    token: String,
    wait: bool,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut request = http
            .post(format!("{base}/episodes"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("drain {n}")}));
        if wait {
            request = request.header("Prefer", "wait=10");
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = body["data"]["id"].as_str() {
                    accepted.push(id.to_string());
                }
            }
            // Refused or cut while the api stops: not accepted.
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    accepted
}

async fn applied_once(app: &TestApp, ids: &[String]) {
    assert!(!ids.is_empty(), "the load accepted nothing");
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let episodes = format!("SELECT count(*) FROM episodes WHERE id IN ({list})");
    let activity = format!(
        "SELECT count(*) FROM activity_log WHERE event = 'episode_created' AND resource_id IN ({list})"
    );
    wait_until("every accepted create to be applied and logged", DEADLINE, || async {
        app.count(&episodes).await == ids.len() as i64
            && app.count(&activity).await == ids.len() as i64
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status <> 'applied'").await, 0);
    // Exactly once: one event per command, no second episode from a retry.
    assert_eq!(
        app.count("SELECT count(*) FROM activity_log WHERE event = 'episode_created'").await,
        app.count("SELECT count(*) FROM episodes").await
    );
}

#[tokio::test]
async fn an_episode_worker_drains_on_sigterm_and_exits_0() {
    let app = TestApp::spawn_with(Options { episode_workers: 0, ..Options::default() }).await;
    let alice = app.token("alice", Role::Member);
    let mut worker = role(&app, "episode-worker", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(writer(app.http.clone(), app.api(""), alice.clone(), false, stop.clone()))
        })
        .collect();
    // Under load: the worker is applying batches when the signal comes.
    wait_until("the worker to apply commands", DEADLINE, || async {
        app.count("SELECT count(*) FROM episodes").await > 200
    })
    .await;
    let (status, took) = terminate(&mut worker).await;
    assert!(status.success(), "exit {status:?} after {took:?}");
    assert!(took < Duration::from_secs(GRACE_SECS), "drained in {took:?}");
    // It deleted its heartbeat on the way out (the others need not wait for it to expire), so
    // a new worker takes every partition at once and applies the rest.
    assert_eq!(app.count("SELECT count(*) FROM worker_heartbeats").await, 0, "heartbeat left");
    let mut next = role(&app, "episode-worker", &[]);
    stop.store(true, Ordering::Relaxed);
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.expect("writer"));
    }
    applied_once(&app, &ids).await;
    let (status, _) = terminate(&mut next).await;
    assert!(status.success(), "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_activity_and_notification_workers_drain_on_sigterm_and_exit_0() {
    let app = TestApp::spawn_with(Options {
        activity_workers: 0,
        notification_workers: 0,
        ..Options::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let mut sequencer = role(&app, "activity-worker", &[]);
    let mut notifier = role(&app, "notification-worker", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(writer(app.http.clone(), app.api(""), alice.clone(), false, stop.clone()))
        })
        .collect();
    // Under load: both are writing batches when the signal comes.
    wait_until("both workers to write under load", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await > 200
            && app.count("SELECT count(*) FROM notifications").await > 200
    })
    .await;
    let ((s1, t1), (s2, t2)) = tokio::join!(terminate(&mut sequencer), terminate(&mut notifier));
    assert!(s1.success(), "activity worker: exit {s1:?} after {t1:?}");
    assert!(s2.success(), "notification worker: exit {s2:?} after {t2:?}");
    assert!(t1.max(t2) < Duration::from_secs(GRACE_SECS), "drained in {t1:?} and {t2:?}");
    let mut sequencer = role(&app, "activity-worker", &[]);
    let mut notifier = role(&app, "notification-worker", &[]);
    stop.store(true, Ordering::Relaxed);
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.expect("writer"));
    }
    applied_once(&app, &ids).await;
    // Every creation notified its creator once, and that notification's own event was
    // sequenced once: nothing the drained workers held was lost.
    let n = ids.len() as i64;
    wait_until("a notification per creation and its event in the log", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications WHERE kind = 'episode_created'").await == n
            && app
                .count(
                    "SELECT count(*) FROM event_log WHERE routing_key LIKE 'user.%.notification'",
                )
                .await
                == n
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM event_log WHERE routing_key LIKE 'episode.%.created'")
            .await,
        n
    );
    let ((s1, _), (s2, _)) = tokio::join!(terminate(&mut sequencer), terminate(&mut notifier));
    assert!(s1.success() && s2.success(), "{s1:?} {s2:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_api_drains_on_sigterm_closes_websockets_with_1001_and_exits_0() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut api = role(&app, "api", &[("SHOWRUNNER__HTTP__ADDR", addr.clone())]);
    let base = format!("http://{addr}/api/v1");
    wait_until("the api process to be ready", DEADLINE, || async {
        app.http
            .get(format!("http://{addr}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws?token={alice}"))
            .await
            .expect("websocket");
    socket
        .send(Message::text(
            json!({"op": "subscribe", "topics": ["episode.*.created"]}).to_string(),
        ))
        .await
        .expect("subscribe");
    // The client reads all along, as a browser does: one that read nothing until the api had
    // exited left the close frame queued behind the events the kernel's buffers could not hold
    // (CI saw the socket end without it once).
    let reader = tokio::spawn(async move {
        while let Some(frame) = socket.next().await {
            if let Ok(Message::Close(frame)) = frame {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let stop = Arc::new(AtomicBool::new(false));
    // Half the writers wait for the outcome (`Prefer: wait`), half take the 202.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(writer(
                app.http.clone(),
                base.clone(),
                alice.clone(),
                i % 2 == 0,
                stop.clone(),
            ))
        })
        .collect();
    wait_until("the api process to accept writes", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands").await > 100
    })
    .await;
    let (status, took) = terminate(&mut api).await;
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "exit {status:?} after {took:?}");
    assert!(took < Duration::from_secs(GRACE_SECS), "drained in {took:?}");
    let close =
        tokio::time::timeout(DEADLINE, reader).await.expect("the socket ends").expect("the reader");
    assert_eq!(close, Some(1001), "WebSocket closed with going away");
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.expect("writer"));
    }
    applied_once(&app, &ids).await;
    // And a write the stopped api accepted is visible through the in-process one.
    let (status, _) =
        send(app.http.get(app.api(&format!("/episodes/{}", ids[0]))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_job_worker_finishes_running_jobs_on_sigterm_and_one_past_the_grace_runs_again() {
    let app = TestApp::spawn_with(Options {
        job_workers: 0,
        job_registry: job_handlers::registry(&Default::default()),
        extra: vec![
            ("jobs.timeout_secs".into(), "3".into()),
            ("jobs.initial_delay_ms".into(), "100".into()),
        ],
        ..Options::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let mut worker = role(&app, "job-worker", &[]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, body) = send(
            app.http
                .post(app.api("/jobs"))
                .bearer_auth(&alice)
                .json(&json!({"type": "test.sleep", "payload": {"firstAttemptMs": 1500}})),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["data"]["id"].as_str().expect("id").to_string());
    }
    wait_until("the jobs to run", DEADLINE, || async {
        app.count("SELECT count(*) FROM jobs WHERE status = 'running'").await == 4
    })
    .await;
    let (status, took) = terminate(&mut worker).await;
    assert!(status.success(), "exit {status:?} after {took:?}");
    // The running jobs were finished by the draining worker, on their first attempt.
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE status = 'succeeded' AND attempts = 1").await,
        4
    );
    // Their events left before the process did (nothing waits in the outbox for a sweeper).
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0, "{ids:?}");
    wait_until("the activity log to record the four completions", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log WHERE event = 'job_completed'").await == 4
    })
    .await;

    // A job longer than the grace: the process exits anyway (code 3), the job is not lost.
    let mut worker = role(&app, "job-worker", &[("SHOWRUNNER__SHUTDOWN__GRACE_SECS", "1".into())]);
    let (_, body) = send(
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            .json(&json!({"type": "test.sleep", "payload": {"firstAttemptMs": 60000}})),
    )
    .await;
    let id = body["data"]["id"].as_str().expect("id").to_string();
    let running = format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND status = 'running'");
    wait_until("the long job to run", DEADLINE, || async { app.count(&running).await == 1 }).await;
    let (status, took) = terminate(&mut worker).await;
    assert_eq!(status.code(), Some(showrunner_shared::process::EXIT_GRACE_EXCEEDED), "{status:?}");
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
    let mut next = role(&app, "job-worker", &[]);
    let done = format!(
        "SELECT count(*) FROM jobs WHERE id = '{id}' AND status = 'succeeded' AND attempts = 2"
    );
    wait_until("the cut-off job to run again and succeed", DEADLINE, || async {
        app.count(&done).await == 1
    })
    .await;
    let (status, _) = terminate(&mut next).await;
    assert!(status.success(), "{status:?}");
    app.stop().await;
}
