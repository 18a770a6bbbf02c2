//! `api/asyncapi.json` against the Rust contracts: every event name, routing key and command
//! type of this build appears in it, and nothing else does; and every pinned wire sample
//! (`snapshots/wire__*.snap`, which `tests/wire.rs` proves are what the Rust types write) fits
//! the document's JSON Schema of its message, field by field. The schemas the document shares
//! with `api/openapi.json` (Episode, Composition, File, ...) must be equal there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Map, Value};
use showrunner_shared::contracts::Event;
use showrunner_shared::live;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).expect("readable");
    serde_json::from_str(&text).expect("JSON")
}

/// The pinned samples: (name, routing key if any, JSON), by kind (`event`, `command`, `job`).
fn samples(kind: &str) -> Vec<(String, Option<String>, Value)> {
    let dir = root().join("shared/tests/snapshots");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("snapshots") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let Some(rest) = name.strip_prefix(&format!("wire__{kind}_")) else { continue };
        let rest = rest.trim_end_matches(".snap").to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        // insta's header, `---`, then the body.
        let body = text.splitn(3, "---\n").nth(2).expect("an insta snapshot");
        let (key, json) = match body.strip_prefix("routing key: ") {
            Some(b) => {
                let (key, json) = b.split_once('\n').expect("a key line");
                (Some(key.to_string()), json)
            }
            None => (None, body),
        };
        out.push((rest, key, serde_json::from_str(json).expect("a JSON sample")));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A JSON Schema checker for the keywords the document uses: `$ref` (local), `type`, `const`,
/// `enum`, `properties`, `required`, `additionalProperties: false`, `items`, `allOf`, `anyOf`,
/// `oneOf`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern` (only `^[0-9a-f]{64}$`),
/// `format` `uuid` and `date-time`. Returns the first mismatch, with its JSON path.
struct Checker<'a> {
    doc: &'a Value,
}

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("a local $ref");
                self.resolve(self.doc.pointer(pointer).unwrap_or_else(|| panic!("{r} resolves")))
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else { return Ok(()) };
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for part in all {
                self.check(part, value, at)?;
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(any) = s.get(key).and_then(Value::as_array) {
                let fits = any.iter().filter(|part| self.check(part, value, at).is_ok()).count();
                let ok = if key == "oneOf" { fits == 1 } else { fits >= 1 };
                if !ok {
                    return Err(format!("{at}: {value} fits {fits} of the {key} alternatives"));
                }
            }
        }
        if let Some(c) = s.get("const")
            && c != value
        {
            return Err(format!("{at}: {value} is not the const {c}"));
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {e:?}"));
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            if !types.iter().any(|t| type_fits(t, value)) {
                return Err(format!("{at}: {value} is not of type {t}"));
            }
        }
        if let Some(n) = value.as_f64()
            && (s.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m)
                || s.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m))
        {
            return Err(format!("{at}: {n} out of range"));
        }
        if let Some(text) = value.as_str() {
            let len = text.chars().count() as u64;
            if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| len < m)
                || s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| len > m)
            {
                return Err(format!("{at}: {text:?} has a length out of range"));
            }
            let format_ok = match s.get("format").and_then(Value::as_str) {
                Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
                Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                _ => true,
            };
            if !format_ok {
                return Err(format!("{at}: {text:?} does not have its format"));
            }
            if s.get("pattern").and_then(Value::as_str) == Some("^[0-9a-f]{64}$")
                && !(text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!("{at}: {text:?} is not 64 hex digits"));
            }
        }
        if let Some(object) = value.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for key in s.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                if !object.contains_key(key) {
                    return Err(format!("{at}: required field {key:?} missing"));
                }
            }
            for (key, field) in object {
                match props.and_then(|p| p.get(key)) {
                    Some(sub) => self.check(sub, field, &format!("{at}.{key}"))?,
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: field {key:?} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (s.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

fn type_fits(t: &str, value: &Value) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// Channels of the broker, by id: (address, message names).
fn broker_channels(doc: &Value) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let channels = doc["channels"].as_object().expect("channels");
    channels
        .iter()
        .filter(|(id, _)| id.as_str() != "websocket")
        .map(|(id, c)| {
            let address = c["address"].as_str().expect("an address").to_string();
            let names = c["messages"].as_object().expect("messages").keys().cloned().collect();
            (id.clone(), (address, names))
        })
        .collect()
}

/// Whether `key` is `address` with every `{parameter}` filled in by one word.
fn fits_address(address: &str, key: &str) -> bool {
    let a: Vec<&str> = address.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    a.len() == k.len()
        && a.iter()
            .zip(&k)
            .all(|(a, k)| (a.starts_with('{') && a.ends_with('}') && !k.is_empty()) || a == k)
}

fn message<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["components"]["messages"].get(name).unwrap_or_else(|| panic!("message {name}"))
}

#[test]
fn every_event_of_this_build_is_in_the_document_and_nothing_else() {
    let doc = load("api/asyncapi.json");
    let channels = broker_channels(&doc);
    let in_doc: BTreeSet<String> = channels
        .iter()
        .filter(|(id, _)| !matches!(id.as_str(), "commands" | "jobs" | "live"))
        .flat_map(|(_, (_, names))| names.iter().cloned())
        .collect();
    let in_rust: BTreeSet<String> = Event::NAMES.iter().map(|n| n.to_string()).collect();
    assert_eq!(in_doc, in_rust, "event names: the document's against Event::NAMES");

    let checker = Checker { doc: &doc };
    let pinned = samples("event");
    let pinned_names: BTreeSet<&str> =
        pinned.iter().filter_map(|(_, _, json)| json["event"].as_str()).collect();
    assert_eq!(pinned_names, in_rust.iter().map(String::as_str).collect(), "a sample of each");
    let mut addresses_used = BTreeSet::new();
    for (file, key, json) in &pinned {
        let name = json["event"].as_str().expect("an event name");
        let key = key.as_deref().expect("an event sample has its routing key");
        // Its channel: the one address its routing key fits, which lists it.
        let fitting: Vec<_> =
            channels.iter().filter(|(_, (address, _))| fits_address(address, key)).collect();
        assert_eq!(fitting.len(), 1, "{file}: one channel fits {key}: {fitting:?}");
        let (id, (address, names)) = fitting[0];
        assert!(names.contains(name), "{file}: channel {id} ({address}) does not list {name}");
        addresses_used.insert(address.clone());
        let payload = &message(&doc, name)["payload"];
        checker.check(payload, json, name).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // No routing key in the document that no event uses.
    for (id, (address, _)) in
        channels.iter().filter(|(id, _)| !matches!(id.as_str(), "commands" | "jobs" | "live"))
    {
        assert!(addresses_used.contains(address), "channel {id} ({address}): no event has it");
    }
}

#[test]
fn every_command_type_is_in_the_document_and_nothing_else() {
    let doc = load("api/asyncapi.json");
    let channels = broker_channels(&doc);
    let (_, in_doc) = channels.get("commands").expect("the commands channel");
    let checker = Checker { doc: &doc };
    let mut in_rust = BTreeSet::new();
    for (file, _, json) in samples("command") {
        // Pinned samples are what the Rust types write; read back to be sure of the type.
        let envelope: showrunner_shared::contracts::CommandEnvelope =
            serde_json::from_value(json.clone()).expect("a command envelope");
        let kind = envelope.command.kind();
        in_rust.insert(kind.to_string());
        let payload = &message(&doc, kind)["payload"];
        checker.check(payload, &json, kind).unwrap_or_else(|e| panic!("{file}: {e}"));
        // And under the plain envelope too (its `command` is a oneOf of every type).
        checker
            .check(
                &serde_json::json!({"$ref": "#/components/schemas/CommandEnvelope"}),
                &json,
                kind,
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    assert_eq!(in_doc, &in_rust, "command types: the document's against the pinned samples");
    let schema_types: BTreeSet<String> = doc["components"]["schemas"]["AnyCommand"]["oneOf"]
        .as_array()
        .expect("AnyCommand is a oneOf")
        .iter()
        .map(|r| {
            checker.resolve(r)["properties"]["type"]["const"].as_str().expect("a const").into()
        })
        .collect();
    assert_eq!(schema_types, in_rust, "the AnyCommand schema's types");
}

#[test]
fn the_job_request_and_the_exchanges_match() {
    use showrunner_shared::broker::topology::{
        COMMANDS_EXCHANGE, EVENTS_EXCHANGE, JOBS_EXCHANGE, JOBS_KEY, LIVE_EXCHANGE,
    };
    let doc = load("api/asyncapi.json");
    let checker = Checker { doc: &doc };
    let jobs = samples("job");
    assert!(!jobs.is_empty());
    for (file, _, json) in jobs {
        let _: showrunner_shared::contracts::JobRequest =
            serde_json::from_value(json.clone()).expect("a job request");
        let payload = &message(&doc, "job_request")["payload"];
        checker.check(payload, &json, "job_request").unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let exchange = |id: &str| doc["channels"][id]["bindings"]["amqp"]["exchange"]["name"].clone();
    assert_eq!(exchange("commands"), COMMANDS_EXCHANGE);
    assert_eq!(exchange("jobs"), JOBS_EXCHANGE);
    assert_eq!(doc["channels"]["jobs"]["address"], JOBS_KEY);
    assert_eq!(exchange("live"), LIVE_EXCHANGE);
    assert_eq!(doc["channels"]["live"]["address"], live::BATCH_ROUTING_KEY);
    for (id, _) in broker_channels(&doc)
        .iter()
        .filter(|(id, _)| !matches!(id.as_str(), "commands" | "jobs" | "live"))
    {
        assert_eq!(exchange(id), EVENTS_EXCHANGE, "channel {id}");
    }
}

#[test]
fn the_shippers_batch_of_every_event_fits_the_live_channel() {
    let doc = load("api/asyncapi.json");
    let checker = Checker { doc: &doc };
    let pinned = samples("event");
    let bodies: Vec<(String, String)> = pinned
        .iter()
        .map(|(file, key, json)| {
            let key = key.clone().unwrap_or_else(|| panic!("{file}: no routing key"));
            (key, json.to_string())
        })
        .collect();
    let events = bodies.iter().enumerate().map(|(i, (key, body))| {
        (
            i as i64 + 1,
            key.as_str(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            body.as_str(),
        )
    });
    let batches = live::pack(events, 1 << 20);
    assert_eq!(batches.len(), 1);
    let batch: Value = serde_json::from_str(&batches[0].json).expect("a batch is JSON");
    assert_eq!(batch.as_array().map(Vec::len), Some(pinned.len()));
    let payload = &message(&doc, "event_batch")["payload"];
    checker.check(payload, &batch, "event_batch").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message(&doc, "event_batch")["bindings"]["amqp"]["messageType"], live::BATCH_TYPE);
}

#[test]
fn shared_schemas_equal_the_openapi_documents() {
    let asyncapi = load("api/asyncapi.json");
    let openapi = load("api/openapi.json");
    let ours = asyncapi["components"]["schemas"].as_object().expect("schemas");
    let theirs: &Map<String, Value> =
        openapi["components"]["schemas"].as_object().expect("schemas");
    let mut shared = 0;
    for (name, schema) in ours {
        // Notification differs on purpose: the event carries `userId`, the REST answer not.
        if name == "Notification" {
            continue;
        }
        if let Some(other) = theirs.get(name) {
            assert_eq!(schema, other, "schema {name} differs from api/openapi.json's");
            shared += 1;
        }
    }
    assert!(shared >= 10, "only {shared} schemas shared");
}
