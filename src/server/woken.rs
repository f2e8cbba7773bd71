//! Polls each part of a connection's task only when that part was woken.
//!
//! A client connection's task runs several futures side by side: hyper's server connection,
//! the driver of its upstream connections (`upstream/in_task.rs`), and its close conditions
//! (drain, trust withdrawn, deadline, idle bounds). `tokio::select!` polls every one of them at
//! each wake-up of the task, whichever fired; with the upstream connection driven in the same
//! task, every upstream read would also poll the client's TLS stream for nothing (~1.5k
//! instructions) and the timers and notifications (~1k). Here each part gets a waker of its own
//! that marks it and wakes the task; a wake-up polls the marked parts only.
//! (`futures::stream::FuturesUnordered` does the same for a set of like futures.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// One part's wake-up mark; its [`Waker`] sets the mark and wakes the task.
pub(super) struct Part {
    mark: Arc<Mark>,
    waker: Waker,
}

struct Mark {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Part {
    /// A part marked as woken, so that its first [`Part::poll`] polls it.
    pub(super) fn new() -> Self {
        let mark = Arc::new(Mark {
            woken: AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(mark.clone()),
            mark,
        }
    }

    /// Polls `fut` with this part's waker if the part was woken since its last poll; otherwise
    /// `Pending` without polling it. Either way the task's waker (`cx`) is the one to wake.
    pub(super) fn poll<F: Future + ?Sized>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.mark.task.register(cx.waker());
        if !self.mark.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(&self.waker))
    }

    /// Marks the part as woken, so that its next [`Part::poll`] polls it (after a call that
    /// changed it, such as a graceful shutdown).
    pub(super) fn mark(&self) {
        self.mark.woken.store(true, Ordering::Release);
    }

    /// Whether the part has been woken and not polled since.
    pub(super) fn is_woken(&self) -> bool {
        self.mark.woken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that counts its polls and is ready when told.
    struct Counted {
        polls: usize,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.ready.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            if let Ok(mut w) = self.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    fn counted() -> (Counted, Arc<AtomicBool>, Arc<std::sync::Mutex<Option<Waker>>>) {
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None));
        (
            Counted {
                polls: 0,
                ready: ready.clone(),
                waker: waker.clone(),
            },
            ready,
            waker,
        )
    }

    #[test]
    fn only_the_woken_part_is_polled_and_the_task_is_woken_for_it() {
        let (mut a, a_ready, a_waker) = counted();
        let (mut b, _, _) = counted();
        let (pa, pb) = (Part::new(), Part::new());
        let task_woken = Arc::new(Mark {
            woken: AtomicBool::new(false),
            task: futures_util::task::AtomicWaker::new(),
        });
        let task = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&task);
        // First poll: both parts start woken.
        assert!(pa.poll(Pin::new(&mut a), &mut cx).is_pending());
        assert!(pb.poll(Pin::new(&mut b), &mut cx).is_pending());
        assert_eq!((a.polls, b.polls), (1, 1));
        // Nothing woke them: neither is polled.
        assert!(pa.poll(Pin::new(&mut a), &mut cx).is_pending());
        assert!(pb.poll(Pin::new(&mut b), &mut cx).is_pending());
        assert_eq!((a.polls, b.polls), (1, 1));
        // `a` is woken: the task is woken, `a` alone is polled, and completes.
        a_ready.store(true, Ordering::Release);
        let w = a_waker.lock().ok().and_then(|mut w| w.take());
        w.map(Waker::wake).unwrap_or_default();
        assert!(task_woken.woken.load(Ordering::Acquire));
        assert!(pa.is_woken());
        assert!(pa.poll(Pin::new(&mut a), &mut cx).is_ready());
        assert!(pb.poll(Pin::new(&mut b), &mut cx).is_pending());
        assert_eq!((a.polls, b.polls), (2, 1));
    }
}
