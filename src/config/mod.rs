//! Typed configuration. `file.rs` holds the raw TOML shape; `validate.rs` turns it into [`Config`],
//! checking every value at start-up so that nothing on the data path has to.
//!
//! Relative paths in the file are resolved against the process's working directory (as Envoy
//! does), so the shipped example works when ztgate is started from the repository root.

mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostics;
// Each section's validated type belongs to the part of ztgate that uses it; this module
// composes them (and only app-level code imports it).
pub use crate::identity::TrustedHopConfig;
pub use crate::policy::PolicyConfig;
pub use crate::server::{ListenerConfig, ProxyProtocolConfig};
pub use crate::telemetry::{LogConfig, LogFormat};
pub use crate::tls::{CrlScope, CrlSource, RevocationMode, TlsConfig};
pub use crate::upstream::{Pins, RouteConfig, UpstreamConfig, UpstreamProtocol, UserMode};

/// Everything ztgate needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from, for messages.
    pub source: PathBuf,
    pub listener: ListenerConfig,
    pub tls: TlsConfig,
    pub admin: Option<AdminConfig>,
    pub policy: PolicyConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Per-identity rate limit for every route without its own; `None`: unlimited.
    pub rate_limit: Option<crate::ratelimit::Rate>,
    /// The audit log; `None` when the config has no `[audit]` table (logged as a warning).
    pub audit: Option<crate::audit::AuditConfig>,
    /// Anomaly detection; `None` unless an `[anomaly]` table enables it.
    pub anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// Device posture; `None` unless a `[posture]` table configures a provider.
    pub posture: Option<crate::posture::PostureConfig>,
    /// Front proxies whose forwarded client certificates (XFCC) are accepted; `None`: none.
    pub trusted_hop: Option<TrustedHopConfig>,
    /// User tokens; `None` unless a `[user_auth]` table configures them.
    pub user_auth: Option<crate::user::UserAuthConfig>,
    /// How long in-flight requests may run after SIGTERM before connections are cut.
    pub drain_timeout: Duration,
    pub log: LogConfig,
    /// What happens to client-sent header fields (`[headers]`).
    pub headers: crate::headers::HeadersConfig,
}

/// `[admin]`: where the admin listener (health, metrics) binds.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Config {
    /// Reads and validates a config file, reporting every problem with its line and column.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Validates config text; `path` is used only in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(path, text).map_err(ConfigError::Invalid)
    }
}
