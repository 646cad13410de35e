//! Counters and readiness the supervisor exposes while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// A snapshot of what the worker has done since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Deliveries handed to handlers.
    pub delivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages put back in their queue.
    pub requeued: u64,
    /// Messages rejected without requeue (handler error under `reject`, or poison).
    pub rejected: u64,
    /// Handlers that panicked (each counted also under requeued or rejected).
    pub panicked: u64,
    /// Times the whole tree was restarted.
    pub restarts: u64,
    /// Outcomes that could not be sent because the delivery's channel had died; the broker
    /// redelivers those messages.
    pub dropped: u64,
    /// Failed messages moved to a delay queue of their retry schedule (and acknowledged).
    pub retried: u64,
    /// Messages moved to their parking queue (and acknowledged).
    pub parked: u64,
    /// Messages their handler acknowledged or refused itself (the supervisor left them).
    pub settled_by_handler: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) settled_by_handler: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            delivered: get(&self.delivered),
            acked: get(&self.acked),
            requeued: get(&self.requeued),
            rejected: get(&self.rejected),
            panicked: get(&self.panicked),
            restarts: get(&self.restarts),
            dropped: get(&self.dropped),
            retried: get(&self.retried),
            parked: get(&self.parked),
            settled_by_handler: get(&self.settled_by_handler),
        }
    }
}

/// Watches a running supervisor from outside: readiness and statistics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    pub(crate) counters: Arc<Counters>,
    pub(crate) ready: watch::Receiver<bool>,
}

impl SupervisorHandle {
    /// True while every consumer has its `consume-ok` (false during a restart).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the worker is ready (again).
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}
