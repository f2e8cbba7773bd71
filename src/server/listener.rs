//! Accept loop: never dies on a transient error, caps open connections with a semaphore, and
//! drains gracefully on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, error, info, info_span, warn};

use super::Server;
use super::conn;

/// Serves mTLS connections on `listener` until `shutdown` completes, then stops accepting and
/// waits up to `drain` for in-flight requests. The caller binds, so tests can use port 0.
pub async fn serve(listener: TcpListener, server: Arc<Server>, drain: Duration, shutdown: impl Future<Output = ()>) {
    let (drain_tx, drain_rx) = watch::channel(false);
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
        tokio::spawn(conn::handle(stream, peer, next_id, server.clone(), drain_rx.clone(), permit).instrument(span));
    }
    drop(listener);
    info!(
        deadline_ms = drain.as_millis(),
        "listener closed, draining in-flight requests"
    );
    // Every connection closes gracefully (HTTP/1 after its current response, h2 with GOAWAY);
    // all of them are gone when every connection slot is free again.
    let _ = drain_tx.send(true);
    let all = u32::try_from(server.listener.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain, slots.acquire_many(all)).await {
        Ok(_) => info!("drained"),
        Err(_) => warn!(
            open = server.connections.len(),
            "drain deadline passed; remaining connections are cut"
        ),
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
