//! Counters and readiness the supervisor exposes while it runs.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use super::failure::TreeError;

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
    /// Requests answered: the handler's reply was confirmed by the broker before the request
    /// was acknowledged (each also counted under `acked`).
    pub replied: u64,
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
    pub(crate) replied: AtomicU64,
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
            replied: get(&self.replied),
        }
    }
}

/// Where a supervisor is, and why it is not ready when it is not.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Readiness {
    /// Connecting and starting the consumers for the first time; nothing has failed yet.
    #[default]
    Starting,
    /// Every consumer is consuming.
    Ready,
    /// Up, but these exclusive consumers wait their turn: another connection's consumer holds
    /// their queue. They try again every few seconds; the other consumers run.
    Standby {
        /// The waiting consumers, by name.
        waiting: Vec<Cow<'static, str>>,
    },
    /// The last life of the tree ended with `error`; the next one starts at `next_attempt`
    /// (and may already be connecting when that is past).
    Restarting {
        /// What ended the last life, and in which phase.
        error: TreeError,
        /// When the next life starts.
        next_attempt: Instant,
    },
    /// The supervisor has returned: after a shutdown, or on an error its caller got.
    Stopped,
}

/// What the supervisor publishes to its handles.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    readiness: Readiness,
    last_error: Option<TreeError>,
    /// The tree is up: every consumer consuming or on standby.
    up: bool,
    standby: Vec<Cow<'static, str>>,
}

impl Status {
    fn settle_readiness(&mut self) {
        if self.up {
            self.readiness = if self.standby.is_empty() {
                Readiness::Ready
            } else {
                Readiness::Standby {
                    waiting: self.standby.clone(),
                }
            };
        }
    }

    /// Every consumer consumes or stands by.
    pub(crate) fn tree_up(&mut self) {
        self.up = true;
        self.settle_readiness();
    }

    /// `consumer` starts (`true`) or ends (`false`) waiting its turn.
    pub(crate) fn standby(&mut self, consumer: Cow<'static, str>, waiting: bool) {
        self.standby.retain(|c| *c != consumer);
        if waiting {
            self.standby.push(consumer);
        }
        self.settle_readiness();
    }

    /// The tree ended with `error`; the next life starts at `next_attempt`.
    pub(crate) fn tree_failed(&mut self, error: TreeError, next_attempt: Instant) {
        self.tree_down();
        self.last_error = Some(error.clone());
        self.readiness = Readiness::Restarting {
            error,
            next_attempt,
        };
    }

    /// The supervisor returns, on `error` if any.
    pub(crate) fn stopped(&mut self, error: Option<TreeError>) {
        self.tree_down();
        if error.is_some() {
            self.last_error = error;
        }
        self.readiness = Readiness::Stopped;
    }

    fn tree_down(&mut self) {
        self.up = false;
        self.standby.clear();
    }
}

/// Watches a running supervisor from outside: readiness and statistics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    pub(crate) counters: Arc<Counters>,
    pub(crate) status: watch::Receiver<Status>,
}

impl SupervisorHandle {
    /// True while every consumer has its `consume-ok` (false during a restart, and while an
    /// exclusive consumer stands by: see [`readiness`](Self::readiness)).
    pub fn is_ready(&self) -> bool {
        matches!(self.status.borrow().readiness, Readiness::Ready)
    }

    /// Waits until the worker is ready (again). Returns at once, not ready, when the
    /// supervisor has returned.
    pub async fn ready(&mut self) {
        let _ = self
            .status
            .wait_for(|s| matches!(s.readiness, Readiness::Ready | Readiness::Stopped))
            .await;
    }

    /// Where the supervisor is now, with the error that keeps it from being ready.
    pub fn readiness(&self) -> Readiness {
        self.status.borrow().readiness.clone()
    }

    /// The error that ended the last life of the tree (a failed connection attempt, a lost
    /// connection, a refused declaration, ...), kept after the tree is up again; `None` when
    /// nothing has failed.
    pub fn last_error(&self) -> Option<TreeError> {
        self.status.borrow().last_error.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}
