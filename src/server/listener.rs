//! Accept loop: never dies on a transient error, caps open connections with a semaphore, and
//! drains gracefully on shutdown. One loop per socket; with `runtime = "per-core"` several loops
//! (one per thread, `workers.rs`) share one [`Gate`], so the cap and the drain stay global.

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
    serve_here(vec![listener], server, drain, shutdown).await;
}

/// As [`serve`], with one accept loop per socket, each a task of the current runtime, sharing
/// one cap and one drain.
pub async fn serve_here(
    listeners: Vec<TcpListener>,
    server: Arc<Server>,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let gate = Gate::new(server.listener.max_connections);
    let (stop_tx, stop_rx) = watch::channel(false);
    let count = listeners.len();
    let loops: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            let (server, slots, mut stop) = (server.clone(), gate.slots(), stop_rx.clone());
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(async move { accept_loop(listener, &server, slots, Ids::of(index, count), stopped).await })
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // The same line as one socket's (operators and their alerts match on it).
    info!(
        sockets = count,
        deadline_ms = drain.as_millis(),
        "listener closed, draining in-flight requests"
    );
    gate.drain(drain, &server).await;
}

/// What every accept loop of one listener shares, on whichever thread it runs: the connection
/// cap (one semaphore) and the drain signal.
pub(super) struct Gate {
    slots: Arc<Semaphore>,
    /// The cap, to know when every slot is free again.
    cap: usize,
    drain_tx: watch::Sender<bool>,
}

impl Gate {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            drain_tx: watch::channel(false).0,
        }
    }

    /// What one accept loop holds (cheap to clone, `Send`, for a loop on another thread).
    pub(super) fn slots(&self) -> Slots {
        Slots {
            slots: self.slots.clone(),
            drain: self.drain_tx.subscribe(),
        }
    }

    /// Tells every connection, on every thread, to close gracefully (HTTP/1 after its current
    /// response, h2 with GOAWAY), then waits up to `deadline` until all of them are gone: then
    /// every connection slot is free again.
    pub(super) async fn drain(&self, deadline: Duration, server: &Server) {
        let _ = self.drain_tx.send(true);
        let all = u32::try_from(self.cap).unwrap_or(u32::MAX);
        match tokio::time::timeout(deadline, self.slots.acquire_many(all)).await {
            Ok(_) => info!("drained"),
            Err(_) => {
                warn!(
                    open = server.connections.len(),
                    "drain deadline passed; remaining connections are cut"
                );
                // Each connection cuts itself at its own drain timeout, begun a moment after this
                // one. Wait for that (bounded), so that they end, and queue the audit records of
                // the requests they cut, while every runtime still runs.
                let _ = tokio::time::timeout(CUT_GRACE, self.slots.acquire_many(all)).await;
            }
        }
    }
}

/// After the drain deadline, how long [`Gate::drain`] waits for the connections to cut
/// themselves (they started their own drain timeout a moment after the gate's).
const CUT_GRACE: Duration = Duration::from_secs(1);

/// One accept loop's share of the [`Gate`].
#[derive(Clone)]
pub(super) struct Slots {
    slots: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
}

/// Connection ids, unique across loops: loop `i` of `n` hands out `i+1, i+1+n, i+1+2n, ...`, so
/// the loops need no shared counter (ids key the connection registry and the log spans).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    next: u64,
    step: u64,
}

impl Ids {
    /// Loop `index` of `count`.
    pub(super) fn of(index: usize, count: usize) -> Self {
        Self {
            next: index as u64 + 1,
            step: count.max(1) as u64,
        }
    }

    fn take(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(self.step);
        id
    }
}

/// Accepts on `listener` until `shutdown` completes, spawning each connection on the current
/// runtime, then closes the socket. Connections are drained by the [`Gate`]'s owner.
pub(super) async fn accept_loop(
    listener: TcpListener,
    server: &Arc<Server>,
    slots: Slots,
    mut ids: Ids,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        // Accept first, then wait for a slot. Over the cap, each loop holds at most one accepted
        // connection (not yet handshaken) and the rest wait in the kernel's backlog. Waiting for
        // a slot before accepting, as one loop can, would starve a socket among several: the slot
        // freed by a connection could go to a loop whose own backlog is empty, while clients wait
        // in another socket's backlog.
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
        let permit = tokio::select! {
            p = slots.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed; treat it as shutdown
            },
            () = &mut shutdown => break,
        };
        let id = ids.take();
        let span = info_span!("conn", conn.id = id, client.addr = %peer, client.real = tracing::field::Empty, client.id = tracing::field::Empty);
        tokio::spawn(conn::handle(stream, peer, id, server.clone(), slots.drain.clone(), permit).instrument(span));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Loops of one listener never hand out the same id.
    #[test]
    fn ids_of_several_loops_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..3 {
            let mut ids = Ids::of(i, 3);
            for _ in 0..100 {
                assert!(seen.insert(ids.take()));
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(!seen.contains(&0));
        let mut one = Ids::of(0, 1);
        assert_eq!((one.take(), one.take()), (1, 2));
    }
}
