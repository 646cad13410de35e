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

use crate::client::{Channel, Confirmation, IntoBody, PublishOptions};
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
    /// In the queue of ids to send (never twice).
    queued: bool,
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
    /// The driver's channel while publishers may send on it themselves: connected, not
    /// isolating suspects, not draining for a rebalance.
    direct: Option<Channel>,
    /// Confirms of messages sent directly whose [`ReliableConfirmation`] was dropped before
    /// they came: the driver awaits them.
    orphans: Vec<(u64, Confirmation)>,
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
        for entry in self.entries.values_mut() {
            entry.queued = true;
        }
    }

    /// True while a message was sent and is not confirmed yet (not queued to be sent again).
    fn sent_unconfirmed(&self) -> bool {
        self.entries.values().any(|e| e.sends > 0 && !e.queued)
    }

    /// Queues `id` again (a direct send that failed), unless it is queued already or gone;
    /// true when it was queued now.
    fn requeue(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if !entry.queued => {
                entry.queued = true;
                self.queue.push_back(id);
                true
            }
            _ => false,
        }
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
    /// Publishes waiting for room (see [`RoomWait`]).
    room_waiting: std::sync::atomic::AtomicUsize,
    state: watch::Sender<PublisherState>,
    counters: Counters,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`settle`](Self::settle) for several messages, under one lock and one wake-up of the
    /// publishes waiting for room.
    fn settle_many(&self, outcomes: Vec<(u64, Result<()>)>) {
        if outcomes.is_empty() {
            return;
        }
        let settled: Vec<_> = {
            let mut out = self.outbox();
            outcomes
                .into_iter()
                .map(|(id, outcome)| (out.remove(id), outcome))
                .collect()
        };
        self.freed_room();
        for (entry, outcome) in settled {
            self.tell(entry, outcome);
        }
    }

    /// Wakes the publishes waiting for room, if any wait.
    fn freed_room(&self) {
        if self.room_waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Settles `id` with `outcome`, if it is still held, and frees its room.
    fn settle(&self, id: u64, outcome: Result<()>) {
        let entry = self.outbox().remove(id);
        self.freed_room();
        self.tell(entry, outcome);
    }

    /// Counts a settled message's outcome and tells its publish (when it was still held).
    fn tell(&self, entry: Option<Entry>, outcome: Result<()>) {
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
#[must_use = "the outcome of the publish is only known by awaiting it"]
pub struct ReliableConfirmation {
    inner: Inner,
}

/// Where the outcome comes from.
enum Inner {
    /// The driver sends the message (and again after a loss): its outcome.
    Queued(oneshot::Receiver<Result<()>>),
    /// The caller sent it on the driver's channel: that channel's confirm settles it; if the
    /// channel goes first, the driver sends it again and `rx` gets the outcome.
    Direct {
        confirmation: Confirmation,
        id: u64,
        rx: Option<oneshot::Receiver<Result<()>>>,
        shared: Arc<Shared>,
    },
    /// The outcome was handed out.
    Done,
}

impl fmt::Debug for ReliableConfirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableConfirmation")
            .finish_non_exhaustive()
    }
}

