//! Authentication: JWTs naming the user (`sub`) and a role, from the `Authorization: Bearer` header, the
//! `token` query parameter or the `session` cookie. HS256 with the server's secret; tokens of an identity
//! provider with its public key (`--jwt-public-key`) or its key set (`--jwt-jwks`), both read again by
//! [`Authenticator::reload`] (SIGHUP). `exp` is required, `nbf` honoured, both with [`LEEWAY_S`] of clock
//! skew; `iss` and `aud` are checked on every token when configured.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
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

/// The claims read from a token (`iss` and `aud` are checked by the validation, not read).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
}

/// The claims of a token this server issues.
#[derive(Debug, Serialize)]
struct Issued<'a> {
    sub: &'a str,
    exp: u64,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
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
    #[error("token issuer (iss) is not the one accepted")]
    Issuer,
    #[error("token audience (aud) does not name this server")]
    Audience,
    #[error("token key id (kid) '{0}' is not in the key set")]
    UnknownKey(String),
    #[error("unknown role '{0}'")]
    UnknownRole(String),
    #[error("cannot load the JWT public key: {0}")]
    Key(String),
}

/// The claims every token must carry beyond `exp` and `sub`: `iss` and `aud` when configured.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// One accepted algorithm with its key.
#[derive(Clone)]
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn new(alg: Algorithm, key: DecodingKey, rules: &ClaimRules) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &rules.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // No audience configured: a token's `aud` is not this server's business.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Verifier { key, validation }
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::Issuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::Audience,
                _ => AuthError::Invalid(e.to_string()),
            }
        })
    }
}

/// The identity providers' keys: what the key files held when last read.
#[derive(Default)]
struct ProviderKeys {
    /// `--jwt-public-key`: one algorithm, one key.
    public_key: Option<(Algorithm, Verifier)>,
    /// `--jwt-jwks`: each key with its id (`kid`) and algorithm.
    jwks: Vec<(Option<String>, Algorithm, Verifier)>,
}

/// Where the providers' keys are read from.
#[derive(Debug, Clone, Default)]
pub struct KeyFiles {
    /// A PEM public key and its algorithm (RS256 or ES256).
    pub public_key: Option<(Algorithm, PathBuf)>,
    /// A JWK set (RFC 7517) as an identity provider publishes it.
    pub jwks: Option<PathBuf>,
}

