//! `[listener]` and `[headers]`.

use std::num::NonZeroUsize;

use super::*;
use crate::server::RuntimeModel;

/// `[headers]`; absent: the defaults (underscored names dropped, no extra strip list, no
/// `Forwarded`).
pub(super) fn headers(c: &mut Collector<'_>, raw: Option<&RawHeaders>) -> HeadersConfig {
    let Some(raw) = raw else {
        return HeadersConfig::default();
    };
    let with_underscores = match raw.with_underscores.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("drop", _)) => Underscores::Drop,
        Some(("reject", _)) => Underscores::Reject,
        Some(("allow", _)) => Underscores::Allow,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown with_underscores mode `{other}` (expected \"drop\", \"reject\" or \"allow\")"),
            );
            Underscores::Drop
        }
    };
    let mut strip = Vec::new();
    for name in &raw.strip {
        match http::HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) {
            Ok(n) if crate::headers::is_protected(&n) => c.push(
                name.span(),
                format!(
                    "`{}` cannot be stripped: ztgate needs it to frame, route or identify the request",
                    name.get_ref()
                ),
            ),
            Ok(n) => strip.push(n),
            Err(_) => c.push(name.span(), format!("`{}` is not a valid header name", name.get_ref())),
        }
    }
    HeadersConfig {
        with_underscores,
        strip,
        forwarded: raw.forwarded.unwrap_or(false),
    }
}

pub(super) fn listener(c: &mut Collector<'_>, l: &RawListener) -> Option<ListenerConfig> {
    let address = addr(c, &l.address);
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: u64| {
        v.as_ref()
            .map_or(Some(Duration::from_secs(default)), |d| duration(c, d))
    };
    let handshake_timeout = dur(c, &l.handshake_timeout, 10);
    let header_read_timeout = dur(c, &l.header_read_timeout, 10);
    let first_request_timeout = dur(c, &l.first_request_timeout, 10);
    let keepalive_timeout = dur(c, &l.keepalive_timeout, 60);
    let send_timeout = dur(c, &l.send_timeout, 60);
    let idle_timeout = dur(c, &l.idle_timeout, 60);
    let request_timeout = l
        .request_timeout
        .as_ref()
        .map_or(Some(None), |d| optional_duration(c, d));
    let max_connections = match &l.max_connections {
        None => Some(10_000),
        Some(n) if *n.get_ref() >= 1 => usize::try_from(*n.get_ref()).ok(),
        Some(n) => {
            c.push(n.span(), "max_connections must be at least 1");
            None
        }
    };
    let proxy_protocol = proxy_protocol(c, l);
    let max_connection_age = match &l.max_connection_age {
        None => Some(None),
        Some(d) => duration(c, d).map(Some),
    };
    let size = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: u64| match v {
        None => Some(default),
        Some(s) => match parse_size(s.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                c.push(s.span(), e);
                None
            }
        },
    };
    let max_header_bytes = match size(c, &l.max_header_bytes, 64 * 1024) {
        // hyper needs room for at least one read buffer; 8 KiB is its floor.
        Some(n) if (8 * 1024..=16 * 1024 * 1024).contains(&n) => usize::try_from(n).ok(),
        Some(_) => {
            if let Some(s) = &l.max_header_bytes {
                c.push(s.span(), "max_header_bytes must be between 8KiB and 16MiB");
            }
            None
        }
        None => None,
    };
    let max_headers = match &l.max_headers {
        None => Some(100),
        Some(n) if (1..=10_000).contains(n.get_ref()) => usize::try_from(*n.get_ref()).ok(),
        Some(n) => {
            c.push(n.span(), "max_headers must be between 1 and 10000");
            None
        }
    };
    let max_request_body = match &l.max_request_body {
        Some(s) if s.get_ref() == "unlimited" => Some(None),
        v => size(c, v, 10 * 1024 * 1024).map(Some),
    };
    let max_connections_per_identity = match &l.max_connections_per_identity {
        None => Some(None),
        Some(n) if *n.get_ref() >= 1 => usize::try_from(*n.get_ref()).ok().map(Some),
        Some(n) => {
            c.push(n.span(), "max_connections_per_identity must be at least 1");
            None
        }
    };
    let (runtime, workers) = runtime(c, l);
    Some(ListenerConfig {
        runtime: runtime?,
        workers: workers?,
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        max_request_body: max_request_body?,
        max_connections_per_identity: max_connections_per_identity?,
        max_connection_age: max_connection_age?,
        proxy_protocol: proxy_protocol?,
        address: address?,
        handshake_timeout: handshake_timeout?,
        header_read_timeout: header_read_timeout?,
        first_request_timeout: first_request_timeout?,
        keepalive_timeout: keepalive_timeout?,
        send_timeout: send_timeout?,
        idle_timeout: idle_timeout?,
        request_timeout: request_timeout?,
        max_connections: max_connections?,
        require_sni_match: l.require_sni_match.unwrap_or(true),
    })
}

/// Most `workers`: more threads than this is a typo, not a machine.
const MAX_WORKERS: i64 = 1024;

/// `runtime` and `workers`. Absent `workers`: one per CPU the process may use (as tokio's own
/// default and nginx's `worker_processes auto`).
fn runtime(c: &mut Collector<'_>, l: &RawListener) -> (Option<RuntimeModel>, Option<NonZeroUsize>) {
    let runtime = match l.runtime.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None => Some(DEFAULT_RUNTIME),
        Some(("shared", _)) => Some(RuntimeModel::Shared),
        Some(("per-core", _)) => Some(RuntimeModel::PerCore),
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown runtime `{other}` (expected \"shared\" or \"per-core\")"),
            );
            None
        }
    };
    let workers = match &l.workers {
        None => Some(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)),
        Some(n) if (1..=MAX_WORKERS).contains(n.get_ref()) => {
            usize::try_from(*n.get_ref()).ok().and_then(NonZeroUsize::new)
        }
        Some(n) => {
            c.push(n.span(), format!("workers must be between 1 and {MAX_WORKERS}"));
            None
        }
    };
    (runtime, workers)
}

/// `runtime` when the file does not say.
pub(crate) const DEFAULT_RUNTIME: RuntimeModel = RuntimeModel::PerCore;

pub(super) fn proxy_protocol(c: &mut Collector<'_>, l: &RawListener) -> Option<Option<ProxyProtocolConfig>> {
    let mut trusted = Vec::new();
    let mut ok = true;
    for cidr in l.proxy_protocol_trusted.iter().flat_map(|v| v.get_ref()) {
        match crate::policy::Cidr::parse(cidr.get_ref()) {
            Ok(parsed) => trusted.push(parsed),
            Err(e) => {
                c.push(cidr.span(), e);
                ok = false;
            }
        }
    }
    match (l.proxy_protocol.unwrap_or(false), &l.proxy_protocol_trusted) {
        (false, Some(list)) => {
            c.push(
                list.span(),
                "proxy_protocol_trusted is set but proxy_protocol is not enabled (set proxy_protocol = true)",
            );
            None
        }
        (false, None) => Some(None),
        (true, _) if ok => Some(Some(ProxyProtocolConfig { trusted })),
        (true, _) => None,
    }
}
