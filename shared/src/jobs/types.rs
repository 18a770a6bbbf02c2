//! Declared job types: each type's name, its payload as a Rust type, and the payload's JSON
//! Schema. The api refuses a `POST /jobs` whose type is not declared (422 on `type`, listing the
//! known ones) or whose payload does not fit (422 naming the field, `payload.url`), and serves
//! the declarations as the OpenAPI union of `POST /jobs`; the job worker's handlers run the same
//! payload types (`workers::jobs::JobHandler::Job`). The declarations live here, below both, so
//! the api never depends on the workers.
//!
//! A deployment adds a type with one [`JobType`] impl (name, payload, schema) and one handler,
//! then registers it on both sides: `JobTypes::builtin().with::<T>()` for the api
//! (`showrunner_api::run_with`), `Registry::builtin().with(handler)` for the job worker (whose
//! `Registry::job_types()` gives the api's list when one binary builds both).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

/// Why a payload does not fit its type: the field (a path inside the payload, `url`,
/// `body.items[2]`; empty for the payload itself) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.qualified())]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

impl PayloadError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The field as the request names it: `payload` or `payload.<field>`.
    pub fn qualified(&self) -> String {
        if self.field.is_empty() { "payload".into() } else { format!("payload.{}", self.field) }
    }
}

/// One job type: what `POST /jobs` accepts under `type = NAME`.
pub trait JobType: Send + Sync + 'static {
    /// The `type` of `POST /jobs`: 1 to 100 of `a-z 0-9 . _ -`.
    const NAME: &'static str;
    /// One line for the OpenAPI document.
    const SUMMARY: &'static str;
    type Payload: DeserializeOwned + Send + 'static;

    /// The payload's JSON Schema (what the OpenAPI document shows for this type).
    fn payload_schema() -> Value;

    /// Checks serde cannot express (a URL's scheme...). The worker runs them too.
    fn check(_payload: &Self::Payload) -> Result<(), PayloadError> {
        Ok(())
    }
}

/// Decodes and checks `payload` as `T`'s: the error names the field.
pub fn parse<T: JobType>(payload: &Value) -> Result<T::Payload, PayloadError> {
    // serde would also read a struct from an array of its fields; a payload declared as an
    // object must be one.
    if !payload.is_object() && T::payload_schema()["type"] == "object" {
        return Err(PayloadError::new("", "must be a JSON object"));
    }
    let decoded: T::Payload = serde_path_to_error::deserialize(payload).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        // serde reports a missing field at its parent's path, naming it in the message.
        let named = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name,
            (parent, Some(name)) => format!("{parent}.{name}"),
            (".", None) => String::new(),
            (_, None) => path,
        };
        PayloadError::new(field, message)
    })?;
    T::check(&decoded)?;
    Ok(decoded)
}

/// Why `POST /jobs` refuses a type and payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown job type {given:?}; known types: {}", known.join(", "))]
    UnknownType { given: String, known: Vec<&'static str> },
    #[error("{0}")]
    Payload(PayloadError),
}

#[derive(Clone, Copy)]
struct Declared {
    summary: &'static str,
    check: fn(&Value) -> Result<(), PayloadError>,
    schema: fn() -> Value,
}

/// Every job type a deployment accepts, by name.
#[derive(Clone, Default)]
pub struct JobTypes {
    types: BTreeMap<&'static str, Declared>,
}

impl fmt::Debug for JobTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobTypes").field("types", &self.names()).finish()
    }
}

impl JobTypes {
    /// The job types every deployment has.
    pub fn builtin() -> Self {
        Self::default()
            .with::<Webhook>()
            .with::<EpisodeExport>()
            .with::<FilePurge>()
            .with::<CompositionExport>()
    }