/// Signs tokens with the HS256 secret and checks them: HS256 with that secret always, and an identity
/// provider's tokens with its public key or key set. The algorithm is chosen by the token's header among
/// these only, each with its own key, so a token cannot pick its key's type (no HS256 token "signed" with a
/// public key, no `none`). Clones share the providers' keys, so a reload reaches every shard.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    rules: ClaimRules,
    hs256: Verifier,
    files: KeyFiles,
    providers: Arc<RwLock<Arc<ProviderKeys>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Authenticator {
        Authenticator::new(secret, ClaimRules::default())
    }

    /// HS256 with `secret`; every token must also satisfy `rules`, and tokens issued here carry them.
    pub fn new(secret: &[u8], rules: ClaimRules) -> Authenticator {
        Authenticator {
            encoding: EncodingKey::from_secret(secret),
            hs256: Verifier::new(Algorithm::HS256, DecodingKey::from_secret(secret), &rules),
            rules,
            files: KeyFiles::default(),
            providers: Arc::default(),
        }
    }

    /// Also accepts tokens signed with `alg` (RS256 or ES256) by the holder of the private key of `pem`
    /// (a PEM public key). Not read again by [`Authenticator::reload`]: see [`Authenticator::with_key_files`].
    pub fn with_public_key(self, alg: Algorithm, pem: &[u8]) -> Result<Authenticator, AuthError> {
        let verifier = public_key(alg, pem, &self.rules)?;
        let keys = ProviderKeys { public_key: Some((alg, verifier)), jwks: Vec::new() };
        *self.providers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(self)
    }

    /// Also accepts the tokens of the providers whose keys `files` name; read now and at each
    /// [`Authenticator::reload`].
    pub fn with_key_files(mut self, files: KeyFiles) -> Result<Authenticator, AuthError> {
        self.files = files;
        self.reload()?;
        Ok(self)
    }

    /// Reads the key files again. On an error (a missing file, a half-written set, a set without a usable
    /// key) the keys in use stay. Returns what is now accepted, for the log.
    pub fn reload(&self) -> Result<String, AuthError> {
        let mut keys = ProviderKeys::default();
        if let Some((alg, path)) = &self.files.public_key {
            let pem = read(path)?;
            keys.public_key = Some((*alg, public_key(*alg, &pem, &self.rules)?));
        }
        if let Some(path) = &self.files.jwks {
            keys.jwks =
                jwks(&read(path)?, &self.rules).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        }
        *self.providers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(self.algorithms())
    }

    fn keys(&self) -> Arc<ProviderKeys> {
        self.providers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The algorithms and keys accepted, for logs.
    pub fn algorithms(&self) -> String {
        let keys = self.keys();
        let mut out = "HS256".to_owned();
        if let Some((alg, _)) = &keys.public_key {
            out.push_str(&format!(", {alg:?} (public key)"));
        }
        if !keys.jwks.is_empty() {
            let ids: Vec<String> = keys
                .jwks
                .iter()
                .map(|(kid, alg, _)| format!("{}:{alg:?}", kid.as_deref().unwrap_or("(no kid)")))
                .collect();
            out.push_str(&format!(", key set [{}]", ids.join(", ")));
        }
        out
    }

    /// Checks a token and names its holder.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = if header.alg == Algorithm::HS256 {
            self.hs256.decode(token)?
        } else {
            let keys = self.keys();
            let mut candidates: Vec<&Verifier> = Vec::new();
            if let Some((alg, v)) = &keys.public_key {
                if *alg == header.alg {
                    candidates.push(v);
                }
            }
            let same_alg = keys.jwks.iter().filter(|(_, alg, _)| *alg == header.alg);
            match &header.kid {
                // A named key must be in the set (a key of the right algorithm under another id is not it).
                Some(kid) => {
                    let named: Vec<&Verifier> =
                        same_alg.filter(|(id, _, _)| id.as_deref() == Some(kid.as_str())).map(|(_, _, v)| v).collect();
                    if named.is_empty() && candidates.is_empty() && keys.jwks.iter().any(|(_, a, _)| *a == header.alg) {
                        return Err(AuthError::UnknownKey(kid.chars().take(64).collect()));
                    }
                    candidates.extend(named);
                }
                None => candidates.extend(same_alg.map(|(_, _, v)| v)),
            }
            if candidates.is_empty() {
                return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
            }
            // The first key whose signature holds decides; a signature that holds for none is invalid.
            let mut last = AuthError::Invalid("InvalidSignature".into());
            let mut found = None;
            for v in candidates {
                match v.decode(token) {
                    Err(AuthError::Invalid(e)) => last = AuthError::Invalid(e),
                    other => {
                        found = Some(other);
                        break;
                    }
                }
            }
            match found {
                Some(r) => r?,
                None => return Err(last),
            }
        };
        if claims.sub.is_empty() || claims.sub.len() > tickwire_core::event::MAX_USER_LEN {
            return Err(AuthError::Invalid("sub must be 1 to 128 bytes".into()));
        }
        let role = match claims.role.as_deref() {
            None => Role::User,
            Some(r) => Role::parse(r).ok_or_else(|| AuthError::UnknownRole(r.chars().take(20).collect()))?,
        };
        Ok(Identity { user: claims.sub.into(), role })
    }

    /// Issues an HS256 token for `sub` with `role`, valid `ttl_s` seconds from `now_s` (Unix seconds), with
    /// the configured issuer and audience.
    pub fn issue(&self, sub: &str, role: Role, now_s: u64, ttl_s: u64) -> String {
        let claims = Issued {
            sub,
            exp: now_s + ttl_s,
            role: role.as_str(),
            iss: self.rules.issuer.as_deref(),
            aud: self.rules.audience.as_deref(),
        };
        // HS256 signing of a serializable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::Key(format!("cannot read {}: {e}", path.display())))
}

