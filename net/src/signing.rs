//! Ed25519 signatures of order frames (aws-lc-rs). The signed bytes are exactly the bytes of the frame's
//! `data` JSON value as sent (the publisher's object, unchanged); the signature is the frame's
//! `"signature"` field, standard base64 with padding. The public key (32 bytes, base64) is served at
//! `GET /api/ws/signing-key`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// Signs order data with one Ed25519 key.
pub struct Signer {
    key: Ed25519KeyPair,
    public_b64: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ public: {} }}", self.public_b64)
    }
}

impl Signer {
    /// A new random key (its signatures verify only during this run).
    pub fn generate() -> anyhow::Result<Signer> {
        Ok(Signer::from_key(Ed25519KeyPair::generate().map_err(|_| anyhow::anyhow!("cannot make an Ed25519 key"))?))
    }

    /// The key of a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Signer> {
        let der = PrivateKeyDer::from_pem_file(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            anyhow::bail!("the signing key {} must be a PKCS#8 Ed25519 key", path.display())
        };
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
            .map_err(|e| anyhow::anyhow!("the signing key {} is not an Ed25519 key: {e}", path.display()))?;
        Ok(Signer::from_key(key))
    }

    fn from_key(key: Ed25519KeyPair) -> Signer {
        let public_b64 = base64::engine::general_purpose::STANDARD.encode(key.public_key().as_ref());
        Signer { key, public_b64 }
    }

    /// The signature of `data`, base64.
    pub fn sign_b64(&self, data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(data).as_ref())
    }

    /// The public key, base64 of its 32 bytes.
    pub fn public_b64(&self) -> &str {
        &self.public_b64
    }

    /// `{"algorithm":"Ed25519","public_key":"…","encoding":"base64",…}`, for `/api/ws/signing-key`.
    pub fn key_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Key<'a> {
            algorithm: &'static str,
            public_key: &'a str,
            encoding: &'static str,
            channels: [&'static str; 1],
            signed_bytes: &'static str,
        }
        let key = Key {
            algorithm: "Ed25519",
            public_key: &self.public_b64,
            encoding: "base64",
            channels: ["orders"],
            signed_bytes: "the bytes of the frame's data value as sent",
        };
        serde_json::to_vec(&key).unwrap_or_default()
    }
}

/// The sequencer's signer: the `data` of every `orders` update, signed with the server's key.
pub fn order_signer(signer: Arc<Signer>) -> tickwire_fanout::sequencer::SignFn {
    Box::new(move |topic, data| (topic.channel == tickwire_core::Channel::Orders).then(|| signer.sign_b64(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn signatures_verify_with_the_public_key() {
        let s = Signer::generate().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let public = b64.decode(s.public_b64()).unwrap();
        let sig = b64.decode(s.sign_b64(b"{\"order_id\":\"o-1\"}")).unwrap();
        let key = UnparsedPublicKey::new(&ED25519, &public);
        assert!(key.verify(b"{\"order_id\":\"o-1\"}", &sig).is_ok());
        assert!(key.verify(b"{\"order_id\":\"o-2\"}", &sig).is_err());
    }

    #[test]
    fn order_frames_carry_a_signature_of_their_data_bytes_that_an_independent_library_verifies() {
        use tickwire_core::protocol::canonical::Canonical;
        use tickwire_core::{Channel, Topic};
        let signer = Arc::new(Signer::generate().unwrap());
        let b64 = base64::engine::general_purpose::STANDARD;
        let public: [u8; 32] = b64.decode(signer.public_b64()).unwrap().try_into().unwrap();
        // ed25519-dalek, not the aws-lc-rs that signs.
        let verifier = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
        let mut seq = tickwire_fanout::sequencer::Sequencer::new(Canonical).with_signer(order_signer(signer));
        let data = bytes::Bytes::from(r#"{"order_id":"o-1","qty":100,"note":"é \"q\""}"#);
        let frame = seq.ingest(&Topic::new(Channel::Orders, "u-9"), data.clone(), None, 0).frame;
        let text = std::str::from_utf8(tickwire_fanout::frame::payload(&frame)).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        // The signed bytes are the frame's `data` as sent; the signature is the frame's last field.
        let sent = text.split_once(",\"data\":").unwrap().1.rsplit_once(",\"signature\":").unwrap().0;
        assert_eq!(sent.as_bytes(), &data[..]);
        let sig: [u8; 64] = b64.decode(v["signature"].as_str().unwrap()).unwrap().try_into().unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        verifier.verify_strict(sent.as_bytes(), &sig).expect("the signature verifies");
        assert!(verifier.verify_strict(sent.replace("100", "900").as_bytes(), &sig).is_err(), "other bytes do not");
        let quote = seq.ingest(&Topic::new(Channel::Quotes, "AAPL"), bytes::Bytes::from("{}"), None, 0).frame;
        let v: serde_json::Value = serde_json::from_slice(tickwire_fanout::frame::payload(&quote)).unwrap();
        assert!(v.get("signature").is_none(), "public market data is not signed");
    }

    #[test]
    fn loads_a_pkcs8_pem() {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        let path = std::env::temp_dir().join(format!("tickwire-sign-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        let a = Signer::from_pem_file(&path).unwrap();
        let b = Signer::from_pem_file(&path).unwrap();
        assert_eq!(a.public_b64(), b.public_b64());
        // What openssl writes for a given seed (RFC 8410 PKCS#8, built by hand): the public key is the one an
        // independent implementation (ed25519-dalek) derives from the seed.
        let seed = [7u8; 32];
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        let b64 = base64::engine::general_purpose::STANDARD;
        std::fs::write(
            &path,
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", b64.encode(&der)),
        )
        .unwrap();
        let expected = b64.encode(ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().as_bytes());
        assert_eq!(Signer::from_pem_file(&path).unwrap().public_b64(), expected);
        std::fs::write(&path, "nothing").unwrap();
        assert!(Signer::from_pem_file(&path).is_err());
        std::fs::remove_file(path).ok();
    }
}
