//! Bearer tokens, verified with `jsonwebtoken`: HS256 tokens signed with `auth.jwt_secret`
//! (development and `showrunner token`), and the tokens of identity providers listed in
//! `auth.issuers` (RS256, ES256, EdDSA), checked against the keys each publishes as a JWKS.
//! Keys are fetched on first use, cached, fetched again when they age or when a token names an
//! unknown `kid` (at most once per `auth.jwks_min_refetch_secs`), and kept when the provider
//! cannot be reached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::{AuthSettings, IssuerSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
}

/// The caller as Showrunner knows it, whichever kind of token named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub name: String,
    #[serde(default)]
    pub email: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signature does not match")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token names a key its issuer does not publish")]
    UnknownKey,
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    #[error("the token carries none of the roles this service accepts")]
    Role,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match error.kind() {
            K::InvalidSignature => Self::Signature,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidIssuer => Self::Issuer,
            K::InvalidAudience => Self::Audience,
            K::InvalidAlgorithm
            | K::InvalidAlgorithmName
            | K::UnsupportedAlgorithm
            | K::MissingAlgorithm => Self::Algorithm,
            K::MissingRequiredClaim(claim) => Self::Claims(format!("`{claim}` is missing")),
            K::InvalidClaimFormat(claim) => Self::Claims(format!("`{claim}` has the wrong type")),
            K::Json(_) => Self::Claims("not the expected JSON".into()),
            _ => Self::Malformed,
        }
    }
}

/// An HS256 token for `claims`, signed with `secret` (`showrunner token`, tests).
pub fn encode(claims: &Claims, secret: &[u8]) -> String {
    // The configuration refuses secrets under 16 bytes; the empty key is the only one
    // jsonwebtoken refuses, and serializing these claims cannot fail.
    EncodingKey::from_secret(secret)
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key))
        .unwrap_or_default()
}

/// The claims of an HS256 token signed with `secret`, if it is valid now (`leeway_secs` of
/// clock skew allowed on `exp`).
pub fn decode_hs256(token: &str, secret: &[u8], leeway_secs: u64) -> Result<Claims, TokenError> {
    let key = DecodingKey::from_secret(secret).map_err(|_| TokenError::Signature)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    Ok(jsonwebtoken::decode::<Claims>(token, &key, &validation)?.claims)
}

/// Verifies every kind of token the configuration accepts. One per api process: it holds the
/// issuers' cached keys.
pub struct Verifier {
    secret: Vec<u8>,
    leeway_secs: u64,
    issuers: HashMap<String, Issuer>,
}

impl Verifier {
    pub fn new(auth: &AuthSettings) -> Self {
        let http = crate::tls::client_builder()
            .timeout(Duration::from_secs(auth.jwks_timeout_secs))
            // A key set never moves far; a redirect chain is a misconfiguration or a trap.
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        let issuers = auth
            .issuers
            .iter()
            .map(|settings| {
                let issuer = Issuer {
                    settings: settings.clone(),
                    algorithms: settings
                        .algorithms
                        .iter()
                        .filter_map(|a| a.parse::<Algorithm>().ok())
                        .collect(),
                    http: http.clone(),
                    cache_for: Duration::from_secs(auth.jwks_cache_secs),
                    min_refetch: Duration::from_secs(auth.jwks_min_refetch_secs),
                    keys: RwLock::new(KeySet::default()),
                    fetching: tokio::sync::Mutex::new(FetchState::default()),
                };
                (settings.issuer.clone(), issuer)
            })
            .collect();
        Self {
            secret: auth.jwt_secret.expose().as_bytes().to_vec(),
            leeway_secs: auth.leeway_secs,
            issuers,
        }
    }

    /// The caller `token` names, if it is valid now.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // Routed on the unverified header and `iss`; everything is checked again below, with
        // the key the route picks. HS256 only ever meets `auth.jwt_secret`: a token that says
        // HS256 is never checked against a provider's public key (algorithm confusion).
        let alg = header_alg(token)?;
        if alg == "HS256" {
            // Signed where it is checked, on the same clock: no leeway, as before providers.
            return decode_hs256(token, &self.secret, 0);
        }
        let alg: Algorithm = alg.parse().map_err(|_| TokenError::Algorithm)?;
        let header = jsonwebtoken::decode_header(token)?;
        let unverified: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token)?;
        let iss = unverified.get("iss").and_then(Value::as_str).ok_or(TokenError::Issuer)?;
        let issuer = self.issuers.get(iss).ok_or(TokenError::Issuer)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::Algorithm);
        }
        let key = issuer.key(header.kid.as_deref(), alg).await?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.settings.issuer]);
        validation.set_audience(&issuer.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)?.claims;
        issuer.claims(&claims)
    }
}

