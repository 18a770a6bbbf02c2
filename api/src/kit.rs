//! The frontend kit's side of the api: the live console at `/` (a page on the TypeScript
//! client, `api/console/`, whose `client/` is compiled from `clients/typescript` by its
//! `npm run generate`) and the AsyncAPI document of every message at `/api/v1/asyncapi.json`
//! (the contract `shared/tests/asyncapi.rs` ties to the Rust types). Everything here is
//! embedded in the binary, so a deployment serves it with no file beside it and no Node.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// The AsyncAPI 3 document: events, commands, job requests and WebSocket frames.
pub const ASYNCAPI: &str = include_str!("../asyncapi.json");

const JS: &str = "text/javascript; charset=utf-8";

/// The console's files: (path under `/console/`, media type, content).
const CONSOLE: &[(&str, &str, &str)] = &[
    ("console.js", JS, include_str!("../console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
    ("client/index.js", JS, include_str!("../console/client/index.js")),
    ("client/errors.js", JS, include_str!("../console/client/errors.js")),
    ("client/rest.js", JS, include_str!("../console/client/rest.js")),
    ("client/realtime.js", JS, include_str!("../console/client/realtime.js")),
    ("client/generated/messages.js", JS, include_str!("../console/client/generated/messages.js")),
];

const INDEX: &str = include_str!("../console/index.html");

/// Routes under their full paths (merged at the top, outside the per-user rate limit, like the
/// OpenAPI document: they need no token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/console/{*file}", get(console_file))
        .route(
            "/api/v1/asyncapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], ASYNCAPI) }),
        )
}

async fn console_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    CONSOLE
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, media_type, text)| page(media_type, text))
        .ok_or_else(|| ApiError::NotFound("no such console file".into()))
}

