//! `api/openapi.json`'s bodies against the Rust types that read and write them, field by field:
//! every JSON request and response body the document describes is mapped (in [`bodies`]) to
//! the Rust type the route deserializes or serializes, and the two are compared both ways (a
//! field only one of them has, required against optional, JSON types with `null`, enum values,
//! nested objects and arrays, closed request objects). The Rust side is the type's JSON Schema
//! from `schemars`, which follows serde's attributes (`rename`, `skip_serializing_if`,
//! `default`, `flatten`, `try_from`), in its serialize form for responses and its deserialize
//! form for requests. Every mismatch is printed at once.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;
use showrunner_shared::contracts::{Episode, EpisodeChanges, Viewer};
use showrunner_shared::resource::composition::{Composition, CompositionChanges};
use showrunner_shared::resource::file::File;

use crate::accept::{Deleting, EpisodeIds, ItemIds, Known, Written};
use crate::error::Problem;
use crate::routes::{Data, Page, activity, commands, compositions, episodes, health, jobs};
use crate::routes::{notifications, notifications::Count};

/// A response body's Rust schema (serialize form).
fn out<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// A request body's Rust schema (deserialize form).
fn input<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// A part of the document's body that another test proves instead: its facts are not compared.
#[derive(Clone, Copy)]
enum Exempt {
    /// The values of an enum (the node keeps its JSON type and required-ness).
    Values,
    /// The whole shape below (the node keeps only its required-ness).
    Shape,
}

/// One documented body and what the code has for it.
struct Body {
    /// `"POST /episodes request"`, `"GET /episodes 200"`.
    key: String,
    /// The Rust schemas: one type, or the alternatives the route may answer with.
    rust: Vec<Value>,
    /// (path below the body, e.g. `["payload"]`, what is exempt, which test proves it).
    exempt: Vec<(&'static [&'static str], Exempt, &'static str)>,
}

fn body(key: &str, rust: Vec<Value>) -> Body {
    Body { key: key.to_string(), rust, exempt: Vec::new() }
}