/// The `alg` of a token's header, read without trusting it.
fn header_alg(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let alg = value.get("alg").and_then(Value::as_str).ok_or(TokenError::Algorithm)?;
    if ["HS256", "RS256", "ES256", "EdDSA"].contains(&alg) {
        Ok(alg.to_string())
    } else {
        // `none`, and every algorithm no configuration can accept.
        Err(TokenError::Algorithm)
    }
}

/// The namespace of the ids made for users whose provider id is not a UUID.
pub const PROVIDER_USER_NAMESPACE: Uuid = Uuid::NAMESPACE_URL;

/// The Showrunner user id of provider user `subject` of `issuer`: the subject itself when it
/// is a UUID, else the UUIDv5 of `<issuer>#<subject>` in the URL namespace, so the same user
/// always gets the same id and two providers' users never share one.
pub fn user_id(issuer: &str, subject: &str) -> Uuid {
    Uuid::parse_str(subject).unwrap_or_else(|_| {
        Uuid::new_v5(&PROVIDER_USER_NAMESPACE, format!("{issuer}#{subject}").as_bytes())
    })
}

struct Issuer {
    settings: IssuerSettings,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    cache_for: Duration,
    min_refetch: Duration,
    keys: RwLock<KeySet>,
    fetching: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched: Option<Instant>,
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// The `jwks_uri` of the discovery document, once read.
    discovered: Option<String>,
}

/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let fits =
            |key: &Key| key.alg.is_none_or(|a| a == alg) && key.decoding.family() == alg.family();
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            // No `kid`: the first key that fits the algorithm.
            None => self.keys.iter().find(|k| fits(k)),
        }
        .filter(|k| fits(k))
        .cloned()
    }

    fn fresh(&self, cache_for: Duration) -> bool {
        self.fetched.is_some_and(|at| at.elapsed() < cache_for)
    }
}

impl Issuer {
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        let (found, fresh) = self.cached(kid, alg);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.decoding.clone());
        }
        // A stale key is still good while someone else refreshes the set.
        let mut state = match (&found, self.fetching.try_lock()) {
            (_, Ok(state)) => state,
            (Some(key), Err(_)) => return Ok(key.decoding.clone()),
            (None, Err(_)) => self.fetching.lock().await,
        };
        // Another request may have fetched while this one waited.
        let (found, fresh) = self.cached(kid, alg);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.decoding.clone());
        }
        let may_fetch = state.last_attempt.is_none_or(|at| at.elapsed() >= self.min_refetch);
        if may_fetch {
            state.last_attempt = Some(Instant::now());
            match self.fetch(&mut state).await {
                Ok(keys) => {
                    let mut set = self.keys.write().unwrap_or_else(|p| p.into_inner());
                    *set = KeySet { keys, fetched: Some(Instant::now()) };
                }
                Err(error) => {
                    tracing::warn!(issuer = %self.settings.issuer, error, "cannot fetch the issuer's keys");
                    let never_fetched = self.keys.read().map_or(true, |s| s.fetched.is_none());
                    if found.is_none() && never_fetched {
                        return Err(TokenError::KeysUnavailable);
                    }
                }
            }
        }
        // The keys as they are now: the new set if the fetch worked (a key that left it is
        // gone), the cached one if the provider could not be reached.
        self.cached(kid, alg).0.map(|k| k.decoding.clone()).ok_or(TokenError::UnknownKey)
    }

    fn cached(&self, kid: Option<&str>, alg: Algorithm) -> (Option<Arc<Key>>, bool) {
        let set = self.keys.read().unwrap_or_else(|p| p.into_inner());
        (set.find(kid, alg), set.fresh(self.cache_for))
    }

    async fn fetch(&self, state: &mut FetchState) -> Result<Vec<Arc<Key>>, String> {
        let url = match (&self.settings.jwks_url, &state.discovered) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                state.discovered = Some(url.clone());
                url
            }
        };
        let set: JwkSet = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| format!("the key set at {url} is not a JWKS: {e}"))?;
        let keys: Vec<Arc<Key>> = set
            .keys
            .iter()
            .filter(|jwk| jwk.is_supported())
            .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
            .filter_map(|jwk| {
                let decoding = DecodingKey::from_jwk(jwk).ok()?;
                let alg = match jwk.common.key_algorithm {
                    Some(named) => Some(Algorithm::try_from(named).ok()?),
                    None => None,
                };
                Some(Arc::new(Key { kid: jwk.common.key_id.clone(), alg, decoding }))
            })
            .collect();
        tracing::info!(issuer = %self.settings.issuer, keys = keys.len(), "fetched the issuer's keys");
        Ok(keys)
    }

    /// The `jwks_uri` of the issuer's OpenID Connect discovery document.
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let document: Value = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| format!("the discovery document at {url} is not JSON: {e}"))?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was
        // fetched for.
        if document.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(format!("the discovery document at {url} names another issuer"));
        }
        document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the discovery document at {url} has no jwks_uri"))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response =
            self.http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Showrunner's claims from a verified provider token.
    fn claims(&self, claims: &Map<String, Value>) -> Result<Claims, TokenError> {
        let s = &self.settings;
        let text = |name: &str| claim(claims, name).and_then(Value::as_str).map(str::to_string);
        let subject = text(&s.id_claim)
            .ok_or_else(|| TokenError::Claims(format!("`{}` is missing", s.id_claim)))?;
        let roles: Vec<&str> = match claim(claims, &s.roles_claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |wanted: &[String]| roles.iter().any(|r| wanted.iter().any(|w| w == r));
        let role = if has(&s.admin_roles) {
            Role::Admin
        } else if s.member_roles.is_empty() || has(&s.member_roles) {
            Role::Member
        } else {
            return Err(TokenError::Role);
        };
        let name = text(&s.name_claim)
            .or_else(|| text("preferred_username"))
            .unwrap_or_else(|| subject.clone());
        Ok(Claims {
            sub: user_id(&s.issuer, &subject),
            name,
            email: text(&s.email_claim).unwrap_or_default(),
            role,
            exp: claims.get("exp").and_then(Value::as_i64).unwrap_or_default(),
        })
    }
}

