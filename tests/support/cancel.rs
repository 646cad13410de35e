//! Whether a piece of user code was cancelled (dropped) rather than left running: hold a
//! [`Cancelled::guard`] across the `.await` that a failing connection should cancel, then ask
//! [`Cancelled::happened`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
