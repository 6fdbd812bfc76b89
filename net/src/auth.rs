//! Authentication: JWTs naming the user (`sub`) and a role, from the `Authorization: Bearer` header, the
//! `token` query parameter or the `session` cookie. HS256 with the server's secret; RS256 or ES256 with a
//! configured public key. `exp` is required, `nbf` honoured, both with [`LEEWAY_S`] of clock skew.

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

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 5;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("unknown role '{0}'")]
    UnknownRole(String),
    #[error("cannot load the JWT public key: {0}")]
    Key(String),
}

/// One accepted algorithm with its key.
#[derive(Clone)]
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn new(alg: Algorithm, key: DecodingKey) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }
}

/// Signs tokens with the HS256 secret and checks them: HS256 with that secret always, and RS256 or ES256
/// with a configured public key (tokens from an identity provider). The algorithm is chosen by the token's
/// header among these only, each with its own key, so a token cannot pick its key's type (no HS256 token
/// "signed" with the public key, no `none`).
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    hs256: Verifier,
    external: Option<(Algorithm, Verifier)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Authenticator {
        Authenticator {
            encoding: EncodingKey::from_secret(secret),
            hs256: Verifier::new(Algorithm::HS256, DecodingKey::from_secret(secret)),
            external: None,
        }
    }

    /// Also accepts tokens signed with `alg` (RS256 or ES256) by the holder of the private key of `pem`
    /// (a PEM public key).
    pub fn with_public_key(mut self, alg: Algorithm, pem: &[u8]) -> Result<Authenticator, AuthError> {
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            other => return Err(AuthError::Key(format!("{other:?} is not supported: use RS256 or ES256"))),
        }
        .map_err(|e| AuthError::Key(e.to_string()))?;
        self.external = Some((alg, Verifier::new(alg, key)));
        Ok(self)
    }

    /// The algorithms accepted, for logs.
    pub fn algorithms(&self) -> String {
        match &self.external {
            Some((alg, _)) => format!("HS256, {alg:?}"),
            None => "HS256".to_owned(),
        }
    }

    /// Checks a token and names its holder.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let verifier = match (&self.external, header.alg) {
            (_, Algorithm::HS256) => &self.hs256,
            (Some((alg, v)), a) if *alg == a => v,
            (_, a) => return Err(AuthError::Algorithm(format!("{a:?}"))),
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
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

    /// Issues an HS256 token for `sub` with `role`, valid `ttl_s` seconds from `now_s` (Unix seconds).
    pub fn issue(&self, sub: &str, role: Role, now_s: u64, ttl_s: u64) -> String {
        let claims = Claims { sub: sub.to_owned(), exp: now_s + ttl_s, role: Some(role.as_str().to_owned()) };
        // HS256 signing of a serializable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }
}

