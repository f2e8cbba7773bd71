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

/// Passes per turn at most: a second pass relays at once what one part's progress woke in
/// another (an upstream answer for the request the client's side waits on); bounded, so a part
/// that keeps waking itself cannot hold the thread.
const PASSES: usize = 2;

/// The parts of one task, each with its own waker.
///
/// A part woken while the task is polling its parts only marks itself: the turn's next pass
/// polls it. Waking the task from inside its own poll would make the runtime schedule the task
/// again, and a work-stealing runtime wake another worker to steal it (a futex call and the
/// task moved to the other core, for nothing).
pub(super) struct Parts<const N: usize> {
    shared: Arc<Shared>,
    marks: [Arc<Mark>; N],
    wakers: [Waker; N],
}

struct Shared {
    /// Set while a turn polls the parts.
    polling: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

/// One part's wake-up mark; its [`Waker`] sets the mark and, outside a turn, wakes the task.
struct Mark {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst with the turn's end (below): either the turn sees the mark, or the waker
        // sees that no turn is running and wakes the task.
        self.woken.store(true, Ordering::SeqCst);
        if !self.shared.polling.load(Ordering::SeqCst) {
            self.shared.task.wake();
        }
    }
}

impl<const N: usize> Parts<N> {
    /// `N` parts, each marked as woken so that the first turn polls it.
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            polling: AtomicBool::new(false),
            task: futures_util::task::AtomicWaker::new(),
        });
        let marks: [Arc<Mark>; N] = std::array::from_fn(|_| {
            Arc::new(Mark {
                woken: AtomicBool::new(true),
                shared: shared.clone(),
            })
        });
        let wakers = std::array::from_fn(|i| Waker::from(marks[i].clone()));
        Self { shared, marks, wakers }
    }

    /// One turn of the task: runs `pass` (which polls parts with [`Parts::poll`]) until it is
    /// ready, no part is marked, or [`PASSES`] passes; `Pending` leaves the task to be woken by
    /// a part's waker.
    pub(super) fn turn<T>(&self, cx: &mut Context<'_>, mut pass: impl FnMut() -> Poll<T>) -> Poll<T> {
        self.shared.task.register(cx.waker());
        self.shared.polling.store(true, Ordering::SeqCst);
        for _ in 0..PASSES {
            if let Poll::Ready(v) = pass() {
                self.shared.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(v);
            }
            if !self.any_woken() {
                break;
            }
        }
        self.shared.polling.store(false, Ordering::SeqCst);
        // Marked on the last pass, or by another thread as this turn ended: another turn.
        if self.any_woken() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Polls `fut`, part `i`, with that part's waker if the part was marked since its last
    /// poll; otherwise `Pending` without polling it. Only inside [`Parts::turn`].
    pub(super) fn poll<F: Future + ?Sized>(&self, i: usize, fut: Pin<&mut F>) -> Poll<F::Output> {
        let (Some(mark), Some(waker)) = (self.marks.get(i), self.wakers.get(i)) else {
            return Poll::Pending;
        };
        if !mark.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(waker))
    }

    /// Marks part `i`, so that the next turn polls it (after a call that changed it, such as a
    /// graceful shutdown).
    pub(super) fn mark(&self, i: usize) {
        if let Some(m) = self.marks.get(i) {
            m.woken.store(true, Ordering::SeqCst);
        }
    }

    fn any_woken(&self) -> bool {
        self.marks.iter().any(|m| m.woken.load(Ordering::SeqCst))
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

    /// A waker that counts its wakes.
    struct CountWakes(std::sync::atomic::AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_the_woken_part_is_polled_and_the_task_is_woken_for_it() {
        let (mut a, a_ready, a_waker) = counted();
        let (mut b, _, _) = counted();
        let parts = Parts::<2>::new();
        let wakes = Arc::new(CountWakes(std::sync::atomic::AtomicUsize::new(0)));
        let task = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&task);
        let mut turn = |a: &mut Counted, b: &mut Counted| {
            parts.turn(&mut cx, || {
                if parts.poll(0, Pin::new(&mut *a)).is_ready() {
                    return Poll::Ready("a");
                }
                if parts.poll(1, Pin::new(&mut *b)).is_ready() {
                    return Poll::Ready("b");
                }
                Poll::Pending
            })
        };
        // First turn: both parts start marked.
        assert!(turn(&mut a, &mut b).is_pending());
        assert_eq!((a.polls, b.polls), (1, 1));
        // Nothing woke them: neither is polled.
        assert!(turn(&mut a, &mut b).is_pending());
        assert_eq!((a.polls, b.polls), (1, 1));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // `a` is woken outside a turn: the task is woken once, `a` alone is polled.
        a_ready.store(true, Ordering::Release);
        let w = a_waker.lock().ok().and_then(|mut w| w.take());
        w.map(Waker::wake).unwrap_or_default();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(turn(&mut a, &mut b), Poll::Ready("a"));
        assert_eq!((a.polls, b.polls), (2, 1));
    }

    /// A part that wakes another inside a turn: polled in the same turn's second pass, and the
    /// task is not woken (no needless rescheduling).
    #[test]
    fn a_part_woken_during_a_turn_is_polled_in_it_without_waking_the_task() {
        let (mut b, b_ready, b_waker) = counted();
        let parts = Parts::<2>::new();
        let wakes = Arc::new(CountWakes(std::sync::atomic::AtomicUsize::new(0)));
        let task = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&task);
        let mut a_polls = 0;
        // First turn registers b's waker.
        let _ = parts.turn(&mut cx, || {
            let _ = parts.poll(0, Pin::new(&mut std::future::pending::<()>()));
            parts.poll(1, Pin::new(&mut b))
        });
        assert_eq!(b.polls, 1);
        parts.mark(0);
        let out = parts.turn(&mut cx, || {
            // Part 0's work completes what part 1 waits on, and wakes it.
            if parts.poll(0, Pin::new(&mut std::future::ready(()))).is_ready() {
                a_polls += 1;
                b_ready.store(true, Ordering::Release);
                let w = b_waker.lock().ok().and_then(|mut w| w.take());
                w.map(Waker::wake).unwrap_or_default();
            }
            parts.poll(1, Pin::new(&mut b))
        });
        assert!(out.is_ready());
        assert_eq!((a_polls, b.polls), (1, 2));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }
}