fn public_key(alg: Algorithm, pem: &[u8], rules: &ClaimRules) -> Result<Verifier, AuthError> {
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        other => return Err(AuthError::Key(format!("{other:?} is not supported: use RS256 or ES256"))),
    }
    .map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(Verifier::new(alg, key, rules))
}

/// The signature keys of a JWK set. A key for encryption (`"use":"enc"`) or of a kind this server does not
/// check (symmetric `oct` keys, unknown curves) is skipped; a set with no usable key is an error, since it
/// would refuse every token of its provider.
fn jwks(json: &[u8], rules: &ClaimRules) -> Result<Vec<(Option<String>, Algorithm, Verifier)>, String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        // The key's algorithm: as it says, else the usual one of its kind.
        let alg = match (jwk.common.key_algorithm.map(Algorithm::try_from), &jwk.algorithm) {
            (Some(Ok(a)), _) => a,
            (Some(Err(_)), _) => continue,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => continue,
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, _) => continue,
        };
        let asymmetric = matches!(
            (alg, &jwk.algorithm),
            (
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512,
                AlgorithmParameters::RSA(_)
            ) | (Algorithm::ES256 | Algorithm::ES384, AlgorithmParameters::EllipticCurve(_))
                | (Algorithm::EdDSA, AlgorithmParameters::OctetKeyPair(_))
        );
        if !asymmetric {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
        out.push((jwk.common.key_id.clone(), alg, Verifier::new(alg, key, rules)));
    }
    if out.is_empty() {
        return Err(format!("no signature key of RS*, PS*, ES256, ES384 or EdDSA among its {} keys", set.keys.len()));
    }
    Ok(out)
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

    /// A fresh ES256 key: its signing key and its JWK under `kid`.
    fn es256_jwk(kid: &str) -> (EncodingKey, serde_json::Value) {
        use base64::Engine;
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw(); // 0x04, x, y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                                     "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
        (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk)
    }

    fn with_kid(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn issuer_and_audience_are_checked_on_every_token_when_set() {
        let rules = ClaimRules { issuer: Some("https://idp.example/".into()), audience: Some("tickwire".into()) };
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
        let a = Authenticator::new(b"k", rules).with_public_key(Algorithm::ES256, &read("jwt-es256.pub")).unwrap();
        // The server's own tokens carry both.
        assert_eq!(a.verify(&a.issue("u", Role::User, now(), 60)).unwrap().user.as_ref(), "u");
        let hs = EncodingKey::from_secret(b"k");
        let ec = EncodingKey::from_ec_pem(&read("jwt-es256.key")).unwrap();
        let exp = now() + 60;
        for (alg, key) in [(Algorithm::HS256, &hs), (Algorithm::ES256, &ec)] {
            let t = |c: serde_json::Value| signed(alg, key, c);
            let ok = serde_json::json!({"sub": "u", "exp": exp, "iss": "https://idp.example/", "aud": "tickwire"});
            assert!(a.verify(&t(ok)).is_ok(), "{alg:?}");
            let many = serde_json::json!({"sub": "u", "exp": exp, "iss": "https://idp.example/", "aud": ["other", "tickwire"]});
            assert!(a.verify(&t(many)).is_ok(), "{alg:?}: one audience among several");
            let wrong_iss =
                serde_json::json!({"sub": "u", "exp": exp, "iss": "https://evil.example/", "aud": "tickwire"});
            assert_eq!(a.verify(&t(wrong_iss)), Err(AuthError::Issuer), "{alg:?}");
            let no_iss = serde_json::json!({"sub": "u", "exp": exp, "aud": "tickwire"});
            assert_eq!(a.verify(&t(no_iss)), Err(AuthError::Issuer), "{alg:?}");
            let wrong_aud =
                serde_json::json!({"sub": "u", "exp": exp, "iss": "https://idp.example/", "aud": "billing"});
            assert_eq!(a.verify(&t(wrong_aud)), Err(AuthError::Audience), "{alg:?}");
            let no_aud = serde_json::json!({"sub": "u", "exp": exp, "iss": "https://idp.example/"});
            assert_eq!(a.verify(&t(no_aud)), Err(AuthError::Audience), "{alg:?}");
        }
        // Without rules, a provider's `iss` and `aud` are not checked (a token for another audience too).
        let plain = Authenticator::hs256(b"k");
        let t = signed(Algorithm::HS256, &hs, serde_json::json!({"sub": "u", "exp": exp, "iss": "x", "aud": ["y"]}));
        assert!(plain.verify(&t).is_ok());
        // ... and its own tokens carry neither.
        use base64::Engine;
        let token = plain.issue("u", Role::User, now(), 60);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((body.get("iss"), body.get("aud"), &body["sub"]), (None, None, &serde_json::json!("u")));
    }

    #[test]
    fn a_key_set_picks_the_key_by_kid_and_rotates_on_reload() {
        let dir = std::env::temp_dir().join(format!("tickwire-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwks.json");
        let (k1, jwk1) = es256_jwk("k1");
        let (k2, jwk2) = es256_jwk("k2");
        std::fs::write(&file, serde_json::json!({"keys": [jwk1]}).to_string()).unwrap();
        let files = KeyFiles { public_key: None, jwks: Some(file.clone()) };
        let a = Authenticator::hs256(b"s").with_key_files(files).unwrap();
        let claims = serde_json::json!({"sub": "u-1", "exp": now() + 60});
        let t1 = with_kid(Algorithm::ES256, Some("k1"), &k1, claims.clone());
        let t2 = with_kid(Algorithm::ES256, Some("k2"), &k2, claims.clone());
        assert_eq!(a.verify(&t1).unwrap().user.as_ref(), "u-1");
        assert_eq!(a.verify(&t2), Err(AuthError::UnknownKey("k2".into())));
        // k2 signing under k1's id: a bad signature.
        assert!(matches!(
            a.verify(&with_kid(Algorithm::ES256, Some("k1"), &k2, claims.clone())),
            Err(AuthError::Invalid(_))
        ));
        // No kid: every key of the algorithm is tried.
        assert!(a.verify(&with_kid(Algorithm::ES256, None, &k1, claims.clone())).is_ok());
        assert!(matches!(a.verify(&with_kid(Algorithm::ES256, None, &k2, claims.clone())), Err(AuthError::Invalid(_))));
        // The provider rotates: k2 in, k1 out. A clone (another shard's) sees the reload.
        let other = a.clone();
        std::fs::write(&file, serde_json::json!({"keys": [jwk2]}).to_string()).unwrap();
        assert!(a.reload().unwrap().contains("k2:ES256"));
        assert!(other.verify(&t2).is_ok());
        assert_eq!(other.verify(&t1), Err(AuthError::UnknownKey("k1".into())));
        // A half-written file, or a set with no usable key, is refused and the keys in use stay.
        std::fs::write(&file, "{\"keys\": [").unwrap();
        assert!(matches!(a.reload(), Err(AuthError::Key(_))));
        std::fs::write(&file, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
        assert!(matches!(a.reload(), Err(AuthError::Key(_))));
        assert!(other.verify(&t2).is_ok());
        // An RS256 set as providers publish it (fixtures/jwt-rs256.jwks.json); its encryption key is skipped.
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let files = KeyFiles { public_key: None, jwks: Some(format!("{fixtures}jwt-rs256.jwks.json").into()) };
        let rsa_set = Authenticator::hs256(b"s").with_key_files(files).unwrap();
        assert_eq!(rsa_set.algorithms(), "HS256, key set [rsa-2026:RS256]");
        let rsa = EncodingKey::from_rsa_pem(&std::fs::read(format!("{fixtures}jwt-rs256.key")).unwrap()).unwrap();
        assert!(rsa_set.verify(&with_kid(Algorithm::RS256, Some("rsa-2026"), &rsa, claims.clone())).is_ok());
        // An ES256 token against an RS256-only set: the algorithm is refused.
        assert_eq!(rsa_set.verify(&t1), Err(AuthError::Algorithm("ES256".into())));
        std::fs::remove_dir_all(dir).ok();
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
