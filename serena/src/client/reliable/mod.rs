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
mod held;
mod hosts;
mod options;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot, watch};

use crate::client::body::HeldBody;
use crate::client::id_hash::IdMap;
use crate::client::{Channel, Confirmation, IntoBody, PublishOptions};
use crate::config::{ConnectionConfig, Endpoint};
use crate::error::{Error, Result};
use crate::proto::BasicProperties;
use crate::proto::{EncodeError, EncodedProperties, ShortString};

use held::Held;
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
    exchange: ShortString,
    routing_key: ShortString,
    body: Bytes,
    /// Encoded once, when the message is put in the outbox: a few dozen bytes held instead
    /// of a 368-byte `BasicProperties` (a thousand messages in flight were half a megabyte
    /// the outbox moved and missed the cache on), and not encoded again on a republish.
    properties: EncodedProperties,
    mandatory: bool,
}

/// Who learns a held message's outcome.
enum Waiter {
    /// A publish, or a [`ReliableConfirmation`], waiting for what the driver's sends get.
    Task(oneshot::Sender<Result<()>>),
    /// A [`ReliableConfirmation`] that sent the message itself and awaits that channel's
    /// confirm; an outcome the driver reaches first (after sending it again on a new
    /// channel) is kept for it in [`Outbox::unclaimed`]. No allocation per message.
    Direct,
    /// Nobody: the confirmation was dropped.
    Nobody,
}

/// One message held until the broker confirms it.
struct Entry {
    /// Sent from under the outbox's lock (nothing awaits while it is borrowed).
    message: Message,
    /// Times sent so far.
    sends: u32,
    /// In the queue of ids to send (never twice).
    queued: bool,
    waiter: Waiter,
}

/// A settled message's waiting publish and its outcome, told once the lock is released.
type Tell = (oneshot::Sender<Result<()>>, Result<()>);

/// What the publisher holds, under one lock.
struct Outbox {
    next_id: u64,
    /// Every message not yet confirmed or failed, by id (ids count up in publish order).
    entries: Held<Entry>,
    /// Ids to send next. May name withdrawn ids (skipped when taken).
    queue: VecDeque<u64>,
    bytes: usize,
    /// Set when the scope ends.
    closed: bool,
    /// The driver's channel while publishers may send on it themselves (connected, not
    /// isolating suspects, not draining for a rebalance), with its generation.
    direct: Option<(Channel, u64)>,
    /// Counts the driver's channels: a direct send remembers the one it went out on.
    generation: u64,
    /// Confirms of messages sent directly whose [`ReliableConfirmation`] was dropped before
    /// they came, with their channel's generation: the driver of that channel awaits them
    /// (a later channel sends those messages again instead).
    orphans: Vec<Orphan>,
    /// Generated message ids.
    ids: IdBatch,
    /// Where messages' properties are encoded, one after another: they share its chunks
    /// (4 KiB) instead of an allocation each. A held message keeps its chunk alive.
    encoded: BytesMut,
    /// The names of the last message's route, shared with the next message that uses the
    /// same (most publishers use a few routes): names are copied only when the route changes.
    route: (ShortString, ShortString),
    /// Outcomes the driver reached for messages a [`ReliableConfirmation`] sent itself, kept
    /// until it asks (or is dropped): at most one per live confirmation.
    unclaimed: IdMap<Result<()>>,
}

/// A direct send's confirm that nobody awaits any more.
struct Orphan {
    id: u64,
    generation: u64,
    confirmation: Confirmation,
}

impl Outbox {
    fn new(max_messages: usize) -> Self {
        Outbox {
            next_id: 0,
            entries: Held::new(max_messages.max(64).saturating_mul(2)),
            queue: VecDeque::new(),
            bytes: 0,
            closed: false,
            direct: None,
            generation: 0,
            orphans: Vec::new(),
            ids: IdBatch::empty(),
            encoded: BytesMut::new(),
            route: (ShortString::new(), ShortString::new()),
            unclaimed: IdMap::default(),
        }
    }

    /// `properties` encoded into the shared chunk (a new one when it is nearly used up).
    fn encode(&mut self, properties: &BasicProperties) -> Result<EncodedProperties> {
        const CHUNK: usize = 4096;
        if self.encoded.capacity() < CHUNK / 8 {
            self.encoded = BytesMut::with_capacity(CHUNK);
        }
        Ok(EncodedProperties::encode_into(
            properties,
            &mut self.encoded,
        )?)
    }

    /// `exchange` and `routing_key` as held names, shared with the last message's when they
    /// are the same.
    fn route(&mut self, exchange: &str, routing_key: &str) -> (ShortString, ShortString) {
        if self.route.0 != exchange {
            self.route.0 = ShortString::from(exchange);
        }
        if self.route.1 != routing_key {
            self.route.1 = ShortString::from(routing_key);
        }
        self.route.clone()
    }

