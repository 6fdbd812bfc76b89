//! TLS with rustls (aws-lc-rs the one crypto provider): the server's acceptor, TLS 1.3 only unless TLS 1.2
//! is allowed, and self-signed development certificates (`tickwire dev-cert`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use futures_rustls::TlsAcceptor;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server's certificate and key, read from their files again by [`Certificate::reload`] (SIGHUP): new
/// handshakes take the new ones, connections already made keep theirs.
#[derive(Debug)]
pub struct Certificate {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl Certificate {
    /// Reads the files again; on an error (a half-written file, a key of another certificate) the
    /// certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = certified_key(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate chain in use (its first, the server's, first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).cert.clone()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read TLS key {}", key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .context("the TLS key does not match the certificate, or is of an unsupported type")
}

/// The acceptor of `cert` (PEM chain) and `key` (PEM private key), and the certificate it serves (to
/// reload). TLS 1.2 only with `allow_1_2`.
pub fn acceptor(cert: &Path, key: &Path, allow_1_2: bool) -> anyhow::Result<(TlsAcceptor, Arc<Certificate>)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = Arc::new(Certificate {
        current: RwLock::new(Arc::new(certified_key(cert, key, &provider)?)),
        cert: cert.to_owned(),
        key: key.to_owned(),
        provider: provider.clone(),
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if allow_1_2 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), certificate))
}

/// A self-signed certificate for `hosts` and its private key, both PEM.
pub fn dev_cert(hosts: &[String]) -> anyhow::Result<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec()).context("cannot make a certificate")?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_loads_as_an_acceptor() {
        let dir = std::env::temp_dir().join(format!("tickwire-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = dev_cert(&["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), &key).unwrap();
        let (_, certificate) = acceptor(&dir.join("c.pem"), &dir.join("k.pem"), false).unwrap();
        let first = certificate.chain();
        // A certificate with another certificate's key is refused, at start and on reload (the one in use
        // stays).
        let (other_cert, other) = dev_cert(&["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("k.pem"), &other).unwrap();
        assert!(acceptor(&dir.join("c.pem"), &dir.join("k.pem"), false).is_err());
        assert!(certificate.reload().is_err());
        assert_eq!(certificate.chain(), first);
        // The pair replaced whole: the new one serves.
        std::fs::write(dir.join("c.pem"), other_cert).unwrap();
        certificate.reload().unwrap();
        assert_ne!(certificate.chain(), first);
        assert!(acceptor(&dir.join("missing.pem"), &dir.join("k.pem"), false).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
