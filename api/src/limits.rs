//! What one caller may send: the shape of JSON bodies (depth, string and list lengths) and how
//! many requests a user may make per second. The settings are `[limits]`; see the README's
//! limits table for every limit and the error it answers with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use showrunner_shared::config::LimitSettings;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{RefusedToken, authenticate, bearer};
use crate::state::AppState;

/// Refuses a JSON body nested deeper than `max_json_depth`, or holding a string or an array
/// longer than the limits, naming the field. Runs before the body is decoded into its type.
pub fn check_json(bytes: &[u8], limits: &LimitSettings) -> Result<(), ApiError> {
    if depth_exceeds(bytes, limits.max_json_depth) {
        return Err(ApiError::field(
            "body",
            format!("nests arrays and objects deeper than {} levels", limits.max_json_depth),
        ));
    }
    // A string of n characters takes at least n bytes and an array of n items 2n + 1: a body
    // shorter than both limits cannot break either, and most bodies are that short.
    let floor = limits.max_string_chars.min(limits.max_list_items.saturating_mul(2));
    if bytes.len() <= floor {
        return Ok(());
    }
    // Not JSON: the typed decoding that follows says where.
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    let mut path = String::new();
    check_value(&value, &mut path, limits)
}

/// Counts brackets outside strings on the raw bytes, so a hostile body never becomes a tree.
fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn check_value(value: &Value, path: &mut String, limits: &LimitSettings) -> Result<(), ApiError> {
    let field = |path: &str| if path.is_empty() { "body".to_string() } else { path.to_string() };
    match value {
        Value::String(s) if s.chars().count() > limits.max_string_chars => Err(ApiError::field(
            &field(path),
            format!("must be at most {} characters", limits.max_string_chars),
        )),
        Value::Array(items) => {
            if items.len() > limits.max_list_items {
                return Err(ApiError::field(
                    &field(path),
                    format!("must have at most {} items", limits.max_list_items),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_value(item, path, limits)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(members) => {
            if members.len() > limits.max_list_items {
                return Err(ApiError::field(
                    &field(path),
                    format!("must have at most {} members", limits.max_list_items),
                ));
            }
            for (key, member) in members {
                if key.chars().count() > limits.max_string_chars {
                    return Err(ApiError::field(
                        &field(path),
                        format!("has a key longer than {} characters", limits.max_string_chars),
                    ));
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                check_value(member, path, limits)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A token bucket per user, in this api instance's memory: `request_burst` requests at once,
/// then `requests_per_sec`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_user: HashMap<Uuid, Bucket>,
    swept: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How often buckets that refilled completely (idle users) are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            rate: f64::from(limits.requests_per_sec.max(1)),
            burst: f64::from(limits.request_burst.max(1)),
            buckets: Mutex::new(Buckets { by_user: HashMap::new(), swept: Instant::now() }),
        }
    }

    /// Takes one token of `user`'s bucket, or says how long until there is one.
    pub fn check(&self, user: Uuid, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        if now.saturating_duration_since(buckets.swept) > SWEEP_EVERY {
            buckets.by_user.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            buckets.swept = now;
        }
        let bucket = buckets.by_user.entry(user).or_insert(Bucket { tokens: burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[derive(Clone)]
pub struct RateState {
    app: AppState,
    limiter: Arc<RateLimiter>,
}

/// The middleware state of [`rate_limit`] for one router.
pub fn rate_state(app: &AppState) -> RateState {
    RateState { app: app.clone(), limiter: Arc::new(RateLimiter::new(&app.settings.limits)) }
}

/// Counts the request against its user's bucket (429 with `Retry-After` when it is empty) and
/// hands the authenticated user on, so the handler does not check the token again. A request
/// without a valid token passes: its handler answers 401.
pub async fn rate_limit(
    State(state): State<RateState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = bearer(request.headers()).map(str::to_string);
    let from_header = header.is_some();
    let token = header.or_else(|| {
        // The WebSocket may carry its token in the query.
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let user = match token {
        Some(token) => match authenticate(&state.app, &token).await {
            Ok(user) => Some(user),
            Err(refusal) => {
                // Checked once per request: the handler answers with this refusal instead of
                // verifying again (a provider's token costs a signature check, maybe a fetch).
                if from_header {
                    request.extensions_mut().insert(RefusedToken(refusal.to_string()));
                }
                None
            }
        },
        None => None,
    };
    if let Some(user) = user {
        if let Err(wait) = state.limiter.check(user.id(), Instant::now()) {
            let limits = &state.app.settings.limits;
            return ApiError::TooManyRequests {
                detail: format!(
                    "more than {} requests per second (bursts of {}): slow down",
                    limits.requests_per_sec, limits.request_burst
                ),
                retry_after_secs: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            }
            .into_response();
        }
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitSettings {
        LimitSettings {
            max_body_bytes: 1 << 20,
            max_json_depth: 3,
            max_string_chars: 5,
            max_list_items: 3,
            max_page_size: 100,
            max_connections_per_user: 2,
            requests_per_sec: 2,
            request_burst: 3,
        }
    }

    fn field_of(body: &str) -> Option<String> {
        field_with(body, &limits())
    }

    fn field_with(body: &str, limits: &LimitSettings) -> Option<String> {
        match check_json(body.as_bytes(), limits) {
            Ok(()) => None,
            Err(ApiError::Validation { errors, .. }) => errors.first().map(|e| e.field.clone()),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(field_of(r#"{"a":[[1]]}"#), None);
        assert_eq!(field_of(r#"{"a":[[[1]]]}"#).as_deref(), Some("body"));
        let long_strings = LimitSettings { max_string_chars: 100, ..limits() };
        assert_eq!(field_with(r#"{"a":"[[[[[\"[["}"#, &long_strings), None);
        assert!(depth_exceeds(&[b'['; 10_000], 32));
    }

    #[test]
    fn long_strings_and_lists_name_their_field() {
        assert_eq!(field_of(r#"{"ok":"abcde","n":[1,2,3]}"#), None);
        assert_eq!(
            field_of(r#"{"items":[{"name":"abcdef"}], "pad": 1}"#).as_deref(),
            Some("items[0].name")
        );
        assert_eq!(field_of(r#"{"p":{"q":"abcdef"}}"#).as_deref(), Some("p.q"));
        assert_eq!(field_of(r#"{"list":[1,2,3,4], "pad": "xxxx"}"#).as_deref(), Some("list"));
        assert_eq!(field_of(r#"{"a":1,"b":2,"c":3,"d":4}"#).as_deref(), Some("body"));
        // Characters, not bytes.
        assert_eq!(field_of(r#"{"t":"ééééé","pad":"xxxxx"}"#), None);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(&limits());
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(alice, t0).is_ok());
        }
        let wait = limiter.check(alice, t0).expect_err("bucket empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check(bob, t0).is_ok(), "buckets are per user");
        assert!(limiter.check(alice, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check(alice, t0 + Duration::from_millis(500)).is_err());
    }
}