/// API keys exchanged at `GET /api/ws/token` for short-lived tokens. Only SHA-256 digests of the keys are
/// kept, and a lookup compares the digest with every key's in constant time.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Arc<str>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiKeys {
    /// From `KEY=USER` pairs; a pair without `=` is skipped (the configuration checks them first).
    pub fn new(pairs: &[String]) -> ApiKeys {
        let keys = pairs
            .iter()
            .filter_map(|p| p.split_once('='))
            .map(|(key, user)| (digest(key.trim()), Arc::from(user.trim())))
            .collect();
        ApiKeys { keys }
    }

    /// The user of `key`.
    pub fn user(&self, key: &str) -> Option<Arc<str>> {
        let d = digest(key.trim());
        let mut found = None;
        for (k, user) in &self.keys {
            if aws_lc_rs::constant_time::verify_slices_are_equal(k, &d).is_ok() && found.is_none() {
                found = Some(user.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses `RS256` or `ES256` (any case).
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s.to_ascii_uppercase().as_str() {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
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

    fn signed(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn rs256_and_es256_with_a_public_key() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
        let claims = serde_json::json!({"sub": "u-1", "exp": now() + 60, "role": "admin"});
        let rsa = EncodingKey::from_rsa_pem(&read("jwt-rs256.key")).unwrap();
        let ec = EncodingKey::from_ec_pem(&read("jwt-es256.key")).unwrap();
        for (alg, name, key, other_alg, other_key) in [
            (Algorithm::RS256, "jwt-rs256", &rsa, Algorithm::ES256, &ec),
            (Algorithm::ES256, "jwt-es256", &ec, Algorithm::RS256, &rsa),
        ] {
            let a = Authenticator::hs256(b"s").with_public_key(alg, &read(&format!("{name}.pub"))).unwrap();
            assert_eq!(a.verify(&signed(alg, key, claims.clone())).unwrap().role, Role::Admin);
            // HS256 stays accepted, with the secret only; the public key is no HS256 secret.
            assert!(a.verify(&a.issue("u", Role::User, now(), 60)).is_ok());
            let confused = EncodingKey::from_secret(&read(&format!("{name}.pub")));
            assert!(matches!(
                a.verify(&signed(Algorithm::HS256, &confused, claims.clone())),
                Err(AuthError::Invalid(_))
            ));
            // The other asymmetric algorithm than the configured one.
            let t = signed(other_alg, other_key, claims.clone());
            assert_eq!(a.verify(&t), Err(AuthError::Algorithm(format!("{other_alg:?}"))));
            // Right algorithm, wrong key: a bad signature.
            let wrong = if alg == Algorithm::RS256 { &rsa } else { &ec };
            let mut forged = signed(alg, wrong, claims.clone());
            forged.replace_range(forged.len() - 6.., "AAAAAA");
            assert!(matches!(a.verify(&forged), Err(AuthError::Invalid(_))));
        }
        // Without a configured key, RS256 is refused as an algorithm.
        assert_eq!(
            Authenticator::hs256(b"s").verify(&signed(Algorithm::RS256, &rsa, claims)),
            Err(AuthError::Algorithm("RS256".into()))
        );
        assert!(Authenticator::hs256(b"s").with_public_key(Algorithm::ES256, b"not a pem").is_err());
    }

    #[test]
    fn exp_required_nbf_honoured() {
        let a = Authenticator::hs256(b"k");
        let key = EncodingKey::from_secret(b"k");
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "u"}));
        assert!(matches!(a.verify(&t), Err(AuthError::Invalid(_))), "exp is required");
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "u", "exp": now() + 60, "nbf": now() + 60}));
        assert_eq!(a.verify(&t), Err(AuthError::NotYetValid));
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "u", "exp": now() + 60, "nbf": now() + 2}));
        assert!(a.verify(&t).is_ok(), "within the leeway");
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "u", "exp": now() - 2}));
        assert!(a.verify(&t).is_ok(), "expired within the leeway");
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = signed(alg, &key, serde_json::json!({"sub": "u", "exp": now() + 60}));
            assert_eq!(a.verify(&t), Err(AuthError::Algorithm(format!("{alg:?}"))));
        }
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "u", "exp": now() + 60, "role": "root"}));
        assert_eq!(a.verify(&t), Err(AuthError::UnknownRole("root".into())));
        let t = signed(Algorithm::HS256, &key, serde_json::json!({"sub": "", "exp": now() + 60}));
        assert!(matches!(a.verify(&t), Err(AuthError::Invalid(_))), "an empty sub");
        // alg "none": header {"alg":"none"}, no signature.
        assert!(a.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.").is_err());
    }

    #[test]
    fn api_keys_name_their_user() {
        let keys = ApiKeys::new(&["k-123456789=alice".to_owned(), "k-abcdefghi=bob".to_owned()]);
        assert_eq!(keys.user("k-abcdefghi").as_deref(), Some("bob"));
        assert_eq!(keys.user("k-123456789").as_deref(), Some("alice"));
        assert_eq!(keys.user("k-12345678"), None);
        assert_eq!(keys.user(""), None);
        assert!(ApiKeys::default().user("x").is_none());
    }

    #[test]
    fn token_sources_in_order() {
        assert_eq!(find_token(Some("Bearer abc"), Some("q"), None), Some("abc"));
        assert_eq!(find_token(Some("Basic xyz"), Some("q"), None), Some("q"));
        assert_eq!(find_token(None, None, Some("a=1; session=tok")), Some("tok"));
        assert_eq!(find_token(None, Some(""), None), None);
    }
}
