//! Whether a piece of user code was cancelled (dropped) rather than left running: hold a
//! [`Cancelled::guard`] across the `.await` that a failing connection should cancel, then ask
//! [`Cancelled::happened`]. And the other side of cancellation: [`poll_once`] cancels a
//! library future right after its first poll, as a `select!` or a timeout would.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

/// Polls `future` once, with the calling task's waker, and drops it: what a `select!` that
/// picks another branch, or a timeout that fires, does to a call in flight. Whatever the
/// future sends on its first poll has been queued for the socket by then. `None` when that
/// poll left it pending (it was cancelled mid-way); its output when it finished at once.
/// Given `pinned.as_mut()`, it only polls: the future lives on, to be awaited later.
pub async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Records whether a guard was dropped. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancelled(Arc<AtomicBool>);

impl Cancelled {
    /// A guard that marks this flag when it is dropped.
    pub fn guard(&self) -> CancelGuard {
        CancelGuard(self.0.clone())
    }

    /// True once a guard has been dropped.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sets its [`Cancelled`] flag on drop.
#[derive(Debug)]
pub struct CancelGuard(Arc<AtomicBool>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