/// Every JSON body of `api/openapi.json`, by `"<METHOD> <path> <request|status>"`, with the
/// Rust type behind it. `application/problem+json` answers are all `error::Problem`.
fn bodies() -> Vec<Body> {
    // An update's 202 is the resource as it will be, or only its ids and the changes.
    let episode_known = out::<Written<Known<EpisodeIds, EpisodeChanges>>>;
    let composition_known = out::<Written<Known<ItemIds, CompositionChanges>>>;
    let mut all = vec![
        body("GET /episodes 200", vec![out::<Page<Episode>>()]),
        body("POST /episodes request", vec![input::<episodes::CreateBody>()]),
        body("POST /episodes 201", vec![out::<Written<Episode>>()]),
        body("POST /episodes 202", vec![out::<Written<Episode>>()]),
        body("GET /episodes/{id} 200", vec![out::<episodes::WithViewers>()]),
        body("PATCH /episodes/{id} request", vec![input::<EpisodeChanges>()]),
        body("PATCH /episodes/{id} 200", vec![out::<Written<Episode>>()]),
        body("PATCH /episodes/{id} 202", vec![out::<Written<Episode>>(), episode_known()]),
        body("DELETE /episodes/{id} 200", vec![out::<Written<Episode>>()]),
        body("DELETE /episodes/{id} 202", vec![out::<Written<Deleting<EpisodeIds>>>()]),
        body("GET /episodes/{id}/viewers 200", vec![out::<Data<Vec<Viewer>>>()]),
        body("GET /jobs 200", vec![out::<Page<jobs::JobView>>()]),
        body("GET /jobs/{id} 200", vec![out::<Data<jobs::JobView>>()]),
        body("POST /jobs 202", vec![out::<Data<jobs::JobView>>()]),
        body("POST /jobs/{id}/retry 202", vec![out::<Data<jobs::JobView>>()]),
        body("POST /jobs/{id}/cancel 200", vec![out::<Data<jobs::JobView>>()]),
        body("POST /jobs/{id}/cancel 202", vec![out::<Data<jobs::JobView>>()]),
        body("GET /activity 200", vec![out::<Page<activity::ActivityView>>()]),
        body("GET /notifications 200", vec![out::<Page<notifications::NotificationView>>()]),
        body("GET /notifications/unread-count 200", vec![out::<Count>()]),
        body("POST /notifications/read-all 200", vec![out::<Count>()]),
        body("GET /health 200", vec![out::<health::Liveness>()]),
        body("GET /ready 200", vec![out::<health::Readiness>()]),
        body("GET /ready 503", vec![out::<health::Readiness>()]),
        // The document itself: an object, whatever it holds.
        body("GET /openapi.json 200", vec![out::<serde_json::Map<String, Value>>()]),
        body("GET /episodes/{id}/compositions 200", vec![out::<Page<Composition>>()]),
        body("POST /episodes/{id}/compositions request", vec![input::<compositions::CreateBody>()]),
        body("POST /episodes/{id}/compositions 201", vec![out::<Written<Composition>>()]),
        body("POST /episodes/{id}/compositions 202", vec![out::<Written<Composition>>()]),
        body("GET /episodes/{id}/compositions/{cid} 200", vec![out::<Data<Composition>>()]),
        body(
            "PATCH /episodes/{id}/compositions/{cid} request",
            vec![input::<compositions::UpdateBody>()],
        ),
        body("PATCH /episodes/{id}/compositions/{cid} 200", vec![out::<Written<Composition>>()]),
        body(
            "PATCH /episodes/{id}/compositions/{cid} 202",
            vec![out::<Written<Composition>>(), composition_known()],
        ),
        body("DELETE /episodes/{id}/compositions/{cid} 200", vec![out::<Written<Composition>>()]),
        body(
            "DELETE /episodes/{id}/compositions/{cid} 202",
            vec![out::<Written<Deleting<ItemIds>>>()],
        ),
        body("GET /episodes/{id}/files 200", vec![out::<Page<File>>()]),
        body("POST /episodes/{id}/files 201", vec![out::<Written<File>>()]),
        body("POST /episodes/{id}/files 202", vec![out::<Written<File>>()]),
        body("GET /episodes/{id}/files/{fid} 200", vec![out::<Data<File>>()]),
        body("DELETE /episodes/{id}/files/{fid} 200", vec![out::<Written<File>>()]),
        body("DELETE /episodes/{id}/files/{fid} 202", vec![out::<Written<Deleting<ItemIds>>>()]),
    ];
    // A command's kind is its row's text; the kinds are the AsyncAPI document's command types.
    let mut command = body("GET /commands/{id} 200", vec![out::<commands::CommandView>()]);
    let kinds = "kit::tests::every_wire_enum_value_is_documented_and_nothing_else";
    command.exempt.push((&["kind"], Exempt::Values, kinds));
    all.push(command);
    let mut jobs = body("POST /jobs request", vec![input::<jobs::CreateBody>()]);
    let by_types = "routes::jobs::tests::the_openapi_file_shows_the_builtin_job_types";
    jobs.exempt.push((&["type"], Exempt::Values, by_types));
    jobs.exempt.push((&["payload"], Exempt::Shape, by_types));
    all.push(jobs);
    all
}

/// A schema reduced to what the wire shows: JSON types (with `null`), enum values, fields with
/// whether they are required, array items, and whether an object refuses unknown fields.
#[derive(Clone, Debug, Default)]
struct Node {
    any: bool,
    types: BTreeSet<String>,
    values: Option<BTreeSet<String>>,
    fields: BTreeMap<String, (bool, Node)>,
    closed: bool,
    items: Option<Box<Node>>,
}

fn any() -> Node {
    Node { any: true, ..Node::default() }
}

/// `#/components/schemas/X` or `#/$defs/X` in `root` (JSON pointer, percent-decoded).
fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    let pointer =
        reference.strip_prefix('#').unwrap_or_else(|| panic!("a local $ref: {reference}"));
    let bytes = pointer.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = pointer.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let pointer = String::from_utf8(decoded).expect("UTF-8");
    root.pointer(&pointer).unwrap_or_else(|| panic!("{reference} resolves"))
}

