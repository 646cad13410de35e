//! A publisher for services: one handle, cheap to clone, that survives lost connections.
//!
//! ```text
//!   ReliablePublisher::scope(config, options, body)
//!     ├── body(&publisher) ... publisher.publish(..) from any task, any clone
//!     │        │ waits for room (max_messages / max_bytes), or fails at once (WhenFull::Fail)
//!     │        ▼
//!     │     outbox: id -> message (stable message_id), queue of ids to send
//!     │        ▲                                  │
//!     │        │ confirm / return / failure       ▼
//!     └── driver (same task, raced with body):
//!           loop: connect (host list from `first`, backoff + jitter)
//!                   on a new connection or channel: queue every unconfirmed id again
//!                   send queued ids on one confirmed channel; settle confirms in order
//!                 lost ─► trace the cause, count the reconnect, back off, connect again
//! ```
//!
//! Everything the publisher starts lives inside the scope's future: the connection's tasks
//! end with it, and publishes still waiting when the scope ends (from clones the body did
//! not join) fail with [`Error::Closed`].

mod driver;
mod hosts;
mod options;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot, watch};

use crate::client::IntoBody;
use crate::config::{ConnectionConfig, Endpoint};
use crate::error::{Error, Result};
use crate::proto::BasicProperties;

pub use options::{ReliablePublisherOptions, WhenFull};

/// Where a [`ReliablePublisher`]'s connection is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PublisherState {
    /// Connecting for the first time.
    Connecting,
    /// Connected to this broker, with a confirmed channel open.
    Connected(Endpoint),
    /// The connection was lost (or could not be opened) for `cause`; connecting again.
    Reconnecting {
        /// Why the last connection ended, or why the last attempt failed.
        cause: Error,
    },
    /// The scope has ended; publishing fails with [`Error::Closed`].
    Closed,
}

/// Counters of a [`ReliablePublisher`], from [`ReliablePublisher::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PublisherStats {
    /// Messages held now: queued, sent and awaiting their confirm, or awaiting a republish.
    pub in_flight: usize,
    /// Their body bytes.
    pub in_flight_bytes: usize,
    /// Publishes sent to a broker, republishes included.
    pub sent: u64,
    /// Messages the broker confirmed.
    pub confirmed: u64,
    /// Sends of a message that had been sent before on a connection or channel that was then
    /// lost: each one is a possible duplicate for consumers (at-least-once).
    pub republished: u64,
    /// Publishes that failed with an error no retry fixes (returned, refused, a timeout).
    pub failed: u64,
    /// Connections opened after the first one.
    pub reconnects: u64,
}

/// What is published, as the caller gave it (with its `message_id` set).
struct Message {
    exchange: String,
    routing_key: String,
    body: Bytes,
    properties: BasicProperties,
    mandatory: bool,
}

/// One message held until the broker confirms it.
struct Entry {
    /// Shared with the driver while it sends it: taken without copying under the lock.
    message: Arc<Message>,
    /// Times sent so far.
    sends: u32,
    /// The caller's publish, waiting for the outcome.
    waiter: Option<oneshot::Sender<Result<()>>>,
}

/// What the publisher holds, under one lock.
#[derive(Default)]
struct Outbox {
    next_id: u64,
    /// Every message not yet confirmed or failed, by id (the order they were published in).
    entries: BTreeMap<u64, Entry>,
    /// Ids to send next. May name withdrawn ids (skipped when taken).
    queue: VecDeque<u64>,
    bytes: usize,
    /// Set when the scope ends.
    closed: bool,
}

impl Outbox {
    /// Removes `id`, freeing its room; its waiter, if any.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.bytes -= entry.message.body.len();
        Some(entry)
    }

    /// Queues every held message again, in publish order: after a lost connection or channel,
    /// what was in flight on it is sent again, before anything newer.
    fn requeue_all(&mut self) {
        self.queue = self.entries.keys().copied().collect();
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    confirmed: AtomicU64,
    republished: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
}

