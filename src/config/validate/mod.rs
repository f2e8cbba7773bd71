//! Raw TOML structs → typed [`Config`]: every value checked, every problem reported with its
//! position, all problems at once. One file per section; the shared value parsers are here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use toml::Spanned;

mod anomaly;
mod audit;
mod listener;
mod posture;
mod tls;
mod upstream;

use super::file::{
    RawAnomaly, RawAudit, RawConfig, RawHeaders, RawListener, RawPosture, RawProfile, RawRate, RawRoute, RawTls,
    RawUpstream, RawUserAuth,
};
use super::{
    AdminConfig, Config, CrlScope, CrlSource, ListenerConfig, LogConfig, LogFormat, PolicyConfig, ProxyProtocolConfig,
    RevocationMode, RouteConfig, TlsConfig, UpstreamConfig, UpstreamProtocol, UserMode,
};
use crate::audit::{AuditConfig, CheckpointConfig, Fsync, OnFull, RespondAfter, SinkConfig};
use crate::diag::{Collector, Diagnostics, parse_duration};
use crate::headers::{HeadersConfig, Underscores};
use crate::policy::path::PathParameters;
use crate::tls::profile::{ProfileConfig, Rule};

pub(super) fn validate(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let mut c = Collector::new(text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            c.push_toml(&e, &[]);
            return Err(finish_err(c, path));
        }
    };

    let listener = listener::listener(&mut c, raw.listener.get_ref());
    let tls = tls::tls(&mut c, raw.tls.get_ref());
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
        None => {
            // Secure by default: no policy is never "allow everyone".
            c.push(
                0..0,
                "missing [policy] table: ztgate refuses to start without an explicit access \
                 policy (add `[policy]` with `file = \"config/policy.toml\"`)",
            );
            None
        }
    };
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .filter_map(|u| upstream::upstream(&mut c, u))
        .collect();
    let routes = upstream::routes(&mut c, &raw.routes, &raw.upstreams);
    if raw.upstreams.is_empty() {
        c.push(0..0, "no [[upstream]] defined: ztgate needs at least one to forward to");
    }
    if raw.routes.is_empty() {
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
        return Err(finish_err(c, path));
    }
    match (listener, tls, policy, drain_timeout, log) {
        (Some(listener), Some(tls), Some(policy), Some(drain_timeout), Some(log)) => Ok(Config {
            source: path.to_path_buf(),
            listener,
            tls,
            admin,
            policy,
            upstreams,
            routes,
            rate_limit,
            audit,
            anomaly,
            posture,
            user_auth,
            trusted_hop,
            drain_timeout,
            log,
            headers,
        }),
        // Every `None` above pushed a problem, so this arm is unreachable in practice; it still
        // fails closed rather than panicking.
        _ => {
            let mut c = Collector::new(text);
            c.push(0..0, "invalid configuration");
            Err(finish_err(c, path))
        }
    }
}

fn finish_err(c: Collector<'_>, path: &Path) -> Diagnostics {
    match c.finish(path) {
        Err(d) => d,
        Ok(()) => Diagnostics {
            path: path.to_path_buf(),
            problems: Vec::new(),
        },
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

fn non_empty_path(c: &mut Collector<'_>, v: &Spanned<String>) -> PathBuf {
    if v.get_ref().trim().is_empty() {
        c.push(v.span(), "path must not be empty");
    }
    PathBuf::from(v.get_ref())
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
