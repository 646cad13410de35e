//! A confirmed publisher on its own connection that loses nothing: an id stays owed until the
//! broker confirms it, and a lost connection is opened again (after a short backoff) and
//! every owed id republished.
//!
//! ```text
//!   run: loop { open_connection ──► life ──► (connection lost) backoff 100 ms .. 1 s }
//!   life: republish every unconfirmed id, then new ids at the rate until stopped,
//!         at most WINDOW unconfirmed in flight; then wait for the last confirms
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable};
use serena::{
    Confirmation, Connection, ConnectionConfig, Error, PublishOptions, QueueDeclareOptions,
    open_connection,
};
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, sleep};

use crate::ledger::{Id, Ledger, encode_body};

/// Unconfirmed publishes in flight per publisher.
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

/// What a publisher owes: the next new sequence number, and the ids published but not
/// confirmed.
#[derive(Default)]
struct Outbox {
    next_seq: u64,
    unconfirmed: BTreeSet<u64>,
}

impl PublisherTask {
    /// Publishes until stopped, then until every id it published is confirmed.
    pub(crate) async fn run(self) {
        let mut out = Outbox::default();
        let mut backoff = RECONNECT_MIN;
        let mut last_error = String::new();
        loop {
            if *self.stop.borrow() && out.unconfirmed.is_empty() {
                return;
            }
            let generation = *self.connected.borrow();
            let result = open_connection(&self.config, async |conn| {
                self.connected.send_modify(|g| *g += 1);
                self.life(conn, &mut out).await
            })
            .await;
            let Err(error) = result else {
                return;
            };
            if *self.connected.borrow() != generation {
                // It was connected: a lost connection, not a failed attempt.
                self.ledger.reconnects.fetch_add(1, Ordering::Relaxed);
                backoff = RECONNECT_MIN;
            }
            let text = error.to_string();
            if text != last_error {
                eprintln!(
                    "    publisher {}: {text}; reconnecting, {} ids to republish",
                    self.index,
                    out.unconfirmed.len()
                );
                last_error = text;
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// One connection's life: republish what is unconfirmed, publish new ids at the rate
    /// until stopped, then wait for the last confirms. Cancelled at any `.await` when the
    /// connection dies; `out` is consistent at each of them.
    async fn life(&self, conn: &Connection, out: &mut Outbox) -> serena::Result<()> {
        let ch = conn.channel().await?;
        let properties = BasicProperties::default().with_persistent(true);
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        let mut retry: VecDeque<u64> = out.unconfirmed.iter().copied().collect();
        let mut in_flight: VecDeque<(u64, Confirmation)> = VecDeque::with_capacity(WINDOW);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let per_tick = (u64::from(self.rate) * TICK.as_millis() as u64 / 1000).max(1);
        let mut budget = 0u64;
        loop {
            let seq = match retry.pop_front() {
                Some(seq) => seq,
                None if stopping => match in_flight.pop_front() {
                    Some((seq, c)) => {
                        self.settle(seq, c.await, out, &mut retry)?;
                        continue;
                    }
                    None => return Ok(()),
                },
                None if budget == 0 => {
                    tokio::select! {
                        _ = tick.tick() => budget = per_tick,
                        _ = stop.wait_for(|s| *s) => stopping = true,
                    }
                    continue;
                }
                None => {
                    budget -= 1;
                    let seq = out.next_seq;
                    out.next_seq += 1;
                    out.unconfirmed.insert(seq);
                    seq
                }
            };
            if in_flight.len() >= WINDOW
                && let Some((oldest, c)) = in_flight.pop_front()
            {
                self.settle(oldest, c.await, out, &mut retry)?;
            }
            let id = Id {
                publisher: self.index,
                seq,
            };
            let queue = &self.queues[(seq % self.queues.len() as u64) as usize];
            let confirmation = ch
                .basic_publish_with(
                    "",
                    queue,
                    encode_body(id),
                    properties.clone(),
                    PublishOptions::default(),
                )
                .await?;
            self.ledger.published.fetch_add(1, Ordering::Relaxed);
            in_flight.push_back((seq, confirmation));
        }
    }

    /// Books one confirm; a nack or a return puts the id back to be published again.
    fn settle(
        &self,
        seq: u64,
        result: serena::Result<()>,
        out: &mut Outbox,
        retry: &mut VecDeque<u64>,
    ) -> serena::Result<()> {
        match result {
            Ok(()) => {
                out.unconfirmed.remove(&seq);
                self.ledger.confirm(Id {
                    publisher: self.index,
                    seq,
                });
                Ok(())
            }
            Err(Error::Nacked | Error::Returned(_)) => {
                self.ledger.nacked.fetch_add(1, Ordering::Relaxed);
                retry.push_back(seq);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
