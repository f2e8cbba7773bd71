//! Accept loop: never dies on a transient error, caps open connections with a semaphore, and
//! drains gracefully on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, error, info, info_span, warn};

use super::Server;
use super::conn;

/// Serves mTLS connections on `listener` until `shutdown` completes, then stops accepting and
/// waits up to `drain` for in-flight requests. The caller binds, so tests can use port 0.
pub async fn serve(listener: TcpListener, server: Arc<Server>, drain: Duration, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(server.listener.max_connections));
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        // Over the cap, stop accepting: the kernel's backlog queues new clients cheaply.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed; treat it as shutdown
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    backoff(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let span = info_span!("conn", conn.id = next_id, client.addr = %peer, client.real = tracing::field::Empty, client.id = tracing::field::Empty);
        let watcher = graceful.watcher();
        tokio::spawn(conn::handle(stream, peer, next_id, server.clone(), watcher, permit).instrument(span));
    }
    drop(listener);
    info!(deadline = ?drain, "listener closed, draining in-flight requests");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => info!("drained"),
        Err(_) => warn!("drain deadline passed; remaining connections are cut"),
    }
}

/// Per-connection errors (reset before accept) are ignored; resource exhaustion (EMFILE,
/// ENFILE, ENOMEM) backs off so the loop does not spin while the process is out of fds.
async fn backoff(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {}
        _ => {
            error!(error = %e, "accept failed; backing off");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
