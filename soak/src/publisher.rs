//! A confirmed publisher on its own connection that loses nothing: serena's
//! `ReliablePublisher`, which reconnects by itself (after a short backoff) and republishes
//! every message not confirmed when a connection was lost. This task only paces new ids and
//! books the confirms.
//!
//! ```text
//!   run: ReliablePublisher::scope ──► new ids at the rate until stopped, each its own
//!        publish future (at most WINDOW at once), booked when confirmed; then the last ones
//!   the state watch: each Connected bumps `connected` (a reconnect after the first)
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable};
use serena::worker::Backoff;
use serena::{
    Connection, ConnectionConfig, PublisherState, QueueDeclareOptions, ReliablePublisher,
    ReliablePublisherOptions,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::ledger::{Id, Ledger, encode_body};

/// Unconfirmed publishes in flight per publisher: the publisher's cap, and the most publish
/// futures this task keeps.
const WINDOW: usize = 128;
/// Publishing happens in small batches on this tick to hold the rate.
const TICK: Duration = Duration::from_millis(10);
/// The reconnect delay starts here and doubles up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// A crashed run's queues delete themselves after this long without a consumer.
const QUEUE_EXPIRES_MS: i32 = 600_000;

/// The soak's queues: durable (messages are persistent), expiring when a crashed run leaves
/// them behind.
fn queue_options() -> QueueDeclareOptions {
    let mut arguments = FieldTable::new();
    arguments.insert("x-expires", QUEUE_EXPIRES_MS);
    QueueDeclareOptions::default()
        .with_durable(true)
        .with_arguments(arguments)
}

/// Declares `queues` (idempotent: the workers do it on every restart too).
pub(crate) async fn declare_queues(conn: &Connection, queues: &[String]) -> serena::Result<()> {
    conn.open_channel(async |ch| {
        for q in queues {
            ch.queue_declare(q, queue_options()).await?;
        }
        Ok(())
    })
    .await
}

/// One confirmed publisher.
pub(crate) struct PublisherTask {
    pub(crate) index: u32,
    pub(crate) config: ConnectionConfig,
    pub(crate) queues: Arc<Vec<String>>,
    pub(crate) ledger: Arc<Ledger>,
    /// Messages per second.
    pub(crate) rate: u32,
    pub(crate) stop: watch::Receiver<bool>,
    /// Bumped each time the publisher is connected (again).
    pub(crate) connected: watch::Sender<u64>,
}

impl PublisherTask {
    /// Publishes until stopped, then until every id it published is confirmed.
    pub(crate) async fn run(self) -> serena::Result<()> {
        let options = ReliablePublisherOptions::default()
            .with_max_messages(WINDOW)
            .with_backoff(Backoff {
                initial: RECONNECT_MIN,
                max: RECONNECT_MAX,
                ..Backoff::default()
            });
        ReliablePublisher::scope(&self.config, options, async |p| {
            self.publish(p).await;
            Ok(())
        })
        .await
    }

    /// New ids at the rate until stopped, at most [`WINDOW`] awaiting their confirm; then
    /// waits for the last confirms.
    async fn publish(&self, p: &ReliablePublisher) {
        let properties = BasicProperties::default().with_persistent(true);
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        let mut states = p.watch_state();
        let mut connected_before = false;
        let mut last_cause = String::new();
        let mut in_flight = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let per_tick = (u64::from(self.rate) * TICK.as_millis() as u64 / 1000).max(1);
        let (mut budget, mut next_seq, mut sent_seen) = (0u64, 0u64, 0u64);
        loop {
            while budget > 0 && in_flight.len() < WINDOW {
                budget -= 1;
                let id = Id {
                    publisher: self.index,
                    seq: next_seq,
                };
                next_seq += 1;
                let queue = &self.queues[(id.seq % self.queues.len() as u64) as usize];
                let (p, queue, properties) = (p.clone(), queue.clone(), properties.clone());
                in_flight.spawn(async move {
                    // A nack, a lost connection: the publisher publishes it again itself.
                    // What comes back here is final.
                    (
                        id,
                        p.publish("", &queue, encode_body(id).to_vec(), properties)
                            .await,
                    )
                });
            }
            if stopping && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                _ = tick.tick(), if !stopping => budget += per_tick,
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    budget = 0;
                }
                Some(done) = in_flight.join_next() => match done {
                    Ok((id, Ok(()))) => self.ledger.confirm(id),
                    Ok((id, Err(e))) => {
                        // Returned (the queue was missing for a moment): booked and
                        // published again as a new attempt of the same id.
                        self.ledger.nacked.fetch_add(1, Ordering::Relaxed);
                        eprintln!("    publisher {}: {e}; publishing {} again", self.index, id.seq);
                        let (p, queue, properties) = (
                            p.clone(),
                            self.queues[(id.seq % self.queues.len() as u64) as usize].clone(),
                            properties.clone(),
                        );
                        in_flight.spawn(async move {
                            (id, p.publish("", &queue, encode_body(id).to_vec(), properties).await)
                        });
                    }
                    Err(e) => panic!("a publish task failed: {e}"),
                },
                changed = states.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    match &*states.borrow_and_update() {
                        PublisherState::Connected(_) => {
                            if connected_before {
                                self.ledger.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            connected_before = true;
                            self.connected.send_modify(|g| *g += 1);
                        }
                        PublisherState::Reconnecting { cause } => {
                            let text = cause.to_string();
                            if text != last_cause {
                                eprintln!(
                                    "    publisher {}: {text}; reconnecting, {} ids to republish",
                                    self.index,
                                    p.stats().in_flight
                                );
                                last_cause = text;
                            }
                        }
                        _ => {}
                    }
                }
            }
            let sent = p.stats().sent;
            self.ledger
                .published
                .fetch_add(sent - sent_seen, Ordering::Relaxed);
            sent_seen = sent;
        }
    }
}
