//! Device posture: the second factor. The certificate says which device (or workload) this is;
//! a [`PostureProvider`] says whether that device is healthy enough — managed, encrypted, up to
//! date, seen recently. Policy rules state what they require (`posture = { ... }`); the posture
//! layer looks the device up before the policy runs, and the policy judges the answer.
//!
//! Providers: an inventory file ([`inventory`]), an HTTP posture service ([`service`]) and a
//! signed assertion the client presents ([`assertion`]). Whatever the provider, a lookup that
//! cannot answer yields [`Unavailable`], which every requirement treats as failed: fail closed.

pub mod assertion;
pub mod inventory;
pub mod service;
mod transport;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::Deserialize;

use crate::identity::PeerIdentity;

/// What is known about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePosture {
    pub managed: Option<bool>,
    pub disk_encrypted: Option<bool>,
    pub firewall: Option<bool>,
    /// Lowercase (`macos`, `windows`, `linux`, ...).
    pub os: Option<String>,
    pub os_version: Option<Version>,
    pub last_seen: Option<SystemTime>,
    pub tags: Vec<String>,
}

/// The posture record as inventories, posture services and assertions write it (JSON or TOML).
/// Unknown keys are refused: a misspelt `disk_encripted` must not read as "not encrypted" in one
/// place and pass silently in another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPosture {
    pub managed: Option<bool>,
    pub disk_encrypted: Option<bool>,
    pub firewall: Option<bool>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    /// RFC 3339 timestamp, or seconds since the Unix epoch.
    pub last_seen: Option<Timestamp>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Unix(u64),
    Rfc3339(String),
}

impl RawPosture {
    pub fn into_posture(self) -> Result<DevicePosture, String> {
        let os_version = match self.os_version {
            Some(v) => Some(Version::parse(&v).ok_or_else(|| format!("os_version `{v}` is not a dotted version"))?),
            None => None,
        };
        let last_seen = match self.last_seen {
            None => None,
            Some(Timestamp::Unix(s)) => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            Some(Timestamp::Rfc3339(s)) => Some(parse_rfc3339(&s)?),
        };
        Ok(DevicePosture {
            managed: self.managed,
            disk_encrypted: self.disk_encrypted,
            firewall: self.firewall,
            os: self.os.map(|o| o.to_ascii_lowercase()),
            os_version,
            last_seen,
            tags: self.tags,
        })
    }
}

fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("last_seen `{s}` is not an RFC 3339 timestamp: {e}"))?;
    let secs = t.unix_timestamp();
    let nanos = t.nanosecond();
    u64::try_from(secs)
        .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, nanos))
        .map_err(|_| format!("last_seen `{s}` is before 1970"))
}

/// A dotted numeric version (`14.2.1`); missing components compare as zero, a trailing
/// non-numeric suffix of a component (`1-beta`) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version([u32; 4]);

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = [0u32; 4];
        let mut n = 0;
        for comp in s.trim().split('.') {
            let digits = comp.bytes().take_while(u8::is_ascii_digit).count();
            let slot = parts.get_mut(n)?;
            *slot = comp.get(..digits)?.parse().ok()?;
            n += 1;
            if digits < comp.len() {
                break; // `14.2-beta`: the suffix ends the version
            }
        }
        (n > 0).then_some(Self(parts))
    }
}

/// Why a device's posture is not known. Every requirement fails on it (fail closed); the code is
/// what the audit record and the metric show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The certificate has no value for the configured device id (e.g. no URI SAN).
    NoDeviceId,
    /// The provider has no record of the device.
    DeviceUnknown,
    ServiceDown,
    ServiceTimeout,
    /// The posture service answered something that is not a posture record.
    ServiceGarbage,
    AssertionMissing,
    AssertionMalformed,
    AssertionExpired,
    /// Signed by no key in the JWKS (or the signature does not verify).
    AssertionBadSignature,
    /// No `cnf.x5t#S256` claim: the assertion is not bound to a certificate.
    AssertionUnbound,
    /// Bound to another certificate than the connection's (a replayed assertion).
    AssertionWrongCert,
    AssertionWrongIssuer,
    /// The assertion key set is fetched and was never loaded (the MDM's JWKS URL has not
    /// answered since start-up).
    AssertionKeysUnavailable,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::NoDeviceId => "no-device-id",
            Unavailable::DeviceUnknown => "device-unknown",
            Unavailable::ServiceDown => "service-down",
            Unavailable::ServiceTimeout => "service-timeout",
            Unavailable::ServiceGarbage => "service-garbage",
            Unavailable::AssertionMissing => "assertion-missing",
            Unavailable::AssertionMalformed => "assertion-malformed",
            Unavailable::AssertionExpired => "assertion-expired",
            Unavailable::AssertionBadSignature => "assertion-bad-signature",
            Unavailable::AssertionUnbound => "assertion-unbound",
            Unavailable::AssertionWrongCert => "assertion-wrong-certificate",
            Unavailable::AssertionWrongIssuer => "assertion-wrong-issuer",
            Unavailable::AssertionKeysUnavailable => "assertion-keys-unavailable",
        }
    }
}