    /// Adds (or replaces) the declaration of `T::NAME`.
    pub fn with<T: JobType>(mut self) -> Self {
        self.types.insert(
            T::NAME,
            Declared {
                summary: T::SUMMARY,
                check: |payload| parse::<T>(payload).map(|_| ()),
                schema: T::payload_schema,
            },
        );
        self
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Does `payload` fit the type `name`?
    pub fn check(&self, name: &str, payload: &Value) -> Result<(), Refusal> {
        let declared = self
            .types
            .get(name)
            .ok_or_else(|| Refusal::UnknownType { given: name.to_string(), known: self.names() })?;
        (declared.check)(payload).map_err(Refusal::Payload)
    }

    /// The request body of `POST /jobs` as an OpenAPI 3.1 schema: one variant per type, tagged
    /// by `type`, each with its payload's schema.
    pub fn create_schema(&self) -> Value {
        let variants: Vec<Value> = self
            .types
            .iter()
            .map(|(name, declared)| {
                json!({
                    "title": name,
                    "description": declared.summary,
                    "type": "object",
                    "required": ["type", "payload"],
                    "additionalProperties": false,
                    "properties": {
                        "type": { "const": name },
                        "payload": (declared.schema)(),
                        "maxAttempts": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": crate::config::MAX_JOB_ATTEMPTS,
                            "description": "Absent or null: `jobs.max_attempts`."
                        },
                        "episodeId": { "type": ["string", "null"], "format": "uuid" },
                        "runAt": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "Not to run before this instant (RFC 3339, at most \
                                `jobs.max_schedule_days` ahead): the job is `scheduled` until \
                                then. Absent, null or past: it runs now."
                        }
                    }
                })
            })
            .collect();
        json!({
            "description": "A job request: `type` names one of the declared job types, \
                `payload` must fit that type's schema (422 naming `type`, or the payload's \
                field as `payload.<field>`, otherwise).",
            "oneOf": variants,
            "discriminator": { "propertyName": "type" }
        })
    }
}

/// `webhook`: POST `body` as JSON to `url` (run by the job worker's `webhook` handler).
pub struct Webhook;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookPayload {
    pub url: String,
    #[serde(default)]
    pub body: Value,
}

/// The syntax a webhook URL (and every redirect it follows) must have: `http://` (this build
/// has no TLS stack), a host, no credentials. Where it may lead is `egress::Policy`'s business.
pub fn webhook_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("invalid webhook url: {e}"))?;
    if url.scheme() != "http" {
        return Err("webhook url must be http:// (this build has no TLS support)".into());
    }
    if url.host().is_none() {
        return Err("webhook url has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("webhook url must not carry credentials".into());
    }
    Ok(url)
}

impl JobType for Webhook {
    const NAME: &'static str = "webhook";
    const SUMMARY: &'static str = "POST `body` as JSON to `url`; 2xx succeeds, 5xx, 408, 429 \
        and network errors are retried. Where it may connect is `jobs.webhook_allow_hosts` and \
        `jobs.webhook_allow_private`.";
    type Payload = WebhookPayload;

    fn payload_schema() -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^http://",
                    "description": "An `http://` URL with a host and no credentials."
                },
                "body": { "description": "Any JSON; null when absent." }
            }
        })
    }

    fn check(payload: &WebhookPayload) -> Result<(), PayloadError> {
        webhook_url(&payload.url).map(|_| ()).map_err(|message| PayloadError::new("url", message))
    }
}

/// `episode.export`: writes an episode and its activity history as one JSON document.
pub struct EpisodeExport;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportPayload {
    pub episode_id: Uuid,
}

impl JobType for EpisodeExport {
    const NAME: &'static str = "episode.export";
    const SUMMARY: &'static str = "Write the episode and its activity history as a JSON file \
        of the episode (`file_uploaded`; the result names the file); reports progress.";
    type Payload = ExportPayload;

    fn payload_schema() -> Value {
        json!({
            "type": "object",
            "required": ["episodeId"],
            "additionalProperties": false,
            "properties": { "episodeId": { "type": "string", "format": "uuid" } }
        })
    }
}

