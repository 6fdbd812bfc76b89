//! TLS with rustls (aws-lc-rs the one crypto provider): the server's acceptor, TLS 1.3 only unless TLS 1.2
//! is allowed, and self-signed development certificates (`tickwire dev-cert`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_rustls::TlsAcceptor;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The acceptor of `cert` (PEM chain) and `key` (PEM private key). TLS 1.2 only with `allow_1_2`.
pub fn acceptor(cert: &Path, key: &Path, allow_1_2: bool) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read TLS key {}", key.display()))?;
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if allow_1_2 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS key does not match the certificate, or is of an unsupported type")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
        assert!(acceptor(&dir.join("c.pem"), &dir.join("k.pem"), false).is_ok());
        // A certificate with another certificate's key is refused at start.
        let (_, other) = dev_cert(&["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("k.pem"), other).unwrap();
        assert!(acceptor(&dir.join("c.pem"), &dir.join("k.pem"), false).is_err());
        assert!(acceptor(&dir.join("missing.pem"), &dir.join("k.pem"), false).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
