//! Raw TOML structs → typed [`Config`]: every value checked, every problem reported with its
//! position, all problems at once. One file per section; the shared value parsers are here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use toml::Spanned;

mod anomaly;
mod audit;
mod cluster_limit;
mod jwks;
mod listener;
mod posture;
mod tls;
mod upstream;

use super::file::{
    RawAnomaly, RawAudit, RawClusterRateLimit, RawHeaders, RawListener, RawPosture, RawProfile, RawRate, RawRoute,
    RawTls, RawUpstream, RawUserAuth,
};
use super::parse::KeyNames;
use super::{
    Access, AdminConfig, Config, CrlScope, CrlSource, FileRef, ListenerConfig, LogConfig, LogFormat, PolicyConfig,
    ProxyProtocolConfig, RevocationMode, RouteConfig, TlsConfig, UpstreamConfig, UpstreamProtocol, UserMode,
};
use crate::audit::{AuditConfig, CheckpointConfig, Fsync, OnFull, RespondAfter, SinkConfig};
use crate::diag::{Problem, parse_duration};
use crate::headers::{HeadersConfig, Underscores};
use crate::policy::path::PathParameters;
use crate::tls::profile::{ProfileConfig, Rule};

/// The problems of one config text, and the files it names (resolved against `base`): the
/// section validators push to it as to [`crate::diag::Collector`], and [`non_empty_path`]
/// records each path with the key that holds it.
pub(super) struct Collector<'a> {
    inner: crate::diag::Collector<'a>,
    text: &'a str,
    names: KeyNames,
    /// The config file's folder: relative paths are relative to it.
    base: PathBuf,
    files: Vec<FileRef>,
    /// Risky but valid values (`ztgate check` prints them as `warning:`; `run` logs them).
    warnings: Vec<Problem>,
}

impl<'a> Collector<'a> {
    fn new(text: &'a str, base: &Path) -> Self {
        Self {
            inner: crate::diag::Collector::new(text),
            text,
            names: KeyNames::new(),
            base: base.to_path_buf(),
            files: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.inner.push(span, message);
    }

    /// A warning at `span` (named by its key): the config is valid, but probably not meant so.
    pub(super) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let warning = self.inner.at(span, message);
        self.warnings.push(warning);
    }

    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Resolves a path value and records it as a file ztgate reads (or writes).
    fn file(&mut self, v: &Spanned<String>, access: Access) -> PathBuf {
        let written = v.get_ref();
        if written.trim().is_empty() {
            self.push(v.span(), "path must not be empty");
            return PathBuf::from(written);
        }
        let path = super::files::tidy(&self.base.join(written));
        let (line, col) = crate::diag::line_col(self.text, v.span().start);
        let key = self
            .names
            .get(&v.span().start)
            .cloned()
            .unwrap_or_else(|| "a path".to_string());
        self.files.push(FileRef {
            key,
            written: written.clone(),
            path: path.clone(),
            line,
            col,
            access,
        });
        path
    }
}

/// What validating a config text found.
pub(super) struct Validated {
    /// `Some` when there were no problems.
    pub(super) config: Option<Config>,
    /// Sorted by line and column.
    pub(super) problems: Vec<Problem>,
    /// Every path the text names, resolved, in the order met (also when there were problems, so
    /// that missing files are reported with the rest).
    pub(super) files: Vec<FileRef>,
    /// Risky values, sorted by line and column.
    pub(super) warnings: Vec<Problem>,
}