    /// Removes `id`, freeing its room; its waiter, if any.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.bytes -= entry.message.body.len();
        Some(entry)
    }

    /// Settles `id` with `outcome`, if it is still held: counted, kept for the direct
    /// confirmation that awaits it, or handed back to be told to the waiting publish once
    /// the lock is released.
    fn settle(&mut self, id: u64, outcome: Result<()>, counters: &Counters) -> Option<Tell> {
        let entry = self.remove(id)?;
        counters.count(&outcome);
        match entry.waiter {
            Waiter::Task(tx) => Some((tx, outcome)),
            Waiter::Direct => {
                self.unclaimed.insert(id, outcome);
                None
            }
            Waiter::Nobody => None,
        }
    }

    /// Queues every held message again, in publish order: after a lost connection or channel,
    /// what was in flight on it is sent again, before anything newer.
    fn requeue_all(&mut self) {
        self.queue = self.entries.ids().into();
        for entry in self.entries.values_mut() {
            entry.queued = true;
        }
    }

    /// The newest message sent at least once, if any.
    fn last_sent(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.sends > 0)
            .map(|(id, _)| id)
            .max()
    }

    /// True while a message was sent and is not confirmed yet (not queued to be sent again).
    fn sent_unconfirmed(&self) -> bool {
        self.entries.iter().any(|(_, e)| e.sends > 0 && !e.queued)
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

impl Counters {
    /// Counts a settled message: confirmed, or failed.
    fn count(&self, outcome: &Result<()>) {
        let counter = match outcome {
            Ok(()) => &self.confirmed,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    config: ConnectionConfig,
    options: ReliablePublisherOptions,
    /// Prefix of the message ids this publisher generates: random per publisher, with the
    /// `-` before the number.
    id_prefix: [u8; 17],
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
        let tells: Vec<Tell> = {
            let mut out = self.outbox();
            outcomes
                .into_iter()
                .filter_map(|(id, outcome)| out.settle(id, outcome, &self.counters))
                .collect()
        };
        self.freed_room();
        for (tx, outcome) in tells {
            let _ = tx.send(outcome);
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
        let tell = self.outbox().settle(id, outcome, &self.counters);
        self.freed_room();
        if let Some((tx, outcome)) = tell {
            let _ = tx.send(outcome);
        }
    }

    /// The outcome of a message a [`ReliableConfirmation`] sent itself, from that channel's
    /// confirm (a confirm or a return): settles it if it is still held, and drops what the
    /// driver may have kept for it (a later send's outcome: the first one counts).
    fn claim(&self, id: u64, outcome: Result<()>) -> Result<()> {
        let mut out = self.outbox();
        if out.remove(id).is_some() {
            self.counters.count(&outcome);
        } else {
            out.unclaimed.remove(&id);
        }
        drop(out);
        self.freed_room();
        outcome
    }

    /// A message a [`ReliableConfirmation`] sent itself lost that send (a nack, a lost
    /// channel): the receiver of the driver's outcome for it, queueing it to be sent again,
    /// or the outcome the driver already reached (`Closed` once the scope has ended).
    fn await_driver(
        &self,
        id: u64,
    ) -> std::result::Result<oneshot::Receiver<Result<()>>, Result<()>> {
        let mut out = self.outbox();
        let out = &mut *out;
        let Some(entry) = out.entries.get_mut(id) else {
            return Err(out
                .unclaimed
                .remove(&id)
                .unwrap_or(Err(Error::Closed("publisher"))));
        };
        let (tx, rx) = oneshot::channel();
        entry.waiter = Waiter::Task(tx);
        if !entry.queued {
            entry.queued = true;
            out.queue.push_back(id);
            self.work.notify_one();
        }
        Ok(rx)
    }

    /// Ends the publisher: later publishes fail, waiting ones fail with [`Error::Closed`].
    fn close(&self) {
        let entries = {
            let mut out = self.outbox();
            out.closed = true;
            out.queue.clear();
            out.bytes = 0;
            out.entries.take_all()
        };
        for entry in entries {
            if let Waiter::Task(tx) = entry.waiter {
                let _ = tx.send(Err(Error::Closed("publisher")));
            }
        }
        self.room.notify_waiters();
        self.state.send_replace(PublisherState::Closed);
    }
}

/// Generated `message_id`s, written a batch at a time into one shared text that each id is a
/// slice of: `<prefix>-<n>` per message cost an allocation and the formatting machinery, a
/// sixth of a reliable publish's instructions. A held message keeps its batch's text alive
/// (about 2 KiB).
struct IdBatch {
    /// The id of the batch's first message.
    first: u64,
    text: ShortString,
    /// Where each id's text ends in `text`.
    ends: Vec<u16>,
}

impl IdBatch {
    /// Ids per batch.
    const LEN: u64 = 64;

    fn empty() -> Self {
        IdBatch {
            first: u64::MAX,
            text: ShortString::new(),
            ends: Vec::new(),
        }
    }

    /// The `message_id` of message `id`: `<prefix><id>` (the prefix ends with the `-`).
    fn message_id(&mut self, prefix: &[u8; 17], id: u64) -> ShortString {
        if id.wrapping_sub(self.first) >= self.ends.len() as u64 {
            *self = IdBatch::write(prefix, id);
        }
        let at = id.wrapping_sub(self.first) as usize;
        let start = if at == 0 { 0 } else { self.ends[at - 1] };
        self.text
            .slice(usize::from(start)..usize::from(self.ends[at]))
            .unwrap_or_default()
    }

    /// The ids from `first` on: the first written out, the others counted up from it digit
    /// by digit (no division per id).
    fn write(prefix: &[u8; 17], first: u64) -> Self {
        let mut digits = [b'0'; 20];
        let mut at = digits.len();
        let mut n = first;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let count = Self::LEN.min((u64::MAX - first).saturating_add(1)) as usize;
        let mut text = Vec::with_capacity(count * (prefix.len() + 20));
        let mut ends = Vec::with_capacity(count);
        for _ in 0..count {
            text.extend_from_slice(prefix);
            text.extend_from_slice(&digits[at..]);
            ends.push(u16::try_from(text.len()).unwrap_or(u16::MAX));
            // Add one, carrying; a carry out of the top digit adds a digit.
            let mut i = digits.len();
            loop {
                i -= 1;
                if digits[i] == b'9' {
                    digits[i] = b'0';
                    if i == 0 {
                        break;
                    }
                } else {
                    digits[i] += 1;
                    break;
                }
            }
            if i < at {
                at = i;
            }
        }
        IdBatch {
            first,
            text: ShortString::from_utf8(Bytes::from(text)).unwrap_or_default(),
            ends,
        }
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
/// ([`WhenFull::Fail`]), [`Error::MessageTooLarge`], [`Error::Encode`] (a message no channel
/// can carry: a name over 255 bytes or a NaN header fail the publish at once and are never
/// held; properties larger than the negotiated frame size fail when the message is sent), or
/// [`Error::Closed`] after the scope.
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
            .field(
                "id_prefix",
                &String::from_utf8_lossy(&self.shared.id_prefix[..16]),
            )
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
    /// The caller sent it on the driver's channel (of `generation`): that channel's confirm
    /// settles it; if the channel goes first, the driver's outcome is asked for.
    Direct {
        confirmation: Confirmation,
        id: u64,
        generation: u64,
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
                    let outcome = std::task::ready!(Pin::new(rx).poll(cx));
                    self.inner = Inner::Done;
                    return Poll::Ready(outcome.unwrap_or(Err(Error::Closed("publisher"))));
                }
                Inner::Done => return Poll::Ready(Err(Error::Closed("publisher"))),
                Inner::Direct {
                    confirmation,
                    id,
                    shared,
                    ..
                } => {
                    let outcome = std::task::ready!(Pin::new(confirmation).poll(cx));
                    let (id, shared) = (*id, shared.clone());
                    match outcome {
                        Ok(()) | Err(Error::Returned(_)) => {
                            self.inner = Inner::Done;
                            return Poll::Ready(shared.claim(id, outcome));
                        }
                        // Nacked, or the channel went: the driver sends it (again).
                        Err(_) => match shared.await_driver(id) {
                            Ok(rx) => self.inner = Inner::Queued(rx),
                            Err(outcome) => {
                                self.inner = Inner::Done;
                                return Poll::Ready(outcome);
                            }
                        },
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
            generation,
            shared,
        } = std::mem::replace(&mut self.inner, Inner::Done)
        {
            let mut out = shared.outbox();
            match out.entries.get_mut(id) {
                Some(entry) => {
                    entry.waiter = Waiter::Nobody;
                    out.orphans.push(Orphan {
                        id,
                        generation,
                        confirmation,
                    });
                    drop(out);
                    shared.work.notify_one();
                }
                None => {
                    out.unclaimed.remove(&id);
                }
            }
        }
    }
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

/// Withdraws a publish whose caller stopped waiting (dropped, timed out): it is not sent
/// (again), and its room is freed. A no-op once it was settled.
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
        let outbox = Mutex::new(Outbox::new(options.max_messages));
        let mut id_prefix = [b'-'; 17];
        let random = fastrand::u64(..);
        for (i, digit) in id_prefix[..16].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((random >> (60 - 4 * i)) & 0xf) as usize];
        }
        ReliablePublisher {
            shared: Arc::new(Shared {
                config,
                options,
                id_prefix,
                outbox,
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
        mut properties: BasicProperties,
    ) -> Result<ReliableConfirmation> {
        let mandatory = self.shared.options.mandatory;
        let (_, confirmation) = self
            .enqueue(
                exchange,
                routing_key,
                body.into_bytes(),
                &mut properties,
                mandatory,
            )
            .await?;
        Ok(confirmation)
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
        mut properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let shared = &*self.shared;
        let (id, wait) = self
            .enqueue(exchange, routing_key, body, &mut properties, mandatory)
            .await?;
        let _withdraw = Withdraw { shared, id };
        match shared.options.publish_timeout {
            Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(Error::Timeout(limit))
            }),
            None => wait.await,
        }
    }

    /// Waits for room, then puts the message in the outbox with its properties encoded (they
    /// are borrowed, not moved: their 368 bytes are not copied into each future on the way)
    /// and, when nothing waits to go out before it and a channel is up, sends it from here
    /// (without a hop through the driver's task, and without waiting: a channel that cannot
    /// take it now leaves it to the driver). All of it under one lock, so a caller dropped
    /// at any await leaves nothing half-taken. Its id and the confirmation to await.
    async fn enqueue(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        properties: &mut BasicProperties,
        mandatory: bool,
    ) -> Result<(u64, ReliableConfirmation)> {
        let shared = &*self.shared;
        let options = &shared.options;
        if body.len() > options.max_bytes {
            return Err(Error::MessageTooLarge {
                size: body.len(),
                max: options.max_bytes,
            });
        }
        // Names no channel can carry fail here, whichever way the message would go out.
        for (name, context) in [
            (exchange, "basic.publish.exchange"),
            (routing_key, "basic.publish.routing_key"),
        ] {
            if name.len() > ShortString::MAX_LEN {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                return Err(EncodeError::ShortStringTooLong {
                    context,
                    len: name.len(),
                }
                .into());
            }
        }
        let mut entry = Some(body);
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
                let len = entry.as_ref().map_or(0, Bytes::len);
                let fits = out.entries.len() < options.max_messages
                    && out.bytes + len <= options.max_bytes;
                if fits {
                    let body = entry.take().expect("taken once");
                    let id = out.next_id;
                    out.next_id += 1;
                    if properties.message_id.is_none() {
                        properties.message_id = Some(out.ids.message_id(&shared.id_prefix, id));
                    }
                    let (exchange, routing_key) = out.route(exchange, routing_key);
                    let properties = match out.encode(properties) {
                        Ok(encoded) => encoded,
                        // Properties no channel can carry (a string over 255 bytes, a NaN
                        // header): no retry fixes them, and nothing is held.
                        Err(e) => {
                            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                            return Err(e);
                        }
                    };
                    let message = Message {
                        exchange,
                        routing_key,
                        body,
                        properties,
                        mandatory,
                    };
                    let out = &mut *out;
                    if out.queue.is_empty()
                        && let Some((ch, generation)) = &out.direct
                    {
                        let sent = ch.try_publish_ref(
                            &message.exchange,
                            &message.routing_key,
                            HeldBody(&message.body),
                            (&message.properties).into(),
                            PublishOptions::default().with_mandatory(mandatory),
                        );
                        match sent {
                            Ok(Some(confirmation)) => {
                                let generation = *generation;
                                out.bytes += message.body.len();
                                out.entries.insert(
                                    id,
                                    Entry {
                                        message,
                                        sends: 1,
                                        queued: false,
                                        waiter: Waiter::Direct,
                                    },
                                );
                                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                                let inner = Inner::Direct {
                                    confirmation,
                                    id,
                                    generation,
                                    shared: self.shared.clone(),
                                };
                                return Ok((id, ReliableConfirmation { inner }));
                            }
                            // A message no channel can carry (a name over 255 bytes, a NaN
                            // header): no retry fixes it, and nothing is held.
                            Err(e @ Error::Encode(_)) => {
                                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                                return Err(e);
                            }
                            // The channel is full, paused or gone: the driver sends it.
                            Ok(None) | Err(_) => {}
                        }
                    }
                    let (tx, rx) = oneshot::channel();
                    out.bytes += message.body.len();
                    out.entries.insert(
                        id,
                        Entry {
                            message,
                            sends: 0,
                            queued: true,
                            waiter: Waiter::Task(tx),
                        },
                    );
                    out.queue.push_back(id);
                    // Withdrawn ids stay queued until taken: while no connection takes any,
                    // they are swept out here, so the queue stays within twice the cap.
                    if out.queue.len() > 2 * options.max_messages.max(1) {
                        let Outbox { queue, entries, .. } = out;
                        queue.retain(|id| entries.contains(*id));
                    }
                    shared.work.notify_one();
                    let inner = Inner::Queued(rx);
                    return Ok((id, ReliableConfirmation { inner }));
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
