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
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key, config.tls_allow_1_2)?),
            _ => None,
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
