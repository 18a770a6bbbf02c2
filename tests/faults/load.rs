//! The load: REST clients that create, update and delete episodes (retrying with the same
//! `Idempotency-Key` until the api accepts), a job client, and a WebSocket client that
//! disconnects and resumes. Each keeps what it was told.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// An accepted episode command.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub command_id: Uuid,
    pub kind: &'static str,
    pub episode_id: Uuid,
    /// The title the write set (a create's, an update's); `None` for a delete.
    pub title: Option<String>,
}

#[derive(Default, Debug)]
pub struct ClientReport {
    pub accepted: Vec<Accepted>,
    pub attempts: u64,
    pub retries: u64,
    /// Answers that must not happen (422 on a retry, 409, 404...): each is a violation.
    pub unexpected: Vec<String>,
    /// Commands never accepted before the end (the api kept failing): not counted as accepted.
    pub abandoned: u64,
}

impl ClientReport {
    /// Records the accepted `kind` write on `episode_id` that `answer` (a 202 body) names.
    fn accept(
        &mut self,
        answer: &Value,
        kind: &'static str,
        episode_id: Uuid,
        title: Option<String>,
    ) {
        match uuid_at(answer, &["commandId"]) {
            Some(command_id) => {
                self.accepted.push(Accepted { command_id, kind, episode_id, title })
            }
            None => self.unexpected.push(format!("{kind} answered without commandId: {answer}")),
        }
    }
}

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        let http = showrunner_shared::tls::client_builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_else(|_| showrunner_shared::tls::client());
        Self { base, http }
    }
}

/// Sends one write until it is accepted; `None` if `give_up` came first.
#[allow(clippy::too_many_arguments)]
async fn write(
    api: &Api,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    report: &mut ClientReport,
    give_up: &AtomicBool,
    rng: &mut fastrand::Rng,
) -> Option<Value> {
    let key = Uuid::now_v7().to_string();
    loop {
        report.attempts += 1;
        let mut request = api
            .http
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(token)
            .header("Idempotency-Key", &key);
        if let Some(body) = &body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                return response.json::<Value>().await.ok().or(Some(Value::Null));
            }
            Ok(response)
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    || response.status().is_server_error() => {}
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                report.unexpected.push(format!("{method} {path} (key {key}): {status} {text}"));
                return None;
            }
            Err(_) => {}
        }
        if give_up.load(Ordering::Relaxed) {
            report.abandoned += 1;
            return None;
        }
        report.retries += 1;
        tokio::time::sleep(Duration::from_millis(200 + rng.u64(0..400))).await;
    }
}

/// One user's episode traffic until `stop`; then it finishes the write in hand (until `give_up`).
/// Its choices come from `seed`.
pub async fn episode_client(
    api: Arc<Api>,
    token: String,
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
    seed: u64,
) -> ClientReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut report = ClientReport::default();
    let mut live: Vec<Uuid> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rng.f64();
        if live.len() < 3 || roll < 0.35 {
            let title = format!("ep {n}");
            let body = json!({"title": title, "categories": ["faults"]});
            let Some(answer) = write(
                &api,
                &token,
                reqwest::Method::POST,
                "/episodes",
                Some(body),
                &mut report,
                &give_up,
                &mut rng,
            )
            .await
            else {
                continue;
            };
            let (Some(id), Some(command)) =
                (uuid_at(&answer, &["data", "id"]), uuid_at(&answer, &["commandId"]))
            else {
                report.unexpected.push(format!("create answered without ids: {answer}"));
                continue;
            };
            live.push(id);
            report.accepted.push(Accepted {
                command_id: command,
                kind: "create",
                episode_id: id,
                title: Some(title),
            });
        } else if roll < 0.9 {
            let id = live[rng.usize(0..live.len())];
            let title = format!("ep {n} updated");
            let body = json!({"title": title});
            let path = format!("/episodes/{id}");
            let Some(answer) = write(
                &api,
                &token,
                reqwest::Method::PATCH,
                &path,
                Some(body),
                &mut report,
                &give_up,
                &mut rng,
            )
            .await
            else {
                continue;
            };
            report.accept(&answer, "update", id, Some(title));
        } else {
            let id = live.swap_remove(rng.usize(0..live.len()));
            let path = format!("/episodes/{id}");
            let Some(answer) = write(
                &api,
                &token,
                reqwest::Method::DELETE,
                &path,
                None,
                &mut report,
                &give_up,
                &mut rng,
            )
            .await
            else {
                continue;
            };
            report.accept(&answer, "delete", id, None);
        }
    }
    report
}

fn uuid_at(value: &Value, path: &[&str]) -> Option<Uuid> {
    path.iter().try_fold(value, |v, k| v.get(k))?.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// What a job was meant to end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Succeeded,
    Failed,
}

