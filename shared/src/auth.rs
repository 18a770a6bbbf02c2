//! Bearer tokens: HS256 JWTs with the claims of the contract (`sub`, `name`, `email`, `role`,
//! `exp`). Written on `hmac` + `sha2` because HS256 is all Showrunner needs and the full JWT
//! crates pull in RSA and elliptic-curve stacks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
}

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
    #[error("the token is not signed with HS256")]
    Algorithm,
    #[error("the token's signature does not match")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token's claims are invalid")]
    Claims,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

pub fn encode(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    // Serializing a struct of strings and numbers cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(signing_input.as_bytes(), secret));
    format!("{signing_input}.{signature}")
}

pub fn decode(token: &str, secret: &[u8], now_unix: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(header_and_payload(token).as_bytes());
    mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn header_and_payload(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(head, _)| head)
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

fn sign(input: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut mac = mac(secret);
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::nil(),
            name: "Alice".into(),
            email: "alice@example.com".into(),
            role: Role::Admin,
            exp,
        }
    }

    #[test]
    fn a_token_round_trips() {
        let token = encode(&claims(2_000), b"secret-secret-secret");
        assert_eq!(decode(&token, b"secret-secret-secret", 1_000), Ok(claims(2_000)));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let token = encode(&claims(2_000), b"secret-secret-secret");
        assert_eq!(decode(&token, b"another-secret-here", 1_000), Err(TokenError::Signature));
        assert_eq!(decode(&token, b"secret-secret-secret", 2_000), Err(TokenError::Expired));
        assert_eq!(decode("a.b", b"x", 0), Err(TokenError::Malformed));
        assert_eq!(decode("", b"x", 0), Err(TokenError::Malformed));
        // A token that claims "none" must not pass however its signature looks.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), "e30");
        assert_eq!(decode(&none, b"x", 0), Err(TokenError::Algorithm));
        // Tampering with the payload breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap_or_default());
        parts[1] = &other;
        assert_eq!(
            decode(&parts.join("."), b"secret-secret-secret", 1_000),
            Err(TokenError::Signature)
        );
    }
}