fn node(root: &Value, schema: &Value) -> Node {
    let object = match schema {
        Value::Bool(true) => return any(),
        Value::Object(o) => o,
        other => panic!("unsupported schema {other}"),
    };
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        return node(root, resolve(root, reference));
    }
    let shaped =
        ["type", "properties", "items", "enum", "const"].iter().any(|k| object.contains_key(*k));
    if !shaped {
        // `anyOf`/`oneOf` beside a shape are constraints (EpisodeChanges' "one of these is
        // set"); without one they are the alternatives.
        let alternatives = object.get("anyOf").or_else(|| object.get("oneOf"));
        if let Some(alternatives) = alternatives.and_then(Value::as_array) {
            return alternatives.iter().map(|a| node(root, a)).reduce(union).unwrap_or_else(any);
        }
        assert!(!object.contains_key("allOf"), "allOf is not supported: {schema}");
        return any();
    }
    let mut n = Node::default();
    match object.get("type") {
        Some(Value::String(t)) => {
            n.types.insert(t.clone());
        }
        Some(Value::Array(ts)) => {
            n.types.extend(ts.iter().filter_map(Value::as_str).map(String::from));
        }
        _ => {}
    }
    let listed = match (object.get("enum"), object.get("const")) {
        (Some(Value::Array(values)), _) => Some(values.clone()),
        (_, Some(value)) => Some(vec![value.clone()]),
        _ => None,
    };
    if let Some(values) = listed {
        if n.types.is_empty() {
            n.types.extend(values.iter().map(|v| json_type(v).to_string()));
        }
        // `null` in an enum is the node's nullability, already in its types.
        n.values = Some(values.iter().filter(|v| !v.is_null()).map(Value::to_string).collect());
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        n.types.insert("object".into());
        let required: BTreeSet<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, field) in properties {
            n.fields.insert(name.clone(), (required.contains(name.as_str()), node(root, field)));
        }
    }
    n.closed = object.get("additionalProperties") == Some(&Value::Bool(false));
    if let Some(items) = object.get("items") {
        n.items = Some(Box::new(node(root, items)));
    }
    n
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a value matching `a` or `b` can look like. A field is required only if every object
/// alternative requires it.
fn union(a: Node, b: Node) -> Node {
    if a.any || b.any {
        return any();
    }
    let only_null = |n: &Node| n.types.len() == 1 && n.types.contains("null");
    let values = match (&a.values, &b.values) {
        _ if only_null(&a) => b.values.clone(),
        _ if only_null(&b) => a.values.clone(),
        (Some(x), Some(y)) => Some(x.union(y).cloned().collect()),
        _ => None,
    };
    let objects: Vec<&Node> = [&a, &b].into_iter().filter(|n| n.types.contains("object")).collect();
    let names: BTreeSet<&String> = objects.iter().flat_map(|n| n.fields.keys()).collect();
    let mut fields = BTreeMap::new();
    for name in names {
        let mut required = true;
        let mut merged: Option<Node> = None;
        for o in &objects {
            match o.fields.get(name) {
                Some((r, f)) => {
                    required &= *r;
                    merged = Some(match merged {
                        Some(m) => union(m, f.clone()),
                        None => f.clone(),
                    });
                }
                None => required = false,
            }
        }
        fields.insert(name.clone(), (required, merged.unwrap_or_else(any)));
    }
    let closed = !objects.is_empty() && objects.iter().all(|o| o.closed);
    let types = a.types.union(&b.types).cloned().collect();
    let items = match (a.items, b.items) {
        (Some(x), Some(y)) => Some(Box::new(union(*x, *y))),
        (x, y) => x.or(y),
    };
    Node { any: false, types, values, fields, closed, items }
}

/// In an answer, a field that may be absent is absent rather than `null`: serde leaves it out
/// (`skip_serializing_if = "Option::is_none"`, the only way a field of a serialized type is
/// optional here), but schemars still lists the `Option`'s `null`.
fn omitted_not_null(n: &mut Node) {
    for (required, field) in n.fields.values_mut() {
        if !*required {
            field.types.remove("null");
        }
        omitted_not_null(field);
    }
    if let Some(items) = n.items.as_mut() {
        omitted_not_null(items);
    }
}

fn exempt(n: &mut Node, path: &[&str], what: Exempt) {
    match path.split_first() {
        None => match what {
            Exempt::Values => n.values = None,
            Exempt::Shape => *n = any(),
        },
        Some((&"[]", rest)) => exempt(n.items.as_mut().expect("items"), rest, what),
        Some((name, rest)) => {
            let (_, field) = n.fields.get_mut(*name).unwrap_or_else(|| panic!("field {name}"));
            exempt(field, rest, what);
        }
    }
}

