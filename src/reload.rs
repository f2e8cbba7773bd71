//! Hot reload of the policy and of the TLS files: on SIGHUP or when a file changes (polled, so it
//! also sees the symlink swap kubelet does for ConfigMaps and Secrets), the new version is parsed
//! off the data path and swapped in atomically. A broken file keeps the last good version, is
//! logged (with file:line for the policy) and counted. Requests already past the policy check are
//! unaffected; the next ones see the new one. After a certificate/CRL reload, open connections
//! whose client certificate no longer verifies are closed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::policy::PolicyStore;
use crate::server::Server;
use crate::telemetry::metrics;
use crate::tls::{CrlSource, TlsConfig};

/// What identifies a version of the file without reading it: follows symlinks, and includes the
/// inode, so kubelet's `..data` symlink swap is seen even when size and mtime are unchanged.
fn stamp(path: &Path) -> Option<(u64, SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, inode(&m)))
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.ino()
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

type Stamps = Vec<Option<(u64, SystemTime, u64)>>;

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths.iter().map(|p| stamp(p)).collect()
}

/// How long a file changed in place is left to settle before it is read.
pub(crate) const SETTLE: Duration = Duration::from_millis(200);

/// Whether every file that changed between `before` and `after` is now another file (a new
/// inode: a rename over it, or kubelet's `..data` symlink swap). A renamed file was complete
/// before it appeared under its name, so there is nothing to wait for; a file written in place
/// (same inode) or one that is missing may be mid-write.
fn swapped_whole(before: &Stamps, after: &Stamps) -> bool {
    before.iter().zip(after).all(|(b, a)| match (b, a) {
        _ if b == a => true,
        (Some((_, _, old)), Some((_, _, new))) => old != new && cfg!(unix),
        _ => false,
    })
}

/// One hash over the contents of all `paths` (a missing file hashes as absent).
fn digest(paths: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in paths {
        match std::fs::read(p) {
            Ok(b) => {
                h.update((b.len() as u64).to_be_bytes());
                h.update(&b);
            }
            Err(_) => h.update(u64::MAX.to_be_bytes()),
        }
    }
    h.finalize().into()
}

/// Watches `path` until `shutdown`: reloads on SIGHUP, and when the file's size, mtime, inode or
/// content changes (checked every `interval`, then debounced so a half-written file is not read).
/// After a successful reload, open connections whose identity the new policy allows nowhere are
/// closed (`server`).
pub(crate) async fn watch_policy(
    store: Arc<PolicyStore>,
    path: PathBuf,
    interval: Duration,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
) {
    let files = vec![path.clone()];
    watch_files("policy", files, interval, shutdown, || {
        let store = store.clone();
        let path = path.clone();
        let server = server.clone();
        async move {
            let ok = store.reload(&path).await;
            if ok {
                let closed = server.connections.close_disallowed(&store.load());
                if closed > 0 {
                    metrics::connections_closed("policy", closed as u64);
                }
            }
            ok
        }
    })
    .await;
}

/// Watches the server certificate, key, client CA and CRL files like the policy: on SIGHUP or a
/// change, loads them all off the data path; if they form a valid configuration, new connections
/// use it at once and open connections whose client chain no longer verifies are closed. A
/// broken set keeps the current one, logged and counted.
pub(crate) async fn watch_tls(server: Arc<Server>, cfg: TlsConfig, shutdown: impl Future<Output = ()>) {
    let mut files = vec![cfg.cert.clone(), cfg.key.clone(), cfg.client_ca.clone()];
    files.extend(cfg.crls.iter().cloned());
    let interval = cfg.reload_interval;
    let cfg = Arc::new(cfg);
    watch_files("certificates", files, interval, shutdown, || {
        let server = server.clone();
        let cfg = cfg.clone();
        async move { reload_tls(&server, cfg).await }
    })
    .await;
}

async fn reload_tls(server: &Server, cfg: Arc<TlsConfig>) -> bool {
    let loaded = tokio::task::spawn_blocking(move || crate::tls::server_tls(&cfg)).await;
    match loaded {
        Ok(Ok(tls)) => {
            crate::tls::export_expiry(&tls.expiry);
            let closed = server.install_tls(tls);
            metrics::tls_reload(true);
            info!(closed, "certificates, client CA and CRLs reloaded");
            true
        }
        Ok(Err(e)) => {
            metrics::tls_reload(false);
            error!(error = %crate::telemetry::OneLine(&e), "certificate reload rejected, keeping the current certificates and CRLs");
            false
        }
        Err(e) => {
            metrics::tls_reload(false);
            error!(error = %e, "certificate reload task failed; keeping the current certificates and CRLs");
            false
        }
    }
}

