//! Sign-in through an identity provider: a real JWKS server on loopback (OIDC discovery and a
//! key set, which the test can rotate or take down) and tokens signed with test keys
//! (tests/it/oidc-keys/, test-only: generated for these tests, never used anywhere else).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::{Role, user_id};
use showrunner_tests::{Options, TestApp, wait_until};
use uuid::Uuid;

use crate::support::{DEADLINE, send, ws_next, ws_say};

const AUDIENCE: &str = "showrunner";
const RSA_A: &[u8] = include_bytes!("oidc-keys/rsa-a.der");
const RSA_B: &[u8] = include_bytes!("oidc-keys/rsa-b.der");
const EC: &[u8] = include_bytes!("oidc-keys/ec.der");
const ED_A: &[u8] = include_bytes!("oidc-keys/ed-a.der");
const ED_B: &[u8] = include_bytes!("oidc-keys/ed-b.der");
const RSA_A_PUBLIC_PEM: &[u8] = include_bytes!("oidc-keys/rsa-a.pub.pem");

/// The identity provider: discovery at `<issuer>/.well-known/openid-configuration`, keys at
/// `<issuer>/certs`.
#[derive(Clone)]
struct Provider {
    issuer: String,
    keys: Arc<Mutex<Value>>,
    up: Arc<AtomicBool>,
    /// Requests for the key set, answered or not.
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let provider = Self {
            issuer: format!("http://{addr}/realms/test"),
            keys: Arc::new(Mutex::new(keys)),
            up: Arc::new(AtomicBool::new(true)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let router = Router::new()
            .route("/realms/test/.well-known/openid-configuration", get(discovery))
            .route("/realms/test/certs", get(certs))
            .with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        provider
    }

    fn set_keys(&self, keys: Value) {
        *self.keys.lock().expect("keys") = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn settings(&self) -> String {
        json!([{
            "issuer": self.issuer,
            "audiences": [AUDIENCE, "another-app"],
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "roles_claim": "realm_access.roles",
            "admin_roles": ["showrunner-admin"],
            "member_roles": ["showrunner-user"],
        }])
        .to_string()
    }

    async fn app(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut pairs = vec![
            ("auth.issuers".to_string(), self.settings()),
            ("auth.jwks_min_refetch_secs".to_string(), "1".to_string()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TestApp::spawn_with(Options { extra: pairs, ..Options::default() }).await
    }
}

async fn discovery(State(p): State<Provider>) -> Response {
    if !p.up.load(Ordering::SeqCst) {
        return AxumStatus::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({"issuer": p.issuer, "jwks_uri": format!("{}/certs", p.issuer)}))
        .into_response()
}

async fn certs(State(p): State<Provider>) -> Response {
    p.fetches.fetch_add(1, Ordering::SeqCst);
    if !p.up.load(Ordering::SeqCst) {
        return AxumStatus::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = p.keys.lock().expect("keys").clone();
    axum::Json(keys).into_response()
}

fn rsa(der: &[u8]) -> EncodingKey {
    EncodingKey::from_rsa_der(der)
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_der(EC)
}

/// An Ed25519 key (PKCS#8 DER, as `openssl genpkey -algorithm ed25519 -outform DER` writes it).
fn ed(der: &[u8]) -> EncodingKey {
    EncodingKey::from_ed_der(der)
}

/// The public JWK of `key`, as `kid`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("a JWK of the test key");
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).expect("JWK as JSON")
}

fn key_set(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims a provider would put in the token of user `sub` with provider `roles`.
fn claims(p: &Provider, sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": p.issuer,
        "aud": AUDIENCE,
        "sub": sub,
        "name": format!("User {sub}"),
        "email": format!("{sub}@example.com"),
        "iat": now(),
        "exp": now() + 600,
        "realm_access": {"roles": roles},
    })
}

fn sign(claims: &Value, key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let header = Header { kid: Some(kid.to_string()), ..Header::new(alg) };
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// The status of listing `actor`'s activity with `token`: 200 for the user themselves or an
/// admin, 403 for another member, 401 for a refused token.
async fn activity_of(app: &TestApp, token: &str, actor: Uuid) -> (StatusCode, Value) {
    send(app.http.get(app.api(&format!("/activity?actorId={actor}"))).bearer_auth(token)).await
}

#[tokio::test]
async fn provider_tokens_sign_users_in_and_bad_ones_are_refused() {
    let (a, e, d) = (rsa(RSA_A), ec(), ed(ED_A));
    let p = Provider::start(key_set(&[
        jwk(&a, Algorithm::RS256, "rsa-a"),
        jwk(&e, Algorithm::ES256, "ec-1"),
        jwk(&d, Algorithm::EdDSA, "ed-1"),
    ]))
    .await;
    let app = p.app(&[]).await;
    // A provider id that is not a UUID maps to a stable one.
    let ada = user_id(&p.issuer, "ada-1815");
    assert_ne!(ada, user_id(&p.issuer, "ada-1816"));
    let member = claims(&p, "ada-1815", &["showrunner-user"]);

    let rs256 = sign(&member, &a, Algorithm::RS256, "rsa-a");
    assert_eq!(activity_of(&app, &rs256, ada).await.0, StatusCode::OK, "RS256");
    let (status, body) = activity_of(&app, &rs256, Uuid::now_v7()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member, not an admin: {body}");
    let es256 = sign(&member, &e, Algorithm::ES256, "ec-1");
    assert_eq!(activity_of(&app, &es256, ada).await.0, StatusCode::OK, "ES256");
    let eddsa = sign(&member, &d, Algorithm::EdDSA, "ed-1");
    assert_eq!(activity_of(&app, &eddsa, ada).await.0, StatusCode::OK, "EdDSA");
    let admin = sign(&claims(&p, "root", &["showrunner-admin"]), &a, Algorithm::RS256, "rsa-a");
    assert_eq!(activity_of(&app, &admin, Uuid::now_v7()).await.0, StatusCode::OK, "admin");
    // A UUID `sub` is the user id as it is.
    let uuid = Uuid::now_v7();
    let by_uuid =
        sign(&claims(&p, &uuid.to_string(), &["showrunner-user"]), &a, Algorithm::RS256, "rsa-a");
    assert_eq!(activity_of(&app, &by_uuid, uuid).await.0, StatusCode::OK);
    // Within the leeway (30 s), a token that just expired still passes.
    let mut just = member.clone();
    just["exp"] = json!(now() - 10);
    assert_eq!(
        activity_of(&app, &sign(&just, &a, Algorithm::RS256, "rsa-a"), ada).await.0,
        StatusCode::OK
    );
    // The development HS256 tokens still work beside them.
    let dev = app.token("dev", Role::Member);
    assert_eq!(activity_of(&app, &dev, TestApp::user_id("dev")).await.0, StatusCode::OK);

    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = member.clone();
        change(&mut c);
        c
    };
    let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"rsa-a"}"#);
    let payload = URL_SAFE_NO_PAD.encode(member.to_string());
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#));
    // The classic confusion: HS256 with the provider's public key as the shared secret.
    let confused = {
        let key = EncodingKey::from_secret(RSA_A_PUBLIC_PEM).expect("HMAC key");
        let header = Header { kid: Some("rsa-a".into()), ..Header::new(Algorithm::HS256) };
        jsonwebtoken::encode(&header, &member, &key).expect("sign")
    };
    let refused = [
        (
            "wrong audience",
            sign(&with(&|c| c["aud"] = json!("other-app")), &a, Algorithm::RS256, "rsa-a"),
            "audience",
        ),
        (
            "unknown issuer",
            sign(
                &with(&|c| c["iss"] = json!("http://127.0.0.1:1/evil")),
                &a,
                Algorithm::RS256,
                "rsa-a",
            ),
            "issuer",
        ),
        (
            "expired",
            sign(&with(&|c| c["exp"] = json!(now() - 120)), &a, Algorithm::RS256, "rsa-a"),
            "expired",
        ),
        (
            "not yet valid",
            sign(&with(&|c| c["nbf"] = json!(now() + 120)), &a, Algorithm::RS256, "rsa-a"),
            "not valid yet",
        ),
        (
            "signed by another key",
            sign(&member, &rsa(RSA_B), Algorithm::RS256, "rsa-a"),
            "signature",
        ),
        (
            "EdDSA signed by another key",
            sign(&member, &ed(ED_B), Algorithm::EdDSA, "ed-1"),
            "signature",
        ),
        ("alg none", none, "algorithm"),
        ("HS256 with the RSA public key", confused, "signature"),
        (
            "HS256 header on an RSA signature",
            format!("{hs_header}.{payload}.{}", rs256.rsplit('.').next().unwrap_or_default()),
            "signature",
        ),
        ("ES256 key named for RS256", sign(&member, &e, Algorithm::ES256, "rsa-a"), "key"),
        (
            "no accepted role",
            sign(&claims(&p, "ada-1815", &["other"]), &a, Algorithm::RS256, "rsa-a"),
            "roles",
        ),
    ];
    for (what, token, says) in refused {
        let (status, body) = activity_of(&app, &token, ada).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{what}: {detail}");
    }

    // The WebSocket takes the same tokens, and knows the user by the mapped id.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, &es256)).await.expect("websocket");
    ws_say(&mut socket, json!({"op": "subscribe", "topics": [format!("user.{ada}.#")]})).await;
    assert_eq!(ws_next(&mut socket).await["op"], "subscribed");
    let expired = sign(&with(&|c| c["exp"] = json!(now() - 120)), &a, Algorithm::RS256, "rsa-a");
    match tokio_tungstenite::connect_async(app.ws_url(0, &expired)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("an expired provider token on the WebSocket: {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn keys_rotate_and_cached_keys_outlive_a_provider_outage() {
    let (a, b) = (rsa(RSA_A), rsa(RSA_B));
    let p = Provider::start(key_set(&[jwk(&a, Algorithm::RS256, "rsa-a")])).await;
    // Keys count as stale after a second, so each request past it tries to refresh them.
    let app = p.app(&[("auth.jwks_cache_secs", "1")]).await;
    let ada = user_id(&p.issuer, "ada");
    let member = claims(&p, "ada", &["showrunner-user"]);
    let old = sign(&member, &a, Algorithm::RS256, "rsa-a");
    let new = sign(&member, &b, Algorithm::RS256, "rsa-b");
    assert_eq!(activity_of(&app, &old, ada).await.0, StatusCode::OK);
    assert_eq!(p.fetches(), 1, "fetched once, then cached");

    // The provider goes down: the cached key keeps signing users in while refreshes fail.
    p.up.store(false, Ordering::SeqCst);
    let before = p.fetches();
    wait_until("a refresh tried against the provider while it is down", DEADLINE, || async {
        let (status, body) = activity_of(&app, &old, ada).await;
        assert_eq!(status, StatusCode::OK, "a cached key while the provider is down: {body}");
        p.fetches() > before
    })
    .await;
    // A key it has never seen cannot be fetched now.
    let (status, _) = activity_of(&app, &new, ada).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Back, rotated: the new key appears and the old one goes.
    p.set_keys(key_set(&[jwk(&b, Algorithm::RS256, "rsa-b")]));
    p.up.store(true, Ordering::SeqCst);
    wait_until("the new key is fetched", DEADLINE, || async {
        activity_of(&app, &new, ada).await.0 == StatusCode::OK
    })
    .await;
    let (status, body) = activity_of(&app, &old, ada).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the retired key: {body}");

    // Unknown key ids cannot make the api hammer the provider: at most one fetch a second.
    let before = p.fetches();
    let started = std::time::Instant::now();
    for n in 0..30 {
        let token = sign(&member, &a, Algorithm::RS256, &format!("made-up-{n}"));
        assert_eq!(activity_of(&app, &token, ada).await.0, StatusCode::UNAUTHORIZED);
    }
    let allowed = started.elapsed().as_secs() as usize + 1;
    let fetched = p.fetches() - before;
    assert!(fetched <= allowed, "{fetched} fetches for 30 unknown kids in {:?}", started.elapsed());
    app.stop().await;
}