#[derive(Default, Debug)]
pub struct JobReport {
    pub accepted: HashMap<Uuid, JobEnd>,
    /// POSTs whose answer was lost or refused (no `Idempotency-Key` on jobs yet: not retried).
    pub not_accepted: u64,
}

/// Submits a job every `every` until `stop`: flaky ones that succeed after failures, ones that
/// fail for good (permanently, or by running out of attempts), and slow ones.
pub async fn job_client(
    api: Arc<Api>,
    token: String,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> JobReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut report = JobReport::default();
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let (body, end) = match rng.u8(0..10) {
            0..=4 => (
                json!({"type": "test.flaky", "payload": {"failures": rng.u8(0..3)}, "maxAttempts": 6}),
                JobEnd::Succeeded,
            ),
            5 => (json!({"type": "test.permanent", "payload": {}}), JobEnd::Failed),
            6 => (
                json!({"type": "test.flaky", "payload": {"failures": 10}, "maxAttempts": 2}),
                JobEnd::Failed,
            ),
            _ => (
                json!({"type": "test.sleep", "payload": {"firstAttemptMs": 1500}, "maxAttempts": 6}),
                JobEnd::Succeeded,
            ),
        };
        let answer = api
            .http
            .post(format!("{}/jobs", api.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                match r.json::<Value>().await.ok().and_then(|v| uuid_at(&v, &["data", "id"])) {
                    Some(id) => {
                        report.accepted.insert(id, end);
                    }
                    None => report.not_accepted += 1,
                }
            }
            _ => report.not_accepted += 1,
        }
    }
    report
}

#[derive(Default, Debug)]
pub struct WsReport {
    /// Event ids in the order received.
    pub received: Vec<Uuid>,
    pub connects: u64,
    pub resumes: u64,
    /// Error frames (`resume_unavailable`, ...) and close codes other than 1000/1001.
    pub errors: Vec<String>,
    /// Resumes answered `unavailable` (the event log could not be read: PostgreSQL was down),
    /// which the client retries on a new connection, as the error frame asks.
    pub retried: u64,
}

/// What the client does with an error frame: `true` to reconnect and resume again.
fn retry_after(frame: &Value, report: &mut WsReport) -> bool {
    if frame["code"] == "unavailable" {
        report.retried += 1;
        return true;
    }
    report.errors.push(frame.to_string());
    false
}

pub const WS_TOPICS: [&str; 3] = ["episode.*.created", "episode.*.updated", "episode.*.deleted"];

/// Watches every episode event; drops its connection every few seconds (and loses it when the
/// api restarts) and resumes from the last event it saw. Runs until `stop`.
pub async fn ws_client(
    ws_base: String,
    token: String,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> WsReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut report = WsReport::default();
    let mut last: Option<Uuid> = None;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{ws_base}?token={token}");
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        report.connects += 1;
        let hello = match last {
            Some(id) => {
                report.resumes += 1;
                json!({"op": "resume", "lastEventId": id, "topics": WS_TOPICS})
            }
            None => json!({"op": "subscribe", "topics": WS_TOPICS}),
        };
        if socket.send(Message::text(hello.to_string())).await.is_err() {
            continue;
        }
        let hold = Duration::from_millis(3000 + rng.u64(0..5000));
        let until = tokio::time::Instant::now() + hold;
        loop {
            let frame = tokio::select! {
                f = socket.next() => f,
                () = tokio::time::sleep_until(until) => break,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    match v["op"].as_str() {
                        Some("event") => {
                            if let Some(id) = uuid_at(&v, &["id"]) {
                                report.received.push(id);
                                last = Some(id);
                            }
                        }
                        Some("error") if retry_after(&v, &mut report) => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            break;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame {
                        let code = u16::from(f.code);
                        if code != 1000 && code != 1001 {
                            report.errors.push(format!("closed with {code}: {}", f.reason));
                        }
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let _ = socket.close(None).await;
    }
    report
}

/// After the load: one last resume that collects what the client has not seen yet, until
/// `quiet` passes without a new event.
pub async fn ws_catch_up(ws_base: String, token: String, report: &mut WsReport, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let url = format!("{ws_base}?token={token}");
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        report.connects += 1;
        let hello = match report.received.last() {
            Some(id) => {
                report.resumes += 1;
                json!({"op": "resume", "lastEventId": id, "topics": WS_TOPICS})
            }
            None => json!({"op": "subscribe", "topics": WS_TOPICS}),
        };
        if socket.send(Message::text(hello.to_string())).await.is_err() {
            continue;
        }
        loop {
            match tokio::time::timeout(quiet, socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    match v["op"].as_str() {
                        Some("event") => {
                            if let Some(id) = uuid_at(&v, &["id"]) {
                                report.received.push(id);
                            }
                        }
                        Some("error") if retry_after(&v, report) => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            break;
                        }
                        _ => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => break,
            }
        }
    }
}