impl Future for ReliableConfirmation {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match &mut self.inner {
                Inner::Queued(rx) => {
                    return Pin::new(rx)
                        .poll(cx)
                        .map(|r| r.unwrap_or(Err(Error::Closed("publisher"))));
                }
                Inner::Done => return Poll::Ready(Err(Error::Closed("publisher"))),
                Inner::Direct {
                    confirmation,
                    id,
                    rx,
                    shared,
                } => {
                    let outcome = std::task::ready!(Pin::new(confirmation).poll(cx));
                    match outcome {
                        Ok(()) => {
                            shared.settle(*id, Ok(()));
                            self.inner = Inner::Done;
                            return Poll::Ready(Ok(()));
                        }
                        Err(e @ Error::Returned(_)) => {
                            shared.settle(*id, Err(e.clone()));
                            self.inner = Inner::Done;
                            return Poll::Ready(Err(e));
                        }
                        // Nacked, or the channel went: sent again by the driver.
                        Err(_) => {
                            if shared.outbox().requeue(*id) {
                                shared.work.notify_one();
                            }
                            let rx = rx.take().expect("taken once");
                            self.inner = Inner::Queued(rx);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for ReliableConfirmation {
    /// A direct send's confirm nobody awaits any more is handed to the driver, which settles
    /// the message when it comes: it is neither lost nor sent twice.
    fn drop(&mut self) {
        if let Inner::Direct {
            confirmation,
            id,
            shared,
            ..
        } = std::mem::replace(&mut self.inner, Inner::Done)
        {
            let mut out = shared.outbox();
            if out.entries.contains_key(&id) && !out.closed {
                out.orphans.push((id, confirmation));
                drop(out);
                shared.work.notify_one();
            }
        }
    }
}

/// A message put in the outbox: its id, its outcome, and the channel to send it on when the
/// caller sends it itself.
struct Enqueued {
    id: u64,
    rx: oneshot::Receiver<Result<()>>,
    direct: Option<(Channel, Arc<Message>)>,
}

/// A publish waiting for room, counted so that settling wakes waiters only when there are any.
struct RoomWait<'a> {
    shared: &'a Shared,
}

impl<'a> RoomWait<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.room_waiting.fetch_add(1, Ordering::SeqCst);
        RoomWait { shared }
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        self.shared.room_waiting.fetch_sub(1, Ordering::SeqCst);
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
                room_waiting: std::sync::atomic::AtomicUsize::new(0),
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
        let enqueued = self
            .enqueue(
                exchange,
                routing_key,
                body.into_bytes(),
                properties,
                mandatory,
            )
            .await?;
        Ok(self.dispatch(enqueued))
    }

    /// Sends a message the caller may send itself on the driver's channel, without waiting
    /// (so a caller dropped at any point leaves no message half-taken); the confirmation to
    /// await either way. A channel that cannot take it now leaves it to the driver.
    fn dispatch(&self, enqueued: Enqueued) -> ReliableConfirmation {
        let Enqueued { id, rx, direct } = enqueued;
        let Some((ch, m)) = direct else {
            return ReliableConfirmation {
                inner: Inner::Queued(rx),
            };
        };
        let options = PublishOptions::default().with_mandatory(m.mandatory);
        let sent = ch.try_publish_ref(
            &m.exchange,
            &m.routing_key,
            m.body.clone(),
            &m.properties,
            options,
        );
        match sent {
            Ok(Some(confirmation)) => ReliableConfirmation {
                inner: Inner::Direct {
                    confirmation,
                    id,
                    rx: Some(rx),
                    shared: self.shared.clone(),
                },
            },
            // A message no channel can carry (a name over 255 bytes, a NaN header): no
            // retry fixes it.
            Err(e @ Error::Encode(_)) => {
                self.shared.settle(id, Err(e));
                ReliableConfirmation {
                    inner: Inner::Queued(rx),
                }
            }
            // The channel is full, paused or gone: the driver sends it (again, if need be).
            Ok(None) | Err(_) => {
                if self.shared.outbox().requeue(id) {
                    self.shared.work.notify_one();
                }
                ReliableConfirmation {
                    inner: Inner::Queued(rx),
                }
            }
        }
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
        let enqueued = self
            .enqueue(exchange, routing_key, body, properties, mandatory)
            .await?;
        let _withdraw = Withdraw {
            shared,
            id: enqueued.id,
        };
        let wait = self.dispatch(enqueued);
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
    ) -> Result<Enqueued> {
        let shared = &*self.shared;
        let options = &shared.options;
        if body.len() > options.max_bytes {
            return Err(Error::MessageTooLarge {
                size: body.len(),
                max: options.max_bytes,
            });
        }
        let mut entry = Some((exchange.to_owned(), routing_key.to_owned(), body));
        // Registered for the room only after a first look found none: a publish that fits at
        // once touches no waiter list.
        let mut waiting: Option<RoomWait<'_>> = None;
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            if waiting.is_some() {
                room.as_mut().enable();
            }
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
                    let message = Arc::new(Message {
                        exchange,
                        routing_key,
                        body,
                        properties,
                        mandatory,
                    });
                    // Nothing waits to go out before it and a channel is up: the caller sends
                    // it itself, without a hop through the driver's task.
                    let direct = match &out.direct {
                        Some(ch) if out.queue.is_empty() => Some((ch.clone(), message.clone())),
                        _ => None,
                    };
                    out.entries.insert(
                        id,
                        Entry {
                            message,
                            sends: u32::from(direct.is_some()),
                            queued: direct.is_none(),
                            waiter: Some(tx),
                        },
                    );
                    if direct.is_some() {
                        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        out.queue.push_back(id);
                    }
                    // Withdrawn ids stay queued until taken: while no connection takes any,
                    // they are swept out here, so the queue stays within twice the cap.
                    if out.queue.len() > 2 * options.max_messages.max(1) {
                        let Outbox { queue, entries, .. } = &mut *out;
                        queue.retain(|id| entries.contains_key(id));
                    }
                    drop(out);
                    if direct.is_none() {
                        shared.work.notify_one();
                    }
                    return Ok(Enqueued { id, rx, direct });
                }
                if options.when_full == WhenFull::Fail {
                    return Err(Error::PublisherFull {
                        messages: out.entries.len(),
                        bytes: out.bytes,
                    });
                }
            }
            if waiting.is_none() {
                // Full: count this publish as waiting, then look again with the wake-up armed.
                waiting = Some(RoomWait::new(shared));
                continue;
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
