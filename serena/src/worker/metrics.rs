//! What the worker records through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), at the places that count [`Stats`](super::Stats): one bookkeeping, two views.
//!
//! Every handle is resolved once (per consume loop, per connection, per publisher), so a
//! message costs a few atomic additions: no label formatting, no lookup, no allocation. Without
//! the feature the same types exist with nothing inside, and the calls compile to nothing.
//!
//! The metric list is in the [module docs](super#metrics).

use std::sync::Arc;
use std::time::Duration;

use super::stats::Event;

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

    use super::super::stats::{Event, Readiness};
    use crate::client::Connection;
    use crate::error::{Error, Result};

    /// When a handler call started.
    pub(crate) type Began = Instant;

    pub(crate) fn now() -> Began {
        Instant::now()
    }

    /// One consumer's handles, resolved when its consume loop starts; a clone is one
    /// reference count.
    #[derive(Debug, Clone)]
    pub(crate) struct ConsumerMetrics(Arc<ConsumerHandles>);

    #[derive(Debug)]
    pub(crate) struct ConsumerHandles {
        deliveries: Counter,
        acks: Counter,
        requeues: Counter,
        rejects: Counter,
        retries: Counter,
        parked: Counter,
        dropped: Counter,
        settled_by_handler: Counter,
        replies: Counter,
        errors: Counter,
        panics: Counter,
        duration: Histogram,
        in_flight: Gauge,
    }

    impl ConsumerMetrics {
        pub(crate) fn new(queue: &str) -> Self {
            let q = || [("queue", queue.to_owned())];
            ConsumerMetrics(Arc::new(ConsumerHandles {
                deliveries: counter!("serena_consumer_deliveries_total", &q()),
                acks: counter!("serena_consumer_acks_total", &q()),
                requeues: counter!("serena_consumer_requeues_total", &q()),
                rejects: counter!("serena_consumer_rejects_total", &q()),
                retries: counter!("serena_consumer_retries_total", &q()),
                parked: counter!("serena_consumer_parked_total", &q()),
                dropped: counter!("serena_consumer_dropped_total", &q()),
                settled_by_handler: counter!("serena_consumer_settled_by_handler_total", &q()),
                replies: counter!("serena_consumer_replies_total", &q()),
                errors: counter!("serena_consumer_handler_errors_total", &q()),
                panics: counter!("serena_consumer_handler_panics_total", &q()),
                duration: histogram!("serena_consumer_handler_duration_seconds", &q()),
                in_flight: gauge!("serena_consumer_in_flight", &q()),
            }))
        }

        pub(crate) fn count(&self, event: Event) {
            let m = &self.0;
            let c = match event {
                Event::Delivered => &m.deliveries,
                Event::Acked => &m.acks,
                Event::Requeued => &m.requeues,
                Event::Rejected => &m.rejects,
                Event::Retried => &m.retries,
                Event::Parked => &m.parked,
                Event::Dropped => &m.dropped,
                Event::SettledByHandler => &m.settled_by_handler,
                Event::Replied => &m.replies,
                Event::Panicked => &m.panics,
            };
            c.increment(1);
        }

        /// A handler call that began at `began` returned, failed or not.
        pub(crate) fn handler_called(&self, began: Began, failed: bool) {
            self.0.duration.record(began.elapsed().as_secs_f64());
            if failed {
                self.0.errors.increment(1);
            }
        }

        pub(crate) fn handler_started(&self) -> InFlight {
            self.0.in_flight.increment(1.0);
            InFlight(self.0.in_flight.clone())
        }
    }

    /// A running handler, counted in `serena_consumer_in_flight` until dropped (also when its
    /// task is aborted at the shutdown timeout).
    #[derive(Debug)]
    pub(crate) struct InFlight(Gauge);

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }

    /// The `connection` label of a connection without a name.
    const DEFAULT_LABEL: &str = "serena";

    const STATES: [&str; 5] = ["starting", "ready", "standby", "restarting", "stopped"];

    /// The supervisor's handles, labelled with its connection's name.
    #[derive(Debug)]
    pub(crate) struct SupervisorMetrics {
        label: String,
        states: [Gauge; 5],
        restarts: Counter,
        reconnects: Counter,
        connected_before: AtomicBool,
    }

    impl SupervisorMetrics {
        pub(crate) fn new(connection: Option<&str>) -> Self {
            let label = connection.unwrap_or(DEFAULT_LABEL).to_owned();
            let states = STATES.map(|state| {
                gauge!("serena_worker_state", "connection" => label.clone(), "state" => state)
            });
            SupervisorMetrics {
                restarts: counter!("serena_worker_restarts_total", "connection" => label.clone()),
                reconnects: counter!(
                    "serena_connection_reconnects_total",
                    "connection" => label.clone()
                ),
                label,
                states,
                connected_before: AtomicBool::new(false),
            }
        }

        pub(crate) fn restarted(&self) {
            self.restarts.increment(1);
        }

        pub(crate) fn connected(&self) {
            if self.connected_before.swap(true, Ordering::Relaxed) {
                self.reconnects.increment(1);
            }
        }

        pub(crate) fn state(&self, readiness: &Readiness) {
            let now = match readiness {
                Readiness::Starting => 0,
                Readiness::Ready => 1,
                Readiness::Standby { .. } => 2,
                Readiness::Restarting { .. } => 3,
                Readiness::Stopped => 4,
            };
            for (i, g) in self.states.iter().enumerate() {
                g.set(if i == now { 1.0 } else { 0.0 });
            }
        }

        /// Samples `conn`'s traffic counters every `every` until dropped (the tree's end).
        pub(crate) async fn sample_connection(&self, conn: &Connection, every: Duration) {
            let label = || [("connection", self.label.clone())];
            let sent = counter!("serena_connection_sent_bytes_total", &label());
            let frames = counter!("serena_connection_received_frames_total", &label());
            let blocked = counter!("serena_connection_blocked_seconds_total", &label());
            // The counter takes whole numbers: whole seconds are reported as they complete.
            let is_blocked = gauge!("serena_connection_blocked", &label());
            let (mut last_sent, mut last_frames) = (0, 0);
            let mut last = Instant::now();
            let (mut blocked_ms, mut reported_s) = (0u64, 0u64);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = conn.heartbeat_stats();
                sent.increment(s.bytes_written.saturating_sub(last_sent));
                frames.increment(s.frames_received.saturating_sub(last_frames));
                (last_sent, last_frames) = (s.bytes_written, s.frames_received);
                let now = Instant::now();
                let blocked_now = conn.blocked().is_some();
                is_blocked.set(if blocked_now { 1.0 } else { 0.0 });
                if blocked_now {
                    let ms =
                        u64::try_from(now.duration_since(last).as_millis()).unwrap_or(u64::MAX);
                    blocked_ms = blocked_ms.saturating_add(ms);
                    blocked.increment(blocked_ms / 1000 - reported_s);
                    reported_s = blocked_ms / 1000;
                }
                last = now;
            }
        }
    }

    /// A publisher's handles.
    #[derive(Debug, Clone)]
    pub(crate) struct PublisherMetrics {
        published: Counter,
        confirmed: Counter,
        nacked: Counter,
        returned: Counter,
        failed: Counter,
        latency: Histogram,
    }

    impl PublisherMetrics {
        pub(crate) fn new(connection: Option<&str>) -> Self {
            let c = || [("connection", connection.unwrap_or(DEFAULT_LABEL).to_owned())];
            PublisherMetrics {
                published: counter!("serena_publisher_published_total", &c()),
                confirmed: counter!("serena_publisher_confirmed_total", &c()),
                nacked: counter!("serena_publisher_nacked_total", &c()),
                returned: counter!("serena_publisher_returned_total", &c()),
                failed: counter!("serena_publisher_failed_total", &c()),
                latency: histogram!("serena_publisher_confirm_duration_seconds", &c()),
            }
        }

        /// A publish started at `started` ended with `result`.
        pub(crate) fn published(&self, started: Began, result: &Result<()>) {
            self.published.increment(1);
            let answered = match result {
                Ok(()) => Some(&self.confirmed),
                Err(Error::Nacked) => Some(&self.nacked),
                Err(Error::Returned(_)) => Some(&self.returned),
                Err(_) => None,
            };
            match answered {
                Some(c) => {
                    c.increment(1);
                    self.latency.record(started.elapsed().as_secs_f64());
                }
                None => self.failed.increment(1),
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    use super::super::stats::{Event, Readiness};
    use crate::client::Connection;
    use crate::error::Result;

    /// Stands for the time a handler call began; nothing to read without the feature.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Began;

    #[inline(always)]
    pub(crate) fn now() -> Began {
        Began
    }

    #[derive(Debug, Clone)]
    pub(crate) struct ConsumerMetrics;

    impl ConsumerMetrics {
        pub(crate) fn new(_queue: &str) -> Self {
            ConsumerMetrics
        }
        #[inline(always)]
        pub(crate) fn count(&self, _event: Event) {}
        #[inline(always)]
        pub(crate) fn handler_called(&self, _began: Began, _failed: bool) {}
        #[inline(always)]
        pub(crate) fn handler_started(&self) -> InFlight {
            InFlight
        }
    }

    #[derive(Debug)]
    pub(crate) struct InFlight;

    #[derive(Debug)]
    pub(crate) struct SupervisorMetrics;

    impl SupervisorMetrics {
        pub(crate) fn new(_connection: Option<&str>) -> Self {
            SupervisorMetrics
        }
        pub(crate) fn restarted(&self) {}
        pub(crate) fn connected(&self) {}
        pub(crate) fn state(&self, _readiness: &Readiness) {}
        /// Nothing to sample: never resolves, like the sampler it stands for.
        pub(crate) async fn sample_connection(&self, _conn: &Connection, _every: Duration) {
            std::future::pending::<()>().await
        }
    }

    #[derive(Debug, Clone)]
    pub(crate) struct PublisherMetrics;

    impl PublisherMetrics {
        pub(crate) fn new(_connection: Option<&str>) -> Self {
            PublisherMetrics
        }
        #[inline(always)]
        pub(crate) fn published(&self, _started: Began, _result: &Result<()>) {}
    }
}

pub(crate) use imp::{ConsumerMetrics, PublisherMetrics, SupervisorMetrics, now};

/// How often the connection's counters are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A consume loop's counting: the supervisor's [`Stats`](super::Stats) counters and the
/// consumer's metrics, bumped together.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) counters: Arc<super::stats::Counters>,
    pub(crate) metrics: ConsumerMetrics,
}

impl Tally {
    pub(crate) fn count(&self, event: Event) {
        self.counters.bump_event(event);
        self.metrics.count(event);
    }
}