/// `file.purge`: removes a file's object from storage once no file row (and no pending
/// command) names it. The command worker queues one for every permanently deleted file and
/// every file record it refused; one that finds the file still named removes nothing.
pub struct FilePurge;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilePurgePayload {
    pub episode_id: Uuid,
    pub file_id: Uuid,
}

impl JobType for FilePurge {
    const NAME: &'static str = crate::resource::file::PURGE_JOB;
    const SUMMARY: &'static str = "Remove a file's bytes from storage once no file row names \
        them (queued by permanent deletes; a file still named is left alone).";
    type Payload = FilePurgePayload;

    fn payload_schema() -> Value {
        json!({
            "type": "object",
            "required": ["episodeId", "fileId"],
            "additionalProperties": false,
            "properties": {
                "episodeId": { "type": "string", "format": "uuid" },
                "fileId": { "type": "string", "format": "uuid" }
            }
        })
    }
}

/// `composition.export`: writes a composition as OpenTimelineIO JSON (`.otio`), a file of its
/// episode.
pub struct CompositionExport;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompositionExportPayload {
    pub episode_id: Uuid,
    pub composition_id: Uuid,
}

impl JobType for CompositionExport {
    const NAME: &'static str = "composition.export";
    const SUMMARY: &'static str = "Write the composition as OpenTimelineIO JSON (a Timeline of \
        Tracks of Clips referring to the files' download URLs) as a `.otio` file of the \
        episode (`file_uploaded`; the result names the file).";
    type Payload = CompositionExportPayload;

    fn payload_schema() -> Value {
        json!({
            "type": "object",
            "required": ["episodeId", "compositionId"],
            "additionalProperties": false,
            "properties": {
                "episodeId": { "type": "string", "format": "uuid" },
                "compositionId": { "type": "string", "format": "uuid" }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(name: &str, payload: Value) -> Option<Refusal> {
        JobTypes::builtin().check(name, &payload).err()
    }

    #[test]
    fn an_unknown_type_lists_the_known_ones() {
        let Some(Refusal::UnknownType { given, known }) = refusal("teleport", json!({})) else {
            panic!("teleport is not a type");
        };
        assert_eq!(given, "teleport");
        assert_eq!(known, ["composition.export", "episode.export", "file.purge", "webhook"]);
    }

    #[test]
    fn a_payload_error_names_the_field() {
        for (name, payload, field) in [
            ("webhook", json!({}), "payload.url"),
            ("webhook", json!({"url": 5}), "payload.url"),
            ("webhook", json!({"url": "ftp://example.com/"}), "payload.url"),
            ("webhook", json!({"url": "http://u:p@example.com/"}), "payload.url"),
            ("webhook", json!({"url": "http://example.com/", "extra": 1}), "payload.extra"),
            ("webhook", json!([1]), "payload"),
            ("webhook", json!(null), "payload"),
            ("episode.export", json!({"episodeId": "nope"}), "payload.episodeId"),
        ] {
            match refusal(name, payload.clone()) {
                Some(Refusal::Payload(error)) => assert_eq!(error.qualified(), field, "{payload}"),
                other => panic!("{name} {payload}: {other:?}"),
            }
        }
        assert_eq!(refusal("webhook", json!({"url": "http://example.com/h", "body": [1]})), None);
        let id = Uuid::from_u128(7);
        assert_eq!(refusal("episode.export", json!({ "episodeId": id })), None);
    }

    #[test]
    fn the_create_schema_is_a_union_tagged_by_type() {
        let schema = JobTypes::builtin().create_schema();
        assert_eq!(schema["discriminator"]["propertyName"], "type");
        let tags: Vec<&Value> = schema["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| &v["properties"]["type"]["const"])
            .collect();
        assert_eq!(
            tags,
            [
                &json!("composition.export"),
                &json!("episode.export"),
                &json!("file.purge"),
                &json!("webhook")
            ]
        );
        assert_eq!(schema["oneOf"][3]["properties"]["payload"]["required"], json!(["url"]));
    }
}