/// Downloads every configured CRL now and then every `interval` until `shutdown`. A newer CRL is
/// written to its file, which the TLS watcher reloads; failures keep the current file.
pub(crate) async fn fetch_crls(
    fetcher: Arc<crate::tls::CrlFetcher>,
    sources: Vec<CrlSource>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        for src in &sources {
            match fetcher.fetch(src).await {
                Ok(crate::tls::Fetched::Updated) => {
                    metrics::crl_fetch("updated");
                    info!(url = %src.url, file = %src.file.display(), "newer CRL downloaded");
                }
                Ok(crate::tls::Fetched::Unchanged) => metrics::crl_fetch("unchanged"),
                Err(e) => {
                    metrics::crl_fetch(e.kind());
                    warn!(error = %e, "CRL download failed; keeping the current CRL");
                }
            }
        }
    }
}

/// Downloads the CRL of every distribution point seen so far, every `interval`, until
/// `shutdown`, and closes the open connections that a newer CRL revokes.
pub(crate) async fn refresh_distribution_points(
    revocation: Arc<crate::tls::revocation::Revocation>,
    server: Arc<crate::server::Server>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first lookups happen when connections need them
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if revocation.refresh().await > 0 {
            let closed = server.close_revoked();
            if closed > 0 {
                info!(closed, "closed connections whose certificates a refreshed CRL revokes");
            }
        }
    }
}

/// Watches a posture inventory or JWKS file like the policy: reloads it on SIGHUP or change; a
/// broken file keeps the current one, logged and counted.
pub(crate) async fn watch_posture(
    item: crate::posture::Reloadable,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let what = item.what();
    // A fetched key set has no file; its refresher runs instead (`Jwks::refresh`).
    let Some(path) = item.path() else { return };
    watch_files(what, vec![path.clone()], interval, shutdown, || {
        let item = item.clone();
        let path = path.clone();
        async move {
            match tokio::task::spawn_blocking(move || item.reload()).await {
                Ok(Ok(n)) => {
                    metrics::posture_reload(true);
                    info!(what, entries = n, file = %path.display(), "reloaded");
                    true
                }
                Ok(Err(e)) => {
                    metrics::posture_reload(false);
                    error!(error = %crate::telemetry::OneLine(&e), "{what} reload rejected, keeping the current one");
                    false
                }
                Err(e) => {
                    metrics::posture_reload(false);
                    error!(error = %e, "{what} reload task failed, keeping the current one");
                    false
                }
            }
        }
    })
    .await;
}

/// The reload loop shared by the policy, the certificates and the posture files.
async fn watch_files<F, Fut>(
    what: &'static str,
    files: Vec<PathBuf>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    mut reload: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::pin!(shutdown);
    let mut hup = sighup();
    let mut last_stamps = stamps(&files);
    let mut last_digest = digest(&files);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => false,
            Some(()) = recv(&mut hup) => true,
        };
        let now = stamps(&files);
        if !forced && now == last_stamps {
            continue;
        }
        if !forced && !swapped_whole(&last_stamps, &now) {
            // A file written in place may be half written; wait until the files settle.
            tokio::time::sleep(SETTLE).await;
        }
        last_stamps = stamps(&files);
        let d = digest(&files);
        if !forced && d == last_digest {
            continue; // touched, not changed
        }
        if forced {
            info!(what, "SIGHUP: reloading");
        }
        // A broken version is remembered too, so it is reported once, not on every tick.
        last_digest = d;
        let _ = reload().await;
    }
}

#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

#[cfg(unix)]
fn sighup() -> Hup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| warn!(error = %e, "cannot listen for SIGHUP; policy reloads on file change only"))
        .ok()
}

#[cfg(not(unix))]
fn sighup() -> Hup {
    None
}

async fn recv(hup: &mut Hup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hup {
        return s.recv().await;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_that_swapped_every_changed_file_whole_skips_the_settle_delay() {
        let t = SystemTime::UNIX_EPOCH;
        let later = t + Duration::from_secs(1);
        let before: Stamps = vec![Some((10, t, 1)), Some((20, t, 2))];
        // The policy renamed over (new inode), the other file untouched: no wait.
        assert!(swapped_whole(&before, &vec![Some((11, later, 3)), Some((20, t, 2))]));
        // Written in place (same inode, new size): may be half written.
        assert!(!swapped_whole(&before, &vec![Some((5, later, 1)), Some((20, t, 2))]));
        // One renamed, one written in place: wait.
        assert!(!swapped_whole(
            &before,
            &vec![Some((11, later, 3)), Some((21, later, 2))]
        ));
        // Gone (between an unlink and a rename): wait.
        assert!(!swapped_whole(&before, &vec![None, Some((20, t, 2))]));
    }
}