struct Shared {
    config: ConnectionConfig,
    options: ReliablePublisherOptions,
    /// Prefix of the message ids this publisher generates: random per publisher.
    id_prefix: String,
    outbox: Mutex<Outbox>,
    /// Wakes the driver: something was queued.
    work: Notify,
    /// Wakes waiting publishes: room was freed.
    room: Notify,
    state: watch::Sender<PublisherState>,
    counters: Counters,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles `id` with `outcome`, if it is still held, and frees its room.
    fn settle(&self, id: u64, outcome: Result<()>) {
        let entry = self.outbox().remove(id);
        self.room.notify_waiters();
        let Some(entry) = entry else { return };
        match &outcome {
            Ok(()) => self.counters.confirmed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(waiter) = entry.waiter {
            let _ = waiter.send(outcome);
        }
    }

    /// Ends the publisher: later publishes fail, waiting ones fail with [`Error::Closed`].
    fn close(&self) {
        let entries = {
            let mut out = self.outbox();
            out.closed = true;
            out.queue.clear();
            out.bytes = 0;
            std::mem::take(&mut out.entries)
        };
        for entry in entries.into_values() {
            if let Some(w) = entry.waiter {
                let _ = w.send(Err(Error::Closed("publisher")));
            }
        }
        self.room.notify_waiters();
        self.state.send_replace(PublisherState::Closed);
    }
}

/// A long-lived confirmed publisher that reconnects by itself and republishes whatever was
/// not confirmed when a connection was lost (at-least-once). Cheap to clone; every clone
/// publishes through the same connection.
///
/// It lives inside [`scope`](Self::scope), like a connection inside
/// [`open_connection`](crate::open_connection): the scope owns the connection, its tasks
/// and the reconnect loop, and nothing outlives it. Each [`publish`](Self::publish) resolves
/// once the broker confirmed the message, however many connections that took, or fails with
/// an error no retry can fix: [`Error::Returned`] (unroutable, with `mandatory`), the
/// broker's refusal of that message ([`Error::UnexpectedClose`] with 403 access-refused,
/// 404 not-found or 406 precondition-failed, scope [`CloseScope::Channel`](crate::CloseScope)),
/// [`Error::Timeout`] ([`ReliablePublisherOptions::publish_timeout`]), [`Error::PublisherFull`]
/// ([`WhenFull::Fail`]), [`Error::MessageTooLarge`], or [`Error::Closed`] after the scope.
///
/// Each message keeps one `message_id` through every republish: the caller's, or one
/// generated (`<publisher>-<n>`), so consumers can drop duplicates.
///
/// Where it connects: the host list in order (shuffled once with `shuffle_hosts`). After a
/// close with 320 CONNECTION_FORCED (a node shutting down, an operator) the next connection
/// starts from the *next* broker of the list; after other losses (a cut, a heartbeat timeout)
/// from the same broker. A nack is handled like a lost connection (RabbitMQ 3.10 was seen
/// nacking every publish on a channel that raced a quorum queue's leader election): the
/// publisher reconnects and publishes the message again.
/// [`ReliablePublisherOptions::rebalance_interval`] spreads long-lived publishers back over
/// the list. Each lost connection is a `WARN` event with its cause, the broker it was on, how
/// many messages are to be republished and the next broker tried.
///
/// ```no_run
/// use serena::{ConnectionConfig, ReliablePublisher, ReliablePublisherOptions};
/// use serena::proto::BasicProperties;
///
/// async fn emit(config: &ConnectionConfig) -> serena::Result<()> {
///     ReliablePublisher::scope(config, ReliablePublisherOptions::default(), async |p| {
///         // Clone `p` into request handlers; each publish returns once confirmed.
///         p.publish("events", "order.created", b"{\"id\":1}".to_vec(), BasicProperties::default())
///             .await
///     })
///     .await
/// }
/// ```
#[derive(Clone)]
pub struct ReliablePublisher {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReliablePublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliablePublisher")
            .field("id_prefix", &self.shared.id_prefix)
            .field("state", &*self.shared.state.borrow())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Closes the publisher when the scope's future ends, returned or dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Withdraws a publish whose caller stopped waiting (dropped, timed out): it is not sent
/// (again), and its room is freed. A no-op once it was settled.
/// The broker's confirm of a message put in the outbox with
/// [`ReliablePublisher::publish_queued`]: `Ok` once confirmed, or the error no retry fixes.
#[derive(Debug)]
#[must_use = "the outcome of the publish is only known by awaiting it"]
pub struct ReliableConfirmation {
    outcome: oneshot::Receiver<Result<()>>,
}

impl Future for ReliableConfirmation {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.outcome)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("publisher"))))
    }
}