pub(super) fn validate(path: &Path, text: &str) -> Validated {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut c = Collector::new(text, base);
    let Some((parsed, names)) = super::parse::parse(&mut c.inner, text) else {
        return Validated {
            config: None,
            problems: c.inner.into_problems(),
            files: Vec::new(),
            warnings: Vec::new(),
        };
    };
    c.names = names;
    let raw = parsed.raw;
    let skipped = |name: &str| parsed.skipped.contains(name);

    let listener = match &raw.listener {
        Some(l) => listener::listener(&mut c, l.get_ref()),
        None => {
            if !skipped("listener") {
                c.push(0..0, "missing [listener] table (address = \"IP:PORT\")");
            }
            None
        }
    };
    let tls = match &raw.tls {
        Some(t) => tls::tls(&mut c, t.get_ref()),
        None => {
            if !skipped("tls") {
                c.push(0..0, "missing [tls] table (cert, key, client_ca)");
            }
            None
        }
    };
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| addr(&mut c, &a.address).map(|address| AdminConfig { address }));
    let policy = match &raw.policy {
        Some(p) => {
            let p = p.get_ref();
            let reload_interval = p
                .reload_interval
                .as_ref()
                .map_or(Some(Duration::from_secs(1)), |d| duration(&mut c, d));
            reload_interval.map(|reload_interval| PolicyConfig {
                file: non_empty_path(&mut c, &p.file),
                reload_interval,
            })
        }
        None if skipped("policy") => None,
        None => {
            // Secure by default: no policy is never "allow everyone".
            c.push(
                0..0,
                "missing [policy] table: ztgate refuses to start without an explicit access \
                 policy (add `[policy]` with `file = \"policy.toml\"`, relative to this file's folder)",
            );
            None
        }
    };
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .filter_map(|u| upstream::upstream(&mut c, u))
        .collect();
    let routes = upstream::routes(&mut c, &raw.routes, &raw.upstreams, skipped("upstream"));
    if raw.upstreams.is_empty() && !skipped("upstream") {
        c.push(0..0, "no [[upstream]] defined: ztgate needs at least one to forward to");
    }
    if raw.routes.is_empty() && !skipped("route") {
        c.push(0..0, "no [[route]] defined: every request would get 404");
    }
    let drain_timeout = raw
        .shutdown
        .as_ref()
        .and_then(|s| s.drain_timeout.as_ref())
        .map_or(Some(Duration::from_secs(30)), |d| duration(&mut c, d));
    let log = raw.log.as_ref().map_or(
        Some(LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }),
        |l| {
            let format = match l.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
                None | Some(("pretty", _)) => LogFormat::Pretty,
                Some(("json", _)) => LogFormat::Json,
                Some((other, span)) => {
                    c.push(
                        span,
                        format!("unknown log format `{other}` (expected \"pretty\" or \"json\")"),
                    );
                    LogFormat::Pretty
                }
            };
            let level = l.level.as_ref().map_or("info".to_string(), |l| l.get_ref().clone());
            Some(LogConfig { format, level })
        },
    );

    let headers = listener::headers(&mut c, raw.headers.as_ref());
    let audit = raw.audit.as_ref().and_then(|a| audit::audit(&mut c, a));
    let anomaly = raw.anomaly.as_ref().and_then(|a| anomaly::anomaly(&mut c, a));
    let rate_limit = raw.rate_limit.as_ref().and_then(|r| upstream::rate(&mut c, r));
    let posture = raw.posture.as_ref().and_then(|p| posture::posture(&mut c, p));
    // The budgets `[cluster_rate_limit]` shares, by name: `[rate_limit]` and each route's own.
    let budgets: Vec<(String, u32)> = rate_limit
        .iter()
        .map(|r| ("[rate_limit]".to_string(), r.burst.get()))
        .chain(routes.iter().filter_map(|r| {
            r.rate_limit
                .map(|rate| (format!("route `{}`", r.name), rate.burst.get()))
        }))
        .collect();
    let cluster_rate_limit = raw
        .cluster_rate_limit
        .as_ref()
        .and_then(|r| cluster_limit::cluster_limit(&mut c, r, &budgets));
    let user_auth = raw.user_auth.as_ref().and_then(|u| posture::user_auth(&mut c, u));
    let trusted_hop = raw.trusted_hop.as_ref().map(|t| {
        let t_ref = t.get_ref();
        for id in &t_ref.spiffe_ids {
            if crate::identity::SpiffeId::parse(id.get_ref()).is_err() {
                c.push(
                    id.span(),
                    format!("`{}` is not a SPIFFE ID (spiffe://trust-domain/path)", id.get_ref()),
                );
            }
        }
        let fingerprints: Vec<String> = t_ref
            .fingerprints
            .iter()
            .filter_map(|f| {
                let v = crate::identity::parse_fingerprint(f.get_ref());
                if v.is_none() {
                    c.push(f.span(), "a fingerprint is a SHA-256 in hex (64 digits, `:` allowed)");
                }
                v
            })
            .collect();
        if t_ref.spiffe_ids.is_empty() && fingerprints.is_empty() {
            c.push(
                t.span(),
                "[trusted_hop] lists no front proxy (spiffe_ids or fingerprints)",
            );
        }
        let cache_entries = match &t_ref.cache_entries {
            None => 10_000,
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or_else(|_| {
                c.push(n.span(), "cache_entries must be 0 (no cache) or more");
                0
            }),
        };
        crate::config::TrustedHopConfig {
            spiffe_ids: t_ref.spiffe_ids.iter().map(|s| s.get_ref().clone()).collect(),
            fingerprints,
            cache_entries,
        }
    });
    if user_auth.is_none()
        && raw.user_auth.is_none()
        && let Some(r) = raw
            .routes
            .iter()
            .find(|r| r.get_ref().user.as_ref().is_some_and(|u| u.get_ref() != "off"))
    {
        c.push(
            r.get_ref().user.as_ref().map_or(0..0, Spanned::span),
            "this route asks for users but there is no [user_auth] table (jwks, issuer, audience)",
        );
    }
    if !c.is_empty() {
        c.warnings.sort_by_key(|w| (w.line, w.col));
        return Validated {
            config: None,
            problems: c.inner.into_problems(),
            files: c.files,
            warnings: c.warnings,
        };
    }
    let config = match (listener, tls, policy, drain_timeout, log) {
        (Some(listener), Some(tls), Some(policy), Some(drain_timeout), Some(log)) => Some(Config {
            source: path.to_path_buf(),
            listener,
            tls,
            admin,
            policy,
            upstreams,
            routes,
            rate_limit,
            cluster_rate_limit,
            audit,
            anomaly,
            posture,
            user_auth,
            trusted_hop,
            drain_timeout,
            log,
            headers,
            files: c.files.clone(),
            warnings: Vec::new(),
        }),
        // Every `None` above pushed a problem, so this arm is unreachable in practice; it still
        // fails closed rather than panicking.
        _ => {
            c.push(0..0, "invalid configuration");
            None
        }
    };
    c.warnings.sort_by_key(|w| (w.line, w.col));
    Validated {
        config,
        problems: c.inner.into_problems(),
        files: c.files,
        warnings: c.warnings,
    }
}

