//! The security state every shard shares: connection limits, the TLS acceptor, the API keys and the
//! order-signing key, built once from the configuration at start.

use std::sync::Arc;

use anyhow::Context;
use futures_rustls::TlsAcceptor;

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::limits::ConnLimits;
use crate::signing::Signer;

/// See the module docs.
#[derive(Clone)]
pub struct Security {
    pub limits: Arc<ConnLimits>,
    /// `Some`: every connection speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// The certificate the acceptor serves, which SIGHUP reloads.
    pub certificate: Option<Arc<crate::tls::Certificate>>,
    pub api_keys: ApiKeys,
    pub signer: Arc<Signer>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .field("api_keys", &self.api_keys)
            .field("signer", &self.signer)
            .finish()
    }
}

impl Security {
    pub fn from_config(config: &Config) -> anyhow::Result<Security> {
        let (tls, certificate) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let (acceptor, certificate) = crate::tls::acceptor(cert, key, config.tls_allow_1_2)?;
                (Some(acceptor), Some(certificate))
            }
            _ => (None, None),
        };
        let signer = match &config.signing_key {
            Some(path) => Signer::from_pem_file(path)?,
            None => Signer::generate().context("order signing key")?,
        };
        Ok(Security {
            limits: Arc::new(ConnLimits::new(
                config.max_connections,
                config.max_connections_per_user,
                config.max_connections_per_ip,
            )),
            tls,
            certificate,
            api_keys: ApiKeys::new(&config.api_keys),
            signer: Arc::new(signer),
        })
    }

    /// `ws` or `wss`.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

/// One log line per security setting that matters when deploying.
pub fn log_summary(config: &Config, security: &Security, auth: &crate::auth::Authenticator) {
    tracing::info!(
        tls = if security.tls.is_some() { if config.tls_allow_1_2 { "1.3+1.2" } else { "1.3" } } else { "off" },
        jwt = %auth.algorithms(),
        anonymous = config.allow_anonymous,
        api_keys = config.api_keys.len(),
        max_connections = config.max_connections,
        per_user = config.max_connections_per_user,
        per_ip = config.max_connections_per_ip,
        messages_per_s = config.max_messages_per_s,
        origins = config.allowed_origins.len(),
        "security"
    );
    tracing::info!(public_key = %security.signer.public_b64(), persistent = config.signing_key.is_some(), "order signing key");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    /// The error of loading `toml` as the config file and building the security state from it.
    fn error_of(jail: &mut figment::Jail, toml: &str) -> String {
        jail.create_file("t.toml", toml).unwrap();
        let args = ServeArgs { config: Some("t.toml".into()), ..Default::default() };
        match Config::load(&args).and_then(|c| Security::from_config(&c)) {
            Ok(_) => panic!("{toml} must not load"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn api_keys_come_from_the_file_and_bad_security_settings_are_clear_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "api_keys = [\"from-file-key-1=filer\"]\ntoken_ttl_s = 60\n")?;
            let args = ServeArgs { config: Some("t.toml".into()), ..Default::default() };
            let config = Config::load(&args).unwrap();
            let security = Security::from_config(&config).unwrap();
            assert_eq!(security.api_keys.user("from-file-key-1").as_deref(), Some("filer"));
            assert_eq!(config.token_ttl_s, 60);
            for (toml, says) in [
                ("tls_cert = \"c.pem\"", "--tls-cert and --tls-key go together"),
                ("api_keys = [\"short=u\"]", "--api-key must be KEY=USER"),
                ("api_keys = [\"no-equals-sign\"]", "--api-key must be KEY=USER"),
                ("jwt_public_key = \"k.pem\"\njwt_algorithm = \"HS256\"", "--jwt-algorithm RS256 or ES256"),
                ("jwt_public_key = \"k.pem\"", "--jwt-algorithm RS256 or ES256"),
                ("tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"", "cannot read TLS certificate"),
                ("signing_key = \"/nonexistent/s.pem\"", "cannot read the signing key"),
            ] {
                let err = error_of(jail, toml);
                assert!(err.contains(says), "{toml}: {err}");
            }
            Ok(())
        });
    }
}
