//! Policy hot reload: on SIGHUP or when the file changes (polled, so it also sees the symlink
//! swap kubelet does for ConfigMaps), the policy is parsed and compiled off the data path and
//! swapped in atomically. A broken file keeps the last good policy, is logged with file:line and
//! counted. Requests already past the policy check are unaffected; the next ones see the new one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::policy::Policy;
use crate::telemetry::metrics;

/// The live policy: one atomic pointer, read lock-free on every request.
pub struct PolicyStore {
    current: ArcSwap<Policy>,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> Arc<Self> {
        metrics::policy_loaded(policy.rules().len());
        Arc::new(Self {
            current: ArcSwap::from_pointee(policy),
        })
    }

    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Reads, compiles and (if valid) installs the policy at `path`. Returns whether it did.
    pub async fn reload(&self, path: &Path) -> bool {
        let p = path.to_path_buf();
        let result = match tokio::task::spawn_blocking(move || Policy::load(&p)).await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "policy reload task failed; keeping the current policy");
                metrics::policy_reload(false);
                return false;
            }
        };
        match result {
            Ok(policy) => {
                for w in &policy.warnings {
                    warn!("{}:{}:{}: warning: {}", path.display(), w.line, w.col, w.message);
                }
                info!(rules = policy.rules().len(), file = %path.display(), "policy reloaded");
                metrics::policy_loaded(policy.rules().len());
                metrics::policy_reload(true);
                self.current.store(Arc::new(policy));
                true
            }
            Err(e) => {
                error!("policy reload rejected, keeping the last good policy:\n{e}");
                metrics::policy_reload(false);
                false
            }
        }
    }
}

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

fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Watches `path` until `shutdown`: reloads on SIGHUP, and when the file's size, mtime or
/// content changes (checked every `interval`, then debounced so a half-written file is not read).
pub async fn watch_policy(
    store: Arc<PolicyStore>,
    path: PathBuf,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut hup = sighup();
    let mut last_stamp = stamp(&path);
    let mut last_digest = digest(&path);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => false,
            Some(()) = recv(&mut hup) => true,
        };
        let now = stamp(&path);
        if !forced && now == last_stamp {
            continue;
        }
        if !forced {
            // Editors and kubelet write in steps; wait until the file stops changing.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last_stamp = stamp(&path);
        let d = digest(&path);
        if !forced && d == last_digest {
            continue; // touched, not changed
        }
        if forced {
            info!(file = %path.display(), "SIGHUP: reloading policy");
        }
        if store.reload(&path).await {
            last_digest = d;
        } else {
            // Remember the broken version too, so it is reported once, not on every tick.
            last_digest = d;
        }
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