struct Withdraw<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let removed = self.shared.outbox().remove(self.id);
        if removed.is_some() {
            self.shared.room.notify_waiters();
        }
    }
}

impl ReliablePublisher {
    /// Runs `body` with a publisher connected by `config` (its host list included), and
    /// returns `body`'s result. The publisher connects in the background of the scope:
    /// publishes made before it is connected wait in its outbox (within its caps).
    ///
    /// The scope ends early only when the broker refuses the login (403 access-refused on
    /// connecting, which no reconnect fixes): `body` is cancelled and that error returned.
    /// When `body` returns, publishes still waiting fail with [`Error::Closed`] and the
    /// connection is closed cleanly. Dropping the scope's future drops everything in it.
    pub async fn scope<T, E: From<Error>>(
        config: &ConnectionConfig,
        options: ReliablePublisherOptions,
        body: impl AsyncFnOnce(&ReliablePublisher) -> Result<T, E>,
    ) -> Result<T, E> {
        let publisher = ReliablePublisher::new(config.clone(), options);
        let _close = CloseOnDrop(publisher.shared.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = driver::Driver::new(publisher.shared.clone(), stop_rx);
        let run = driver.run();
        tokio::pin!(run);
        let outcome = tokio::select! {
            v = body(&publisher) => Ok(v),
            r = &mut run => Err(r.err().unwrap_or(Error::Closed("publisher"))),
        };
        match outcome {
            Ok(v) => {
                publisher.shared.close();
                // The driver closes its connection cleanly once told to stop.
                let _ = stop_tx.send(true);
                if let Err(e) = run.await {
                    tracing::debug!(error = %e, "reliable publisher: closing its connection failed");
                }
                v
            }
            Err(e) => Err(E::from(e)),
        }
    }

    fn new(config: ConnectionConfig, options: ReliablePublisherOptions) -> Self {
        let id_prefix = format!("{:016x}", fastrand::u64(..));
        ReliablePublisher {
            shared: Arc::new(Shared {
                config,
                options,
                id_prefix,
                outbox: Mutex::new(Outbox::default()),
                work: Notify::new(),
                room: Notify::new(),
                state: watch::Sender::new(PublisherState::Connecting),
                counters: Counters::default(),
            }),
        }
    }

    /// Puts a message in the outbox (waiting for room first, as [`publish`](Self::publish)
    /// does, or failing at once with [`WhenFull::Fail`]) and returns as soon as it is there,
    /// with a [`ReliableConfirmation`] that resolves when the broker confirmed it, across
    /// reconnects. Many messages can be in flight from one task this way, as with
    /// [`Channel::basic_publish_with`](crate::Channel::basic_publish_with).
    ///
    /// The message is sent whether or not the confirmation is awaited: dropping it does not
    /// withdraw the message. `publish_timeout` does not apply; bound the wait with
    /// `tokio::time::timeout` if needed.
    pub async fn publish_queued(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<ReliableConfirmation> {
        let mandatory = self.shared.options.mandatory;
        let (_, outcome) = self
            .enqueue(
                exchange,
                routing_key,
                body.into_bytes(),
                properties,
                mandatory,
            )
            .await?;
        Ok(ReliableConfirmation { outcome })
    }

    /// Publishes `body` to `exchange` with `routing_key` and waits until the broker confirms
    /// it, across reconnects. See [`ReliablePublisher`] for the errors. Dropping the future
    /// withdraws the message (it is not sent, or not sent again).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<()> {
        let mandatory = self.shared.options.mandatory;
        self.publish_message(
            exchange,
            routing_key,
            body.into_bytes(),
            properties,
            mandatory,
        )
        .await
    }

    /// [`publish`](Self::publish) with `mandatory` for this message only.
    pub(crate) async fn publish_message(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let shared = &*self.shared;
        let (id, outcome) = self
            .enqueue(exchange, routing_key, body, properties, mandatory)
            .await?;
        let _withdraw = Withdraw { shared, id };
        let wait = async { outcome.await.unwrap_or(Err(Error::Closed("publisher"))) };
        match shared.options.publish_timeout {
            Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(Error::Timeout(limit))
            }),
            None => wait.await,
        }
    }

    /// Waits for room, then puts the message in the outbox; its id and the outcome to await.
    async fn enqueue(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        mut properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(u64, oneshot::Receiver<Result<()>>)> {
        let shared = &*self.shared;
        let options = &shared.options;
        if body.len() > options.max_bytes {
            return Err(Error::MessageTooLarge {
                size: body.len(),
                max: options.max_bytes,
            });
        }
        let mut entry = Some((exchange.to_owned(), routing_key.to_owned(), body));
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut out = shared.outbox();
                if out.closed {
                    return Err(Error::Closed("publisher"));
                }
                let len = entry.as_ref().map_or(0, |e| e.2.len());
                let fits = out.entries.len() < options.max_messages
                    && out.bytes + len <= options.max_bytes;
                if fits {
                    let (exchange, routing_key, body) = entry.take().expect("taken once");
                    let id = out.next_id;
                    out.next_id += 1;
                    if properties.message_id.is_none() {
                        properties.message_id = Some(format!("{}-{id}", shared.id_prefix).into());
                    }
                    let (tx, rx) = oneshot::channel();
                    out.bytes += body.len();
                    out.entries.insert(
                        id,
                        Entry {
                            message: Arc::new(Message {
                                exchange,
                                routing_key,
                                body,
                                properties,
                                mandatory,
                            }),
                            sends: 0,
                            waiter: Some(tx),
                        },
                    );
                    out.queue.push_back(id);
                    // Withdrawn ids stay queued until taken: while no connection takes any,
                    // they are swept out here, so the queue stays within twice the cap.
                    if out.queue.len() > 2 * options.max_messages.max(1) {
                        let Outbox { queue, entries, .. } = &mut *out;
                        queue.retain(|id| entries.contains_key(id));
                    }
                    drop(out);
                    shared.work.notify_one();
                    return Ok((id, rx));
                }
                if options.when_full == WhenFull::Fail {
                    return Err(Error::PublisherFull {
                        messages: out.entries.len(),
                        bytes: out.bytes,
                    });
                }
            }
            room.await;
        }
    }

    /// Where the connection is now.
    pub fn state(&self) -> PublisherState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn watch_state(&self) -> watch::Receiver<PublisherState> {
        self.shared.state.subscribe()
    }

    /// Waits until the publisher is connected (or its scope has ended: then
    /// [`Error::Closed`]).
    pub async fn connected(&self) -> Result<Endpoint> {
        let mut rx = self.watch_state();
        let state = rx
            .wait_for(|s| matches!(s, PublisherState::Connected(_) | PublisherState::Closed))
            .await
            .map_err(|_| Error::Closed("publisher"))?;
        match &*state {
            PublisherState::Connected(endpoint) => Ok(endpoint.clone()),
            _ => Err(Error::Closed("publisher")),
        }
    }

    /// The counters, and what is held now.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.shared.counters;
        let (in_flight, in_flight_bytes) = {
            let out = self.shared.outbox();
            (out.entries.len(), out.bytes)
        };
        PublisherStats {
            in_flight,
            in_flight_bytes,
            sent: c.sent.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            republished: c.republished.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
