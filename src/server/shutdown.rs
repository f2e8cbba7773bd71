//! Process signals: SIGTERM and SIGINT start a graceful drain.

use tracing::{info, warn};

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received, draining"),
                    _ = int.recv() => info!("SIGINT received, draining"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot install signal handlers; falling back to Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received, draining");
    }
}
