//! `[tls]` and `[tls.profile]`.

use super::*;

pub(super) fn tls(c: &mut Collector<'_>, t: &RawTls) -> Option<TlsConfig> {
    let crl_scope = match t.crl_scope.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("chain", _)) => CrlScope::Chain,
        Some(("leaf", _)) => CrlScope::Leaf,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown crl_scope `{other}` (expected \"chain\" or \"leaf\")"),
            );
            CrlScope::Chain
        }
    };
    let reload_interval = match &t.reload_interval {
        None => Some(Duration::from_secs(5)),
        Some(d) => duration(c, d),
    };
    let mut crls: Vec<PathBuf> = t.crls.iter().map(|p| non_empty_path(c, p)).collect();
    let mut sources = Vec::new();
    let mut sources_ok = true;
    for src in &t.crl_sources {
        let r = src.get_ref();
        let url = match r.url.get_ref().parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                c.push(
                    r.url.span(),
                    format!(
                        "crl_sources url `{}` must be http://host[:port]/path (CRLs are signed, so plain HTTP is their usual transport)",
                        r.url.get_ref()
                    ),
                );
                None
            }
        };
        // Written by the fetcher: it need not exist yet.
        let file = output_path(c, &r.file);
        match url {
            Some(url) => {
                if !crls.contains(&file) {
                    crls.push(file.clone());
                }
                sources.push(CrlSource { url, file });
            }
            None => sources_ok = false,
        }
    }
    let crl_sources = sources_ok.then_some(sources);
    let crl_fetch_interval = match &t.crl_fetch_interval {
        None => Some(Duration::from_secs(3600)),
        Some(d) => duration(c, d),
    };
    let crl_discovery = revocation_mode(c, "crl_discovery", t.crl_discovery.as_ref());
    let ocsp = revocation_mode(c, "ocsp", t.ocsp.as_ref());
    let ocsp_responder = match &t.ocsp_responder {
        None => Some(None),
        Some(v) => match v.get_ref().parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(Some(u)),
            _ => {
                c.push(
                    v.span(),
                    format!(
                        "ocsp_responder `{}` must be http://host[:port]/path (OCSP answers are signed, so plain HTTP is their usual transport)",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    if let (Some(v), Some(RevocationMode::Off)) = (&t.ocsp_responder, ocsp) {
        c.push(
            v.span(),
            "ocsp_responder is set but ocsp is \"off\" (set ocsp = \"fail-closed\" or \"fail-open\")",
        );
    }
    let revocation_timeout = match &t.revocation_timeout {
        None => Some(Duration::from_secs(3)),
        Some(d) => duration(c, d),
    };
    let profile = t
        .profile
        .as_ref()
        .map_or(Some(ProfileConfig::default()), |p| profile(c, p));
    Some(TlsConfig {
        profile: profile?,
        crl_discovery: crl_discovery?,
        ocsp: ocsp?,
        ocsp_responder: ocsp_responder?,
        revocation_timeout: revocation_timeout?,
        reload_interval: reload_interval?,
        cert: non_empty_path(c, &t.cert),
        key: non_empty_path(c, &t.key),
        client_ca: non_empty_path(c, &t.client_ca),
        crls,
        crl_sources: crl_sources?,
        crl_fetch_interval: crl_fetch_interval?,
        crl_scope,
    })
}

/// `[tls.profile]`: `max_chain_depth` within what WebPKI verifies, `relax` naming known rules
/// (a typo gets the closest name).
pub(super) fn profile(c: &mut Collector<'_>, p: &RawProfile) -> Option<ProfileConfig> {
    let mut ok = true;
    let max_chain_depth = match &p.max_chain_depth {
        None => ProfileConfig::DEFAULT_MAX_CHAIN_DEPTH,
        Some(v) => match u8::try_from(*v.get_ref()) {
            Ok(n) if n <= ProfileConfig::MAX_CHAIN_DEPTH_LIMIT => n,
            _ => {
                c.push(
                    v.span(),
                    format!(
                        "max_chain_depth must be 0..={} (intermediate CAs between a client certificate and its trust anchor; rustls verifies no deeper chain)",
                        ProfileConfig::MAX_CHAIN_DEPTH_LIMIT
                    ),
                );
                ok = false;
                0
            }
        },
    };
    let mut relaxed = Vec::new();
    for name in &p.relax {
        match Rule::from_name(name.get_ref()) {
            Some(rule) if rule.relaxable() => relaxed.push(rule),
            Some(Rule::ChainDepth) => {
                c.push(name.span(), "`chain-depth` is not relaxed: set max_chain_depth instead");
                ok = false;
            }
            Some(rule) => {
                let why = if rule == Rule::EmailConstraint {
                    "ztgate evaluates email name constraints in rustls' place, and relaxing would ignore them"
                } else {
                    "a chain that cannot be rebuilt is always refused"
                };
                c.push(name.span(), format!("`{}` cannot be relaxed: {why}", rule.name()));
                ok = false;
            }
            None => {
                let names: Vec<&str> = Rule::ALL.iter().filter(|r| r.relaxable()).map(|r| r.name()).collect();
                let hint = match crate::diag::closest(name.get_ref(), &names) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("known rules: {}", names.join(", ")),
                };
                c.push(
                    name.span(),
                    format!("unknown profile rule `{}` ({hint})", name.get_ref()),
                );
                ok = false;
            }
        }
    }
    ok.then(|| ProfileConfig {
        max_chain_depth,
        relaxed: relaxed.into_iter().collect(),
    })
}

pub(super) fn revocation_mode(c: &mut Collector<'_>, key: &str, v: Option<&Spanned<String>>) -> Option<RevocationMode> {
    match v.map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("off", _)) => Some(RevocationMode::Off),
        Some(("fail-closed", _)) => Some(RevocationMode::FailClosed),
        Some(("fail-open", _)) => Some(RevocationMode::FailOpen),
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown {key} `{other}` (expected \"off\", \"fail-closed\" or \"fail-open\")"),
            );
            None
        }
    }
}
