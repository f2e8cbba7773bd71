//! The live policy: one atomic pointer read lock-free on every request, replaced whole by a
//! reload (a broken file keeps the last good policy).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use super::Policy;
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

    /// The current policy, for one request: a lock-free guard (no reference-count traffic),
    /// so hold it only while judging.
    pub fn load(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.current.load()
    }

    /// The current policy, to keep (an `Arc`: explain, reload bookkeeping).
    pub fn load_full(&self) -> Arc<Policy> {
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
                error!(
                    error = %crate::telemetry::OneLine(&e),
                    "policy reload rejected, keeping the last good policy"
                );
                metrics::policy_reload(false);
                false
            }
        }
    }
}