/// The outcome of one lookup; inserted into the request for the policy to judge.
pub type PostureResult = Result<Arc<DevicePosture>, Unavailable>;

pub type LookupFuture = Pin<Box<dyn Future<Output = PostureResult> + Send>>;

/// A lookup answered at once (inventory, cache hit, assertion) or one that has to wait (a
/// posture service). The split keeps the common case free of a boxed future.
pub enum Lookup {
    Ready(PostureResult),
    Pending(LookupFuture),
}

/// What a provider gets to look at.
pub struct Query<'a> {
    pub device_id: &'a str,
    /// The client certificate's SHA-256, lowercase hex (for certificate-bound assertions).
    pub fingerprint: &'a str,
    pub headers: &'a HeaderMap,
}

pub trait PostureProvider: Send + Sync + 'static {
    /// Short name for metrics and audit (`inventory`, `service`, `assertion`).
    fn name(&self) -> &'static str;
    fn lookup(&self, q: &Query<'_>) -> Lookup;
}

/// Which part of the client certificate names the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceIdSource {
    /// SHA-256 of the certificate, lowercase hex (the default: unique per issued certificate).
    Fingerprint,
    /// Serial number, lowercase hex.
    Serial,
    /// The first URI SAN (e.g. a SPIFFE ID or an MDM device URN).
    UriSan,
    /// The first DNS SAN.
    DnsSan,
}

impl DeviceIdSource {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fingerprint" => Self::Fingerprint,
            "serial" => Self::Serial,
            "uri_san" => Self::UriSan,
            "dns_san" => Self::DnsSan,
            _ => return None,
        })
    }

    /// The device id of `peer`, borrowed from it: no allocation per request.
    pub fn device_id(self, peer: &PeerIdentity) -> Option<&str> {
        match self {
            Self::Fingerprint => Some(&peer.fingerprint_sha256),
            Self::Serial => Some(&peer.serial),
            Self::UriSan => peer.uris.first().map(String::as_str),
            Self::DnsSan => peer.dns.first().map(String::as_str),
        }
    }
}

/// Normalises a device id written in a file or returned by a service: fingerprints and serials
/// are compared as lowercase hex without `:` separators, whatever way they were written.
pub fn normalize_id(source: DeviceIdSource, id: &str) -> String {
    match source {
        DeviceIdSource::Fingerprint | DeviceIdSource::Serial => id
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        DeviceIdSource::UriSan | DeviceIdSource::DnsSan => id.to_string(),
    }
}

/// `[posture]` in the config, validated.
#[derive(Debug, Clone)]
pub struct PostureConfig {
    pub device_id: DeviceIdSource,
    pub provider: ProviderConfig,
}

#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Inventory { file: PathBuf, reload_interval: Duration },
    Service(service::ServiceConfig),
    Assertion(assertion::AssertionConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum PostureError {
    #[error("device inventory {path}: {message}")]
    Inventory { path: PathBuf, message: String },
    #[error("posture {0}")]
    Jwks(#[from] crate::jwt::JwksError),
    /// The posture service's CA, client certificate or key could not be loaded.
    #[error("posture service TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// One device posture requirement of a policy rule, compiled. Every stated attribute must be
/// known and satisfied; an attribute the provider does not report fails the requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub managed: Option<bool>,
    pub disk_encrypted: Option<bool>,
    pub firewall: Option<bool>,
    /// Any of these (lowercase).
    pub os: Vec<String>,
    pub min_os_version: Option<Version>,
    pub max_staleness: Option<Duration>,
    /// All of these.
    pub tags: Vec<String>,
}

impl Requirement {
    /// `Ok` if `facts` satisfy every stated requirement; else the first one that failed (its key
    /// in the policy file, or why posture is unavailable).
    pub fn check(&self, facts: Option<&PostureResult>, now: SystemTime) -> Result<(), &'static str> {
        let p = match facts {
            None => return Err("posture-unavailable"),
            Some(Err(u)) => return Err(u.as_str()),
            Some(Ok(p)) => p,
        };
        let flag = |want: Option<bool>, have: Option<bool>, key: &'static str| match want {
            Some(w) if have != Some(w) => Err(key),
            _ => Ok(()),
        };
        flag(self.managed, p.managed, "managed")?;
        flag(self.disk_encrypted, p.disk_encrypted, "disk_encrypted")?;
        flag(self.firewall, p.firewall, "firewall")?;
        if !self.os.is_empty() && !p.os.as_ref().is_some_and(|os| self.os.iter().any(|o| o == os)) {
            return Err("os");
        }
        if let Some(min) = self.min_os_version
            && p.os_version.is_none_or(|v| v < min)
        {
            return Err("min_os_version");
        }
        if let Some(max) = self.max_staleness {
            let fresh = p
                .last_seen
                .is_some_and(|seen| now.duration_since(seen).map_or(true, |age| age <= max));
            if !fresh {
                return Err("max_staleness");
            }
        }
        if !self.tags.iter().all(|t| p.tags.contains(t)) {
            return Err("tags");
        }
        Ok(())
    }
}