/// `path -> "string|null [values] required closed"` for `n` and everything below it.
fn facts(
    n: &Node,
    path: &str,
    required: Option<bool>,
    request: bool,
    out: &mut BTreeMap<String, String>,
) {
    let mut fact = if n.any {
        "any JSON".to_string()
    } else {
        n.types.iter().cloned().collect::<Vec<_>>().join("|")
    };
    if let Some(values) = &n.values {
        fact += &format!(" {}", values.iter().cloned().collect::<Vec<_>>().join(","));
    }
    match required {
        Some(true) => fact += " required",
        Some(false) => fact += " optional",
        None => {}
    }
    // Unknown fields are refused only on the way in; answers may grow fields.
    if request && n.closed {
        fact += " closed";
    }
    out.insert(path.to_string(), fact);
    for (name, (r, field)) in &n.fields {
        facts(field, &format!("{path}.{name}"), Some(*r), request, out);
    }
    if let Some(items) = &n.items {
        facts(items, &format!("{path}[]"), None, request, out);
    }
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Every JSON body in the document: key -> (media type, schema).
fn documented(doc: &Value) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut found: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    let mut add = |key: String, content: &Value| {
        for (media_type, entry) in content.as_object().into_iter().flatten() {
            if is_json(media_type) {
                let schema = entry.get("schema").cloned().unwrap_or(Value::Bool(true));
                found.entry(key.clone()).or_default().push((media_type.clone(), schema));
            }
        }
    };
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Some(operation) = operation.as_object().filter(|o| o.contains_key("responses"))
            else {
                continue;
            };
            let method = method.to_uppercase();
            if let Some(request) = operation.get("requestBody") {
                add(format!("{method} {path} request"), &request["content"]);
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let response = match response.get("$ref").and_then(Value::as_str) {
                    Some(reference) => resolve(doc, reference),
                    None => response,
                };
                add(format!("{method} {path} {status}"), &response["content"]);
            }
        }
    }
    found
}

#[test]
fn every_body_field_of_the_openapi_document_matches_its_rust_type() {
    let doc = super::tests::document("openapi.json");
    let problem = out::<Problem<'static>>();
    let mut table: BTreeMap<String, Body> = BTreeMap::new();
    for b in bodies() {
        let key = b.key.clone();
        assert!(table.insert(key.clone(), b).is_none(), "{key} is mapped twice");
    }
    let mut mismatches = Vec::new();
    let mut unmapped = Vec::new();
    let mut compared = 0;
    for (key, schemas) in documented(&doc) {
        for (media_type, schema) in schemas {
            let (rust, exemptions) = if media_type == "application/problem+json" {
                let why = "kit::tests::every_problem_type_is_documented";
                let e: Vec<(&'static [&'static str], Exempt, &'static str)> =
                    vec![(&["type"], Exempt::Values, why)];
                (vec![problem.clone()], e)
            } else if let Some(b) = table.get(&key) {
                (b.rust.clone(), b.exempt.clone())
            } else {
                unmapped.push(key.clone());
                continue;
            };
            let request = key.ends_with(" request");
            let mut documented = node(&doc, &schema);
            let mut code = rust
                .iter()
                .map(|r| {
                    let mut n = node(r, r);
                    if !request {
                        omitted_not_null(&mut n);
                    }
                    n
                })
                .reduce(union)
                .expect("at least one type");
            for (path, what, _proven_by) in &exemptions {
                exempt(&mut documented, path, *what);
                exempt(&mut code, path, *what);
            }
            let (mut d, mut c) = (BTreeMap::new(), BTreeMap::new());
            facts(&documented, &key, None, request, &mut d);
            facts(&code, &key, None, request, &mut c);
            compared += d.len();
            for path in d.keys().chain(c.keys()).collect::<BTreeSet<_>>() {
                match (d.get(path), c.get(path)) {
                    (Some(x), Some(y)) if x == y => {}
                    (Some(x), Some(y)) => {
                        mismatches.push(format!("{path}: the document says {x}, Rust {y}"))
                    }
                    (Some(x), None) => {
                        mismatches.push(format!("{path}: documented ({x}), not in Rust"))
                    }
                    (None, Some(y)) => {
                        mismatches.push(format!("{path}: in Rust ({y}), not documented"))
                    }
                    (None, None) => {}
                }
            }
        }
    }
    let doc_keys = documented(&doc);
    let stale: Vec<&String> = table.keys().filter(|k| !doc_keys.contains_key(*k)).collect();
    assert!(
        unmapped.is_empty(),
        "documented JSON bodies without a Rust type in bodies(): {unmapped:#?}"
    );
    assert!(stale.is_empty(), "bodies() maps bodies the document does not have: {stale:#?}");
    assert!(compared > 300, "only {compared} facts compared");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
