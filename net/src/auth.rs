//! Authentication: HS256 JWTs naming the user (`sub`) and a role, from the `Authorization: Bearer` header,
//! the `token` query parameter or the `session` cookie.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    User,
    Publisher,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    /// May publish events.
    pub fn can_publish(self) -> bool {
        matches!(self, Role::Publisher | Role::Admin)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Arc<str>,
    pub role: Role,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("unknown role '{0}'")]
    UnknownRole(String),
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Authenticator {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks a token and names its holder.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > tickwire_core::event::MAX_USER_LEN {
            return Err(AuthError::Invalid("sub must be 1 to 128 bytes".into()));
        }
        let role = match c.role.as_deref() {
            None => Role::User,
            Some(r) => Role::parse(r).ok_or_else(|| AuthError::UnknownRole(r.chars().take(20).collect()))?,
        };
        Ok(Identity { user: c.sub.into(), role })
    }

    /// Issues a token for `sub` with `role`, valid `ttl_s` seconds from `now_s` (Unix seconds).
    pub fn issue(&self, sub: &str, role: Role, now_s: u64, ttl_s: u64) -> String {
        let claims = Claims { sub: sub.to_owned(), exp: now_s + ttl_s, role: Some(role.as_str().to_owned()) };
        // HS256 signing of a serializable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }
}

/// The token of a request: header, then `token` query parameter, then `session` cookie.
pub fn find_token<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(h) = authorization {
        let h = h.trim();
        if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") {
            return Some(h[7..].trim());
        }
    }
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Some(t);
    }
    cookie?.split(';').find_map(|kv| kv.trim().strip_prefix("session=")).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn issue_then_verify() {
        let a = Authenticator::hs256(b"secret");
        let t = a.issue("u-42", Role::Publisher, now(), 60);
        assert_eq!(a.verify(&t).unwrap(), Identity { user: "u-42".into(), role: Role::Publisher });
        assert!(matches!(Authenticator::hs256(b"other").verify(&t), Err(AuthError::Invalid(_))));
        assert_eq!(a.verify(&a.issue("u", Role::User, now() - 3600, 60)), Err(AuthError::Expired));
        assert!(a.verify("not.a.jwt").is_err());
    }

    #[test]
    fn token_sources_in_order() {
        assert_eq!(find_token(Some("Bearer abc"), Some("q"), None), Some("abc"));
        assert_eq!(find_token(Some("Basic xyz"), Some("q"), None), Some("q"));
        assert_eq!(find_token(None, None, Some("a=1; session=tok")), Some("tok"));
        assert_eq!(find_token(None, Some(""), None), None);
    }
}
