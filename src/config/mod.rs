//! Typed configuration. `file.rs` holds the raw TOML shape, `parse.rs` reads the text into it
//! (reporting every shape problem), `validate/` turns it into [`Config`], checking every value at
//! start-up so that nothing on the data path has to, and `files.rs` checks the files it names.
//!
//! Relative paths in the file are resolved against the config file's folder, so a config works
//! from any working directory. Earlier versions resolved them against
//! the working directory; [`Config::load`] warns when that would have found a different existing
//! file.

mod file;
pub mod files;
mod parse;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::fmt;

pub use crate::diag::{Diagnostics, Problem};
// Each section's validated type belongs to the part of ztgate that uses it; this module
// composes them (and only app-level code imports it).
pub use crate::identity::TrustedHopConfig;
pub use crate::policy::PolicyConfig;
pub use crate::server::{ListenerConfig, ProxyProtocolConfig, RuntimeModel};
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
    /// `[cluster_rate_limit]`: the rate limits above counted once for all replicas (Redis);
    /// `None`: per replica only.
    pub cluster_rate_limit: Option<crate::cluster_limit::ClusterLimitConfig>,
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
    /// Every file the config names, with the key and position that names it.
    pub files: Vec<FileRef>,
    /// Warnings for the operator (a relative path that the working directory would have resolved
    /// to another existing file), positioned in the config file; logged once at start and by `check`.
    pub warnings: Vec<Problem>,
}

/// A file the config names: the key that holds it, where, and how ztgate uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// As an operator reads it: `[tls] cert`, `[[upstream]] ca`, `[tls] crl_sources.file`.
    pub key: String,
    /// The value as written in the file.
    pub written: String,
    /// Resolved: `written` joined to the config file's folder unless absolute.
    pub path: PathBuf,
    /// 1-based line and column of the value in the config file.
    pub line: usize,
    pub col: usize,
    pub access: Access,
}

impl FileRef {
    /// `[tls] cert = "certs/server.pem": {what}`, positioned at the value.
    pub fn problem(&self, what: impl fmt::Display) -> Problem {
        Problem {
            line: self.line,
            col: self.col,
            message: format!("{} = {:?}: {what}", self.key, self.written),
        }
    }
}

/// How ztgate uses a file the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read at start (and reload): it must exist and be readable.
    Read,
    /// Written (the audit log, a downloaded CRL): created with its folders when missing, so it
    /// need not exist; it must not be a folder.
    Write,
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
    #[error("{}", .0.problems_text())]
    Invalid(files::Invalid),
}

impl Config {
    /// Reads and validates a config file, and checks that every file it names can be read (or,
    /// for one ztgate writes, that its folder exists), reporting every problem with its line and
    /// column. What the files contain is checked by [`files::check_contents`] (and by loading).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, true)
    }

    /// As [`Config::load`] without the file checks: `ztgate demo` mints the files it names.
    pub fn load_unchecked(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, check_files: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let v = validate::validate(path, &text);
        let mut problems = v.problems;
        if check_files {
            problems.extend(v.files.iter().filter_map(files::check_access));
        }
        let mut warnings = v.warnings;
        warnings.extend(files::working_directory_warnings(&v.files));
        match v.config {
            Some(mut cfg) if problems.is_empty() => {
                cfg.warnings = warnings;
                Ok(cfg)
            }
            _ => Err(ConfigError::Invalid(files::diagnostics(
                path, problems, v.files, warnings,
            ))),
        }
    }

    /// Validates config text; `path` is used for messages and as the base of relative paths.
    /// Does not look at the files the text names.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let v = validate::validate(path, text);
        match v.config {
            Some(mut cfg) if v.problems.is_empty() => {
                cfg.warnings = v.warnings;
                Ok(cfg)
            }
            _ => Err(ConfigError::Invalid(files::diagnostics(
                path, v.problems, v.files, v.warnings,
            ))),
        }
    }

    /// The file reference that resolved to `path`, to position a problem found while loading it.
    pub fn file_ref(&self, path: &Path) -> Option<&FileRef> {
        self.file_ref_by(path, &[])
    }

    /// The reference that resolved to `path` under one of `keys` (`[user_auth] jwks_ca`): when
    /// several keys name the same file, the problem is positioned at the key it is about. Any
    /// key naming `path` when none of `keys` does (or `keys` is empty).
    pub fn file_ref_by(&self, path: &Path, keys: &[&str]) -> Option<&FileRef> {
        self.files
            .iter()
            .find(|f| f.path == path && keys.contains(&f.key.as_str()))
            .or_else(|| self.files.iter().find(|f| f.path == path))
    }
}