/// Claim `name`: a top-level claim of that exact name (Auth0's are URLs, dots included), else
/// a dotted path into nested objects (Keycloak's `realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"secret-secret-secret";

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::nil(),
            name: "Alice".into(),
            email: "alice@example.com".into(),
            role: Role::Admin,
            exp,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_token_round_trips() {
        let c = claims(now() + 600);
        assert_eq!(decode_hs256(&encode(&c, SECRET), SECRET, 0), Ok(c));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let token = encode(&claims(now() + 600), SECRET);
        assert_eq!(decode_hs256(&token, b"another-secret-here", 0), Err(TokenError::Signature));
        let expired = encode(&claims(now() - 120), SECRET);
        assert_eq!(decode_hs256(&expired, SECRET, 30), Err(TokenError::Expired));
        // Within the leeway, a just-expired token still passes.
        let just = encode(&claims(now() - 5), SECRET);
        assert!(decode_hs256(&just, SECRET, 30).is_ok());
        assert!(decode_hs256("a.b", SECRET, 0).is_err());
        assert!(decode_hs256("", SECRET, 0).is_err());
        // A token that claims "none" must not pass however its signature looks.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), "e30");
        assert!(decode_hs256(&none, SECRET, 0).is_err());
        assert_eq!(header_alg(&none), Err(TokenError::Algorithm));
        // Tampering with the payload breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now() + 9_999)).unwrap_or_default());
        parts[1] = &other;
        assert_eq!(decode_hs256(&parts.join("."), SECRET, 0), Err(TokenError::Signature));
    }

    #[test]
    fn provider_ids_map_to_stable_uuids() {
        let a = user_id("https://id.example.com/realms/x", "auth0|12345");
        assert_eq!(a, user_id("https://id.example.com/realms/x", "auth0|12345"));
        assert_ne!(a, user_id("https://other.example.com", "auth0|12345"));
        assert_eq!(a.get_version_num(), 5);
        let uuid = "0b6e3c36-6a7c-4c0e-9d59-5d2f0e1f7a10";
        assert_eq!(user_id("https://id.example.com", uuid).to_string(), uuid);
    }

    #[test]
    fn claims_are_found_by_name_or_dotted_path() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "https://example.com/roles": ["admin"],
            "realm_access": {"roles": ["showrunner-member"]},
        }))
        .unwrap_or_default();
        assert_eq!(
            claim(&claims, "https://example.com/roles"),
            Some(&serde_json::json!(["admin"]))
        );
        assert_eq!(
            claim(&claims, "realm_access.roles"),
            Some(&serde_json::json!(["showrunner-member"]))
        );
        assert_eq!(claim(&claims, "realm_access.groups"), None);
    }
}
