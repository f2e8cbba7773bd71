//! The executor hyper's h2 server spawns each stream's task on.
//!
//! hyper's h2 server runs each stream's future in a task of its own: with a plain
//! `TokioExecutor`, anything that future logs outside the request span (which `WithConn::call`
//! opens under the connection's span) would run outside the connection's span, and h2 log lines
//! would lose `client.addr` and `client.id`. This executor enters the connection's span in
//! every task it spawns, as `tokio::spawn(conn).instrument(span)` does for the connection itself.

use std::future::Future;

use tracing::{Instrument, Span};

/// Spawns on the current tokio runtime, inside `span` (the connection's).
#[derive(Clone)]
pub(super) struct SpanExecutor {
    /// The connection span: parent of every request span the spawned tasks open.
    pub(super) span: Span,
}

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut.instrument(self.span.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spawned future runs with the executor's span as its current span.
    #[tokio::test]
    async fn spawned_tasks_run_inside_the_connection_span() {
        use hyper::rt::Executor;
        // Spans have ids only under a subscriber; the test runtime runs tasks on this thread.
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("conn");
        let (tx, rx) = tokio::sync::oneshot::channel();
        SpanExecutor { span: span.clone() }.execute(async move {
            let _ = tx.send(Span::current().id());
        });
        let id = span.id();
        assert!(id.is_some());
        assert_eq!(rx.await.ok().flatten(), id);
    }
}