/// The configured provider, built.
pub struct Built {
    pub provider: Arc<dyn PostureProvider>,
    /// The assertion header, which only ztgate reads (removed before forwarding).
    pub consumed_header: Option<http::HeaderName>,
    /// The file to watch for changes, if the provider reads one.
    pub reloadable: Option<Reloadable>,
}

/// Builds the configured provider. Inventory and JWKS files are read here, so a broken one stops
/// `run` and `check` with a clear error.
pub fn build(cfg: &PostureConfig) -> Result<Built, PostureError> {
    Ok(match &cfg.provider {
        ProviderConfig::Inventory { file, .. } => {
            let inv = Arc::new(inventory::Inventory::load(file, cfg.device_id)?);
            Built {
                provider: inv.clone(),
                consumed_header: None,
                reloadable: Some(Reloadable::Inventory(inv)),
            }
        }
        ProviderConfig::Service(s) => Built {
            provider: Arc::new(service::Service::new(s.clone())?),
            consumed_header: None,
            reloadable: None,
        },
        ProviderConfig::Assertion(a) => {
            let provider = Arc::new(assertion::Assertion::load(a.clone())?);
            Built {
                provider: provider.clone(),
                consumed_header: Some(a.header.clone()),
                reloadable: Some(Reloadable::Assertion(provider)),
            }
        }
    })
}

/// A part with keys or devices from outside: reloaded when its file changes, or (a fetched key
/// set) refreshed by [`crate::jwt::Jwks::refresh`]; the last good one is kept on error.
#[derive(Clone)]
pub enum Reloadable {
    Inventory(Arc<inventory::Inventory>),
    Assertion(Arc<assertion::Assertion>),
    User(Arc<crate::user::UserAuth>),
}

impl Reloadable {
    pub fn what(&self) -> &'static str {
        match self {
            Reloadable::Inventory(_) => "device inventory",
            Reloadable::Assertion(_) => "posture assertion JWKS",
            Reloadable::User(_) => "user token JWKS",
        }
    }

    /// The file to watch; `None` for a fetched key set.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Reloadable::Inventory(i) => Some(i.path().to_path_buf()),
            Reloadable::Assertion(a) => a.jwks().path().map(Path::to_path_buf),
            Reloadable::User(u) => u.jwks().path().map(Path::to_path_buf),
        }
    }

    /// The key set, when it is fetched from a URL rather than read from a file.
    pub fn remote_jwks(&self) -> Option<Arc<crate::jwt::Jwks>> {
        let jwks = match self {
            Reloadable::Inventory(_) => return None,
            Reloadable::Assertion(a) => a.jwks(),
            Reloadable::User(u) => u.jwks(),
        };
        jwks.is_remote().then_some(jwks)
    }

    /// Forgets verified tokens (after their key set changed).
    pub fn clear_cache(&self) {
        match self {
            Reloadable::Inventory(_) => {}
            Reloadable::Assertion(a) => a.clear_cache(),
            Reloadable::User(u) => u.clear_cache(),
        }
    }

    /// Reads the file again; returns how many devices or keys it holds. After a key change the
    /// caches of verified tokens are emptied, so a removed key stops working at once.
    pub fn reload(&self) -> Result<usize, PostureError> {
        match self {
            Reloadable::Inventory(i) => i.reload(),
            Reloadable::Assertion(a) => {
                let n = a.jwks().reload()?;
                a.clear_cache();
                Ok(n)
            }
            Reloadable::User(u) => {
                let n = u.jwks().reload()?;
                u.clear_cache();
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests;
