//! `runtime = "per-core"`: one OS thread per socket, each running a `current_thread` tokio runtime
//! with its own accept loop; the sockets are bound to one address with `SO_REUSEPORT`, so the
//! kernel spreads new connections over the threads and a connection stays on the thread that
//! accepted it. The cap and the drain stay global: every loop shares one [`Gate`].
//!
//! The caller's runtime (the main thread) keeps what is not the data path: the admin listener,
//! reloads, CRL fetches, the audit writer's hand-off, and this coordinator.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info};

use super::Server;
use super::listener::{Gate, Ids, Slots, accept_loop};

/// A per-core worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot hand listener socket {index} to its worker thread: {source}")]
    Socket {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the tokio runtime of worker {index}: {source}")]
    Runtime {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Thread {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's accept queue per socket, as `TcpListener::bind` uses.
const BACKLOG: u32 = 1024;

/// Binds `count` listening sockets to `addr`, all with `SO_REUSEPORT`, for [`serve_per_core`].
/// Port 0 binds the first to a free port and the others to that same port.
pub async fn bind_reuseport(addr: SocketAddr, count: NonZeroUsize) -> std::io::Result<Vec<TcpListener>> {
    // SO_REUSEPORT would let a second ztgate (a leftover one, an old policy) bind the same port
    // and take a share of the clients. A socket without it cannot bind a port another process
    // listens on with it: bound first, it makes that case the usual "Address already in use".
    if addr.port() != 0 {
        let probe = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        probe.set_reuseaddr(true)?;
        probe.bind(addr)?;
        drop(probe);
    }
    let mut out = Vec::with_capacity(count.get());
    let mut at = addr;
    for _ in 0..count.get() {
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind`: a restart can bind while old connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        let listener = socket.listen(BACKLOG)?;
        at = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Serves mTLS connections with one thread and one `current_thread` runtime per listener until
/// `shutdown` completes; then every loop stops accepting, connections on every thread are told to
/// close, and this waits up to `drain` for all of them before the threads stop (what is still
/// open then is cut). The listeners are usually [`bind_reuseport`]'s.
pub async fn serve_per_core(
    listeners: Vec<TcpListener>,
    server: Arc<Server>,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let gate = Gate::new(server.listener.max_connections);
    // `stop`: the accept loops end. `done`: the drain is over, the runtimes may go.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let count = listeners.len();
    let mut workers = Vec::with_capacity(count);
    for (index, listener) in listeners.into_iter().enumerate() {
        let started = Worker::start(
            index,
            listener,
            server.clone(),
            gate.slots(),
            Ids::of(index, count),
            (stop_rx.clone(), done_rx.clone()),
        );
        match started {
            Ok(w) => workers.push(w),
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = done_tx.send(true);
                join(workers).await;
                return Err(e);
            }
        }
    }
    info!(workers = count, "per-core workers started");
    shutdown.await;
    let _ = stop_tx.send(true);
    // The same line as one socket's (operators and their alerts match on it).
    info!(
        workers = count,
        deadline_ms = drain.as_millis(),
        "listener closed, draining in-flight requests"
    );
    gate.drain(drain, &server).await;
    let _ = done_tx.send(true);
    join(workers).await;
    Ok(())
}

/// One worker thread.
struct Worker {
    index: usize,
    thread: std::thread::JoinHandle<()>,
    /// Closed (its sender dropped) when the thread has dropped its runtime.
    exited: oneshot::Receiver<()>,
}

impl Worker {
    fn start(
        index: usize,
        listener: TcpListener,
        server: Arc<Server>,
        slots: Slots,
        ids: Ids,
        (mut stop, mut done): (watch::Receiver<bool>, watch::Receiver<bool>),
    ) -> Result<Self, WorkerError> {
        // The socket leaves the caller's reactor here and joins the worker's there.
        let listener = listener
            .into_std()
            .map_err(|source| WorkerError::Socket { index, source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| WorkerError::Runtime { index, source })?;
        let (exit_tx, exited) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("ztgate-worker-{index}"))
            .spawn(move || {
                crate::upstream::enter_worker(index);
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stopped = async move {
                                let _ = stop.wait_for(|s| *s).await;
                            };
                            accept_loop(listener, &server, slots, ids, stopped).await;
                            debug!(worker = index, "accept loop stopped");
                        }
                        Err(e) => error!(worker = index, error = %e, "worker cannot use its listener socket"),
                    }
                    // Connections of this thread run on its runtime: keep it until the drain is over.
                    let _ = done.wait_for(|d| *d).await;
                });
                drop(runtime);
                drop(exit_tx);
            })
            .map_err(|source| WorkerError::Thread { index, source })?;
        Ok(Self { index, thread, exited })
    }
}

/// Waits until every worker thread has stopped (each has been told to).
async fn join(workers: Vec<Worker>) {
    for w in workers {
        // The sender goes when the thread ends, however it ends; then `join` does not block.
        let _ = w.exited.await;
        if w.thread.join().is_err() {
            error!(worker = w.index, "worker thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second ztgate on a port the first serves with SO_REUSEPORT would take a share of its
    /// clients: it is refused, as a plain bind would be.
    #[tokio::test]
    async fn a_second_set_of_sockets_on_a_port_already_served_is_refused() {
        let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
        let first = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), two).await;
        let first = first.unwrap_or_default();
        assert_eq!(first.len(), 2);
        let addr = first[0].local_addr().map_err(|e| e.to_string());
        let Ok(addr) = addr else {
            panic!("no local address: {addr:?}");
        };
        assert_eq!(first[1].local_addr().ok(), Some(addr));
        let second = bind_reuseport(addr, two).await;
        assert_eq!(
            second.map(|l| l.len()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AddrInUse)
        );
        // Once the first is gone, the port can be served again.
        drop(first);
        assert_eq!(bind_reuseport(addr, two).await.map(|l| l.len()).ok(), Some(2));
    }
}