fn addr(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<SocketAddr> {
    match v.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            c.push(
                v.span(),
                format!(
                    "invalid address `{}`: expected IP:PORT, e.g. 127.0.0.1:8443",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn duration(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            c.push(v.span(), "duration must be greater than zero");
            None
        }
        Err(e) => {
            c.push(v.span(), e);
            None
        }
    }
}

/// A duration or `"off"` (`Some(None)`); `None` after reporting a bad value.
fn optional_duration(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<Option<Duration>> {
    if v.get_ref() == "off" {
        Some(None)
    } else {
        duration(c, v).map(Some)
    }
}

/// A file ztgate reads, relative to the config file's folder unless absolute.
fn non_empty_path(c: &mut Collector<'_>, v: &Spanned<String>) -> PathBuf {
    c.file(v, Access::Read)
}

/// TLS client settings of a connection ztgate makes (an upstream, the posture service, Redis)
/// only mean something when that connection is TLS (`tls`): each of `fields` set without it is
/// a problem; `what` names the connection in the message ("an https:// upstream").
fn tls_only(c: &mut Collector<'_>, tls: bool, what: &str, fields: &[(&str, &Option<Spanned<String>>)]) {
    for (field, value) in fields {
        if let (Some(v), false) = (value, tls) {
            c.push(v.span(), format!("`{field}` only applies to {what}"));
        }
    }
}

/// ztgate's own certificate for a TLS connection it makes: `client_cert` and `client_key` both
/// (their paths) or neither; one without the other is a mistake, not half an mTLS setup.
fn client_pair(
    c: &mut Collector<'_>,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
) -> Option<(PathBuf, PathBuf)> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some((non_empty_path(c, cert), non_empty_path(c, key))),
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => {
            c.push(v.span(), "`client_cert` and `client_key` must be set together");
            None
        }
    }
}

/// A file ztgate writes (the audit log, a downloaded CRL): its folder must exist.
fn output_path(c: &mut Collector<'_>, v: &Spanned<String>) -> PathBuf {
    c.file(v, Access::Write)
}

/// `1048576`, `512KiB`, `100MiB`, `1GiB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size `{s}` must start with a number, e.g. `100MiB`"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("size `{s}` must be positive and not overflow"))
}
