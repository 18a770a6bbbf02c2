//! Extractors that turn every malformed input into a problem+json answer: the bearer token,
//! JSON bodies (unknown fields refused, the failing field named), query strings and path ids.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use showrunner_shared::auth::{Claims, Role};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller, from a valid bearer token.
#[derive(Debug, Clone)]
pub struct User(pub Claims);

impl User {
    pub fn id(&self) -> Uuid {
        self.0.sub
    }
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }
}

impl<S> FromRequestParts<S> for User
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The rate limiter already checked the token.
        if let Some(user) = parts.extensions.get::<User>() {
            return Ok(user.clone());
        }
        if let Some(RefusedToken(detail)) = parts.extensions.get::<RefusedToken>() {
            return Err(ApiError::Unauthorized(detail.clone()));
        }
        let state = AppState::from_ref(state);
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::Unauthorized("a bearer token is required".into()));
        }
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
        authenticate(&state, token).await
    }
}

/// Why the rate limiter refused the request's bearer token (the handler answers 401 with it).
#[derive(Debug, Clone)]
pub struct RefusedToken(pub String);

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// The caller a token names, if it is valid now.
pub async fn authenticate(state: &AppState, token: &str) -> Result<User, ApiError> {
    state.verifier.verify(token).await.map(User).map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// A JSON body decoded into `T`: 415 without a JSON content type, 400 when it is not JSON,
/// 422 naming the field when it is JSON of the wrong shape or beyond the `[limits]` (depth,
/// string and list lengths), 413 when it is larger than `limits.max_body_bytes`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = AppState::from_ref(state).settings.limits.clone();
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType("the body must be application/json".into()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "the body is larger than {} bytes",
                    limits.max_body_bytes
                ))
            } else {
                ApiError::bad_param("body", rejection.body_text())
            }
        })?;
        crate::limits::check_json(&bytes, &limits)?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|error| {
        let path = error.path().to_string();
        json_error(path, error.into_inner())
    })?;
    de.end().map_err(|e| json_error(".".into(), e))?;
    Ok(value)
}

fn json_error(path: String, inner: serde_json::Error) -> ApiError {
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::bad_param("body", format!("not valid JSON: {inner}"))
        }
        _ => {
            let message = strip_position(&inner.to_string());
            // serde reports a missing field at its parent's path; name the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string);
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name,
                (parent, Some(name)) => format!("{parent}.{name}"),
                (".", None) => "body".to_string(),
                (_, None) => path,
            };
            ApiError::field(&field, message)
        }
    }
}

/// serde_json ends messages with " at line 1 column 42"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query parameters decoded into `T`, unknown ones and ones longer than
/// `limits.max_string_chars` refused, as 400 naming the parameter.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if query.to_ascii_lowercase().contains("%00") {
            return Err(ApiError::bad_param("query", "must not contain the NUL character"));
        }
        let max = AppState::from_ref(state).settings.limits.max_string_chars;
        if let Some((name, _)) =
            form_urlencoded::parse(query.as_bytes()).find(|(_, value)| value.chars().count() > max)
        {
            return Err(ApiError::bad_param(&name, format!("must be at most {max} characters")));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(QueryParams).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "query".to_string() } else { path };
            ApiError::bad_param(&field, e.into_inner().to_string())
        })
    }
}

/// The `{id}` of a path, which must be a UUID.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_param("id", "missing path parameter"))?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::bad_param("id", format!("{raw:?} is not a UUID")))
    }
}

/// The two UUIDs of a child resource's path, `/episodes/{id}/<children>/{cid}`; 400 naming
/// the one that is not a UUID.
pub struct PathIds(pub Uuid, pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((id, cid)): axum::extract::Path<(String, String)> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_param("id", "missing path parameter"))?;
        let parse = |name: &str, raw: &str| {
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::bad_param(name, format!("{raw:?} is not a UUID")))
        };
        Ok(Self(parse("id", &id)?, parse("cid", &cid)?))
    }
}