/// A console asset: revalidated on every load, so a new binary's console is picked up at once;
/// it runs only its own scripts and talks only to this origin.
fn page(media_type: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod fields;

/// `api/openapi.json` against the code: every route the router declares, with its methods,
/// is documented and every documented one exists; every value of the Rust enums that travel in
/// REST bodies is in the document's enum and nothing else; every problem type the api answers
/// is in `Problem.type`. (Routes are read from the router's source: axum cannot list them.)
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use axum::response::IntoResponse;
    use serde_json::Value;

    use crate::error::ApiError;

    const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "any"];

    /// Paths served outside the OpenAPI document, and where they are described instead.
    const ELSEWHERE: &[(&str, &str)] = &[
        ("/ws", "the WebSocket: api/asyncapi.json's websocket channel"),
        ("/asyncapi.json", "the AsyncAPI document itself"),
        ("/", "the console's page"),
        ("/console/{*file}", "the console's scripts"),
    ];

    fn crate_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    pub(super) fn document(name: &str) -> Value {
        let text = std::fs::read_to_string(crate_dir().join(name)).expect("readable");
        serde_json::from_str(&text).expect("JSON")
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `(path under /api/v1, methods)` of every `.route(` in the api's source.
    fn declared_routes() -> BTreeMap<String, BTreeSet<String>> {
        let mut files = Vec::new();
        sources(&crate_dir().join("src"), &mut files);
        let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            // Test modules (this one names `.route(` itself) declare no routes.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            // Comments could name a method; strip them (the router code has no `//` strings).
            let code: String = text
                .lines()
                .map(|l| l.find("//").map_or(l, |i| &l[..i]))
                .collect::<Vec<_>>()
                .join("\n");
            let mut rest = code.as_str();
            while let Some(at) = rest.find(".route(") {
                let call = &rest[at + ".route(".len()..];
                // The call's text, up to its closing parenthesis.
                let mut depth = 1;
                let end = call
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(call.len(), |(i, _)| i);
                let args = &call[..end];
                let path = args.split('"').nth(1).expect("a route path literal");
                let path = path.strip_prefix("/api/v1").unwrap_or(path).to_string();
                let methods = routes.entry(path).or_default();
                for name in METHODS {
                    let call = format!("{name}(");
                    let called = args.match_indices(&call).any(|(i, _)| {
                        let before = args[..i].chars().next_back();
                        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                    if called {
                        methods.insert(name.to_string());
                    }
                }
                rest = &call[end..];
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_with_its_methods_and_nothing_else() {
        let doc = document("openapi.json");
        let paths = doc["paths"].as_object().expect("paths");
        let documented: BTreeMap<String, BTreeSet<String>> = paths
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .expect("a path item")
                    .keys()
                    .filter(|m| METHODS.contains(&m.as_str()))
                    .cloned()
                    .collect();
                (path.clone(), methods)
            })
            .collect();
        let mut declared = declared_routes();
        assert!(declared.len() >= 20, "found only {} routes: {declared:?}", declared.len());
        for (path, why) in ELSEWHERE {
            assert!(declared.remove(*path).is_some(), "{path} ({why}) is no longer routed");
        }
        assert_eq!(declared, documented, "the router's routes (left) and api/openapi.json's");
    }

    /// The `enum` at `pointer` in `doc`.
    fn listed(doc: &Value, pointer: &str) -> BTreeSet<String> {
        doc.pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("an enum at {pointer}"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect()
    }

    fn wire<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
        values
            .into_iter()
            .map(|v| serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)))
            .map(|v| v.expect("serializes as a string"))
            .collect()
    }

    #[test]
    fn every_wire_enum_value_is_documented_and_nothing_else() {
        use sea_orm::Iterable;
        use showrunner_shared::contracts::DeleteType;
        use showrunner_shared::domain::EpisodeStatus;
        use showrunner_shared::jobs::JobStatus;
        use showrunner_shared::resource::composition::TrackKind;
        use showrunner_shared::resource::{CommandStatus, ResourceType};

        let doc = document("openapi.json");
        let s = "/components/schemas";
        assert_eq!(listed(&doc, &format!("{s}/EpisodeStatus/enum")), wire(EpisodeStatus::ALL));
        assert_eq!(listed(&doc, &format!("{s}/JobStatus/enum")), wire(JobStatus::ALL));
        assert_eq!(
            listed(&doc, &format!("{s}/Command/properties/status/enum")),
            wire(CommandStatus::ALL)
        );
        assert_eq!(
            listed(&doc, &format!("{s}/Command/properties/resourceType/enum")),
            wire(ResourceType::iter())
        );
        assert_eq!(
            listed(&doc, &format!("{s}/TrackKind/enum")),
            wire([TrackKind::Video, TrackKind::Audio])
        );
        assert_eq!(
            listed(&doc, &format!("{s}/DeletePreview/properties/deleteType/enum")),
            wire([DeleteType::Soft, DeleteType::Permanent])
        );
        // Command kinds: the AsyncAPI document's command types, which shared/tests/asyncapi.rs
        // ties to `Command`.
        let asyncapi = document("asyncapi.json");
        let kinds: BTreeSet<String> = asyncapi["channels"]["commands"]["messages"]
            .as_object()
            .expect("the command messages")
            .keys()
            .cloned()
            .collect();
        assert_eq!(listed(&doc, &format!("{s}/Command/properties/kind/enum")), kinds);
    }

    /// Every string literal right after `marker` in the non-test code of `folder`.
    fn literals_after(folder: &str, marker: &str) -> BTreeSet<String> {
        let mut files = Vec::new();
        sources(&crate_dir().join(folder), &mut files);
        let mut found = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (at, _) in code.match_indices(marker) {
                let rest = code[at + marker.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    found.insert(literal.to_string());
                }
            }
        }
        found
    }

    /// The `op` consts of the frames in the `oneOf` of `schema` (nested `oneOf`s followed).
    fn frame_ops(doc: &Value, schema: &str) -> BTreeSet<String> {
        let mut ops = BTreeSet::new();
        let mut pending = vec![schema.to_string()];
        while let Some(name) = pending.pop() {
            let s = &doc["components"]["schemas"][&name];
            if let Some(alternatives) = s["oneOf"].as_array() {
                for r in alternatives {
                    let target = r["$ref"].as_str().expect("a $ref");
                    pending.push(target.rsplit('/').next().unwrap_or_default().to_string());
                }
            } else {
                ops.insert(s["properties"]["op"]["const"].as_str().expect("an op").to_string());
            }
        }
        ops
    }

    /// The WebSocket frames of `api/asyncapi.json` against the relay's code: the requests it
    /// parses, the ops it answers with and the error codes it sends.
    #[test]
    fn the_websocket_frames_match_the_relay() {
        let doc = document("asyncapi.json");
        let server_ops = literals_after("src/relay", "\"op\":");
        assert_eq!(server_ops, frame_ops(&doc, "ServerFrame"), "ops the relay sends");
        let codes = literals_after("src/relay", "error(");
        assert_eq!(codes, listed(&doc, "/components/schemas/ErrorFrame/properties/code/enum"));
        // The requests: the variants of `Request`, lowercased (its serde `rename_all`).
        let socket =
            std::fs::read_to_string(crate_dir().join("src/relay/socket.rs")).expect("read");
        let body = socket.split("enum Request {").nth(1).expect("enum Request");
        let body = body.split("\n}").next().unwrap_or_default();
        let requests: BTreeSet<String> = body
            .lines()
            .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
            .filter_map(|l| l.trim().split(|c: char| !c.is_ascii_alphanumeric()).next())
            .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(str::to_lowercase)
            .collect();
        assert_eq!(requests, frame_ops(&doc, "ClientFrame"), "requests the relay parses");
        // An event frame's fields, as the relay writes one.
        use showrunner_shared::contracts::{CommandRejected, EventEnvelope};
        let envelope = EventEnvelope {
            id: uuid::Uuid::from_u128(1),
            version: 1,
            occurred_at: chrono::Utc::now(),
            actor: None,
            correlation_id: None,
            causation_id: None,
            event: CommandRejected { command_id: uuid::Uuid::from_u128(2), reason: "r".into() }
                .into(),
        };
        let frame: Value = serde_json::from_str(&crate::relay::frame_of(
            &envelope,
            "user.x.command",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ))
        .expect("JSON");
        let fields: BTreeSet<String> =
            frame.as_object().expect("an object").keys().cloned().collect();
        let schema = &doc["components"]["schemas"]["CommandRejectedFrame"];
        let documented: BTreeSet<String> =
            schema["properties"].as_object().expect("properties").keys().cloned().collect();
        assert_eq!(fields, documented, "an event frame's fields");
        assert_eq!(frame["event"], schema["properties"]["event"]["const"]);
        assert_eq!(frame["traceId"], "0af7651916cd43dd8448eb211c80319c");
    }

    #[tokio::test]
    async fn every_problem_type_is_documented() {
        let doc = document("openapi.json");
        let types = listed(&doc, "/components/schemas/Problem/properties/type/enum");
        let text = || "x".to_string();
        let errors = vec![
            ApiError::Unauthorized(text()),
            ApiError::Forbidden(text()),
            ApiError::NotFound(text()),
            ApiError::BadRequest { detail: text(), errors: vec![] },
            ApiError::Validation { detail: text(), errors: vec![] },
            ApiError::Conflict(text()),
            ApiError::Gone(text()),
            ApiError::PreconditionFailed(text()),
            ApiError::UnsupportedMediaType(text()),
            ApiError::PayloadTooLarge(text()),
            ApiError::RequestTimeout(text()),
            ApiError::RangeNotSatisfiable { detail: text(), size: 1 },
            ApiError::MethodNotAllowed(text()),
            ApiError::TooManyRequests { detail: text(), retry_after_secs: Some(1) },
            ApiError::Unavailable { detail: text(), retry_after_secs: 1 },
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        let mut answered = BTreeSet::new();
        for error in errors {
            let response = error.into_response();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("a body");
            let problem: Value = serde_json::from_slice(&body).expect("problem+json");
            assert_eq!(problem["status"], status);
            answered.insert(problem["type"].as_str().expect("a type").to_string());
        }
        assert_eq!(answered, types, "the problem types the api answers and Problem.type's");
    }
}
