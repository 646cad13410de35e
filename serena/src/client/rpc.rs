//! Request/reply over RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`).
//!
//! ```text
//!   Connection::open_rpc(body)
//!     |  open a confirmed channel
//!     |  basic.consume amq.rabbitmq.reply-to, no_ack     (before any request is published)
//!     |  run, in this one future:
//!     |    body(&rpc) ........ calls: register id -> publish (mandatory, reply_to, correlation_id)
//!     |                               -> wait for the reply, the return/nack, or the deadline
//!     |    dispatcher ........ each reply -> the waiting call with its correlation id
//!     |  body returns: channel closed cleanly          channel/connection ends: every waiting
//!     v                                                call fails with the reason, body dropped
//! ```
//!
//! Facts this relies on, from RabbitMQ's direct reply-to documentation and checked against the
//! broker: the caller consumes the pseudo-queue `amq.rabbitmq.reply-to` in no-ack mode (a
//! consumer that acknowledges is refused with 406 "reply consumer cannot acknowledge"), on the
//! same channel it publishes its requests on, before it publishes the first one; each request
//! carries `reply_to = "amq.rabbitmq.reply-to"`, which the broker rewrites to a name of the form
//! `amq.rabbitmq.reply-to.<opaque>` that the responder publishes its reply to through the
//! default exchange. A reply to a caller that is gone is dropped by the broker. A request the
//! broker returns (no queue took it) comes back with that rewritten `reply_to`. Watched on
//! RabbitMQ 3.10: a reply published `mandatory` to the rewritten name is delivered and also
//! returned with 312 NO_ROUTE (the name is no queue), so replies are published without it.

use std::collections::BTreeSet;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, Sleep};

use super::body::IntoBody;
use super::channel::Channel;
use super::consumer::{Consumer, Delivery};
use super::id_hash::IdMap;
use super::options::{ConsumeOptions, PublishOptions};
use crate::driver::shared::lock;
use crate::error::{Error, Result};
use crate::proto::BasicProperties;

/// The pseudo-queue of RabbitMQ's direct reply-to: consumed by the caller, named in each
/// request's `reply_to`.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Options of an RPC scope ([`Connection::open_rpc_with`](crate::Connection::open_rpc_with)).
///
/// ```
/// use std::time::Duration;
/// use serena::RpcOptions;
///
/// let options = RpcOptions::new().with_timeout(Duration::from_secs(2)).with_max_in_flight(64);
/// assert_eq!((options.timeout, options.max_in_flight), (Duration::from_secs(2), 64));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcOptions {
    /// How long a call waits, from its start (including a wait for a free slot) to its reply,
    /// before it fails with [`Error::Timeout`]. Default 30 s.
    pub timeout: Duration,
    /// Calls in flight at once on the scope's channel; a call beyond that waits for a slot
    /// (inside its timeout). Default 1,000; at least 1.
    pub max_in_flight: usize,
}

impl RpcOptions {
    /// The defaults: a 30 s timeout, 1,000 calls in flight (the same as `Default`).
    pub const fn new() -> Self {
        RpcOptions {
            timeout: Duration::from_secs(30),
            max_in_flight: 1_000,
        }
    }

    with_fields! {
        copy with_timeout => timeout: Duration,
        copy with_max_in_flight => max_in_flight: usize,
    }
}

impl Default for RpcOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A reply, as the responder sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyMessage {
    /// Its properties (`correlation_id` is the request's).
    pub properties: Box<BasicProperties>,
    /// Its body.
    pub body: Bytes,
}

/// A call waiting for its reply.
#[derive(Debug)]
struct Waiting {
    tx: oneshot::Sender<Result<ReplyMessage>>,
    deadline: Instant,
    timeout: Duration,
}

/// The calls waiting for their replies, by correlation id, and their deadlines.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    waiting: IdMap<Waiting>,
    /// The waiting calls by deadline: the first is the next to time out.
    deadlines: BTreeSet<(Instant, u64)>,
    /// When the dispatcher's one timer fires next; `None` while it is not armed.
    armed: Option<Instant>,
    /// The dispatcher's task, woken when a new call's deadline comes before `armed`.
    dispatcher: Option<Waker>,
    /// Why the scope ended; set once, and every later call fails with it at once.
    ended: Option<Error>,
    /// Replies that matched no waiting call (it had timed out or been dropped).
    late: u64,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        self.deadlines.remove(&(waiting.deadline, id));
        Some(waiting)
    }

    /// Adds a waiting call, failed with [`Error::Timeout`] at `deadline`. Wakes the
    /// dispatcher when its timer must be armed for this deadline: it is not armed, or armed
    /// for a later one (all calls having the same timeout, the timer is usually armed for an
    /// earlier deadline already).
    fn insert(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> (u64, oneshot::Receiver<Result<ReplyMessage>>) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(
            id,
            Waiting {
                tx,
                deadline,
                timeout,
            },
        );
        self.deadlines.insert((deadline, id));
        if self.armed.is_none_or(|at| deadline < at)
            && let Some(dispatcher) = &self.dispatcher
        {
            dispatcher.wake_by_ref();
        }
        (id, rx)
    }

    /// The dispatcher's timer: remembers the dispatcher's waker, fails the calls that are due
    /// when it fired, and arms it for the earliest deadline. Armed for a call that has since
    /// finished, it just fires early once and is armed again for the earliest deadline then.
    fn poll_timer(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) {
        if !self
            .dispatcher
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.dispatcher = Some(cx.waker().clone());
        }
        loop {
            if self.armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                self.armed = None;
                self.expire(Instant::now());
            }
            match self.deadlines.first() {
                Some(&(at, _)) if self.armed.is_none_or(|armed| at < armed) => {
                    timer.as_mut().reset(at);
                    self.armed = Some(at);
                }
                _ => return,
            }
        }
    }

    /// Fails every call whose deadline is not after `now` with [`Error::Timeout`].
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            if let Some(waiting) = self.remove(id) {
                tracing::debug!(timeout = ?waiting.timeout, "no reply within the timeout");
                let _ = waiting.tx.send(Err(Error::Timeout(waiting.timeout)));
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    channel: Channel,
    table: Mutex<Table>,
    slots: Semaphore,
}

impl Shared {
    /// A new correlation id with its waiter, failed with [`Error::Timeout`] at `deadline`;
    /// or the reason the scope ended.
    fn register(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(u64, oneshot::Receiver<Result<ReplyMessage>>)> {
        let mut table = lock(&self.table);
        if let Some(e) = &table.ended {
            return Err(e.clone());
        }
        let (id, rx) = table.insert(deadline, timeout);
        Ok((id, rx))
    }

    /// Hands a reply to its call; a reply nobody waits for is dropped.
    fn deliver(&self, delivery: Delivery) {
        let id = delivery
            .properties
            .correlation_id
            .as_deref()
            .and_then(|c| c.parse::<u64>().ok());
        let mut table = lock(&self.table);
        match id.and_then(|id| table.remove(id)) {
            Some(waiting) => {
                drop(table);
                let _ = waiting.tx.send(Ok(ReplyMessage {
                    properties: delivery.properties,
                    body: delivery.body,
                }));
            }
            None => {
                table.late += 1;
                drop(table);
                tracing::debug!(
                    correlation_id = delivery.properties.correlation_id.as_deref(),
                    "reply for no waiting call (timed out, dropped or unknown); dropped"
                );
            }
        }
    }

    /// Ends the scope: every waiting call and every later one fails with `error`.
    fn end(&self, error: Error) {
        let mut table = lock(&self.table);
        if table.ended.is_none() {
            table.ended = Some(error.clone());
        }
        table.deadlines.clear();
        for (_, waiting) in table.waiting.drain() {
            let _ = waiting.tx.send(Err(error.clone()));
        }
    }

    /// Routes replies and times calls out until the consumer ends; returns why it ended.
    async fn dispatch(&self, mut replies: Consumer) -> Error {
        // One timer for every call of the scope, armed for the earliest deadline: cheaper
        // than a timer per call, registered and cancelled at each round trip.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        let error = poll_fn(|cx| self.poll_dispatch(cx, &mut replies, timer.as_mut())).await;
        self.end(error.clone());
        error
    }

    fn poll_dispatch(
        &self,
        cx: &mut Context<'_>,
        replies: &mut Consumer,
        timer: Pin<&mut Sleep>,
    ) -> Poll<Error> {
        loop {
            match Pin::new(&mut *replies).poll_next(cx) {
                Poll::Ready(Some(Ok(delivery))) => self.deliver(delivery),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(e),
                Poll::Ready(None) => return Poll::Ready(Error::Closed("channel")),
                Poll::Pending => break,
            }
        }
        lock(&self.table).poll_timer(cx, timer);
        Poll::Pending
    }
}

/// Removes a call's entry when the call ends any way (reply, error, timeout, drop), so its
/// late reply is dropped and the table never grows.
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.table).remove(self.id);
    }
}

/// `future`, failed with [`Error::Timeout`] at `deadline`; a timer is only set up when it
/// does not finish at its first poll.
async fn within<T>(
    deadline: Instant,
    timeout: Duration,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut future = std::pin::pin!(future);
    let first = poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match first {
        Some(v) => v,
        None => tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| Error::Timeout(timeout))?,
    }
}

/// Ends the scope's table when the scope's future goes, however it goes: a handle cloned out
/// of the scope then fails at once instead of waiting for a reply nobody routes.
struct EndOnDrop(Arc<Shared>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let reason = self.0.channel.error();
        self.0.end(reason.unwrap_or(Error::Closed("rpc scope")));
    }
}

/// Makes request/reply calls over direct reply-to, inside
/// [`Connection::open_rpc`](crate::Connection::open_rpc). Cheap to clone; clones share the
/// channel, the calls in flight and their cap, and can be used from many tasks at once
/// inside the scope.
///
/// Each call publishes its request (`mandatory`, with `reply_to` set to
/// [`DIRECT_REPLY_TO`] and a `correlation_id` of its own) and resolves with:
///
/// - the reply, as soon as it arrives, without waiting for the request's publisher
///   confirm (which only comes into play when something goes wrong);
/// - [`Error::Returned`] when no queue took the request (RabbitMQ sends the return before the
///   confirm), or [`Error::Nacked`] when the broker refused it;
/// - [`Error::Timeout`] when neither came within the timeout; the slot is freed, and a reply
///   that comes later is dropped;
/// - the channel's or connection's end (an [`UnexpectedCloseError`](crate::UnexpectedCloseError),
///   say) when that comes first; the scope itself returns it too.
///
/// A responder publishes its reply through the default exchange to the request's `reply_to`
/// with its `correlation_id`, and not `mandatory`: RabbitMQ returns a mandatory publish to a
/// reply-to name (it is no queue) even though it delivers it. `#[consumer]` handlers do this
/// when they return a [`worker::Reply`](crate::worker::Reply).
///
/// A responder that fails without replying is seen by the caller as a timeout: serena's
/// handlers reply only with a value ([`worker::Reply`](crate::worker::Reply)); a handler that
/// wants its caller to see an error replies with one (a `Reply<Result<T, String>>`, say).
#[derive(Debug, Clone)]
pub struct RpcClient {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl RpcClient {
    /// The same calls with another timeout:
    /// `rpc.with_timeout(Duration::from_secs(1)).call("q", &req)`.
    pub fn with_timeout(&self, timeout: Duration) -> RpcClient {
        RpcClient {
            shared: self.shared.clone(),
            timeout,
        }
    }

    /// The timeout of this handle's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The channel the requests go out on and the replies come back on.
    pub fn channel(&self) -> &Channel {
        &self.shared.channel
    }

    /// Calls waiting for their reply now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.table).waiting.len()
    }

    /// Replies that came for no waiting call (after its timeout, say) and were dropped.
    pub fn late_replies(&self) -> u64 {
        lock(&self.shared.table).late
    }

    /// Sends `request` as JSON to the queue `queue` (through the default exchange) and decodes
    /// the reply's body as JSON. A reply that is not valid JSON for `R` fails with
    /// [`Error::Json`].
    ///
    /// ```no_run
    /// # async fn demo(conn: &serena::Connection) -> serena::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Quote { sku: String }
    /// #[derive(serde::Deserialize)]
    /// struct Price { cents: u64 }
    ///
    /// let price: Price = conn
    ///     .open_rpc(async |rpc| rpc.call("prices", &Quote { sku: "A-1".into() }).await)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        queue: &str,
        request: &Q,
    ) -> Result<R> {
        let body = serde_json::to_vec(request)?;
        let properties = BasicProperties::default().with_content_type("application/json");
        let reply = self.request("", queue, body, properties).await?;
        Ok(serde_json::from_slice(&reply.body)?)
    }

    /// Publishes `body` to `exchange` with `routing_key` as a request and waits for its
    /// reply. `properties` are sent as given, except `reply_to` and `correlation_id`, which
    /// the call sets.
    pub async fn request(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<ReplyMessage> {
        let (timeout, shared) = (self.timeout, &*self.shared);
        let deadline = Instant::now() + timeout;
        // A free slot, then the request handed to the connection: bounded by a timer of its
        // own only when it has to wait. The reply's wait is bounded by the dispatcher's timer.
        let send = async {
            let slot = shared
                .slots
                .acquire()
                .await
                .map_err(|_| Error::Closed("rpc scope"))?;
            let (id, reply) = shared.register(deadline, timeout)?;
            let forget = Forget { shared, id };
            let properties = properties
                .with_correlation_id(id.to_string())
                .with_reply_to(DIRECT_REPLY_TO);
            let options = PublishOptions::default().with_mandatory(true);
            let confirmation = shared
                .channel
                .basic_publish_with(exchange, routing_key, body, properties, options)
                .await?;
            Ok((slot, forget, reply, confirmation))
        };
        let (_slot, _forget, mut reply, mut confirmation) = within(deadline, timeout, send).await?;
        let mut confirmed = false;
        loop {
            tokio::select! {
                biased;
                r = &mut reply => return r.unwrap_or(Err(Error::Closed("rpc scope"))),
                c = &mut confirmation, if !confirmed => match c {
                    Ok(()) => confirmed = true,
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

/// Runs an RPC scope on the open channel `channel`: the reply consumer first, then `body` and
/// the dispatcher together in this future.
pub(super) async fn rpc_scope<T, E: From<Error>>(
    channel: Channel,
    options: RpcOptions,
    body: impl AsyncFnOnce(&RpcClient) -> Result<T, E>,
) -> Result<T, E> {
    let consume = ConsumeOptions::default().with_no_ack(true);
    let replies = channel.basic_consume(DIRECT_REPLY_TO, consume).await?;
    let shared = Arc::new(Shared {
        channel: channel.clone(),
        table: Mutex::default(),
        slots: Semaphore::new(options.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
    });
    let _end = EndOnDrop(shared.clone());
    let rpc = RpcClient {
        shared: shared.clone(),
        timeout: options.timeout,
    };
    // The dispatcher first: a reply that woke this task reaches its call before the body is
    // polled again, in the same wake-up. The channel's (or connection's) end reaches the
    // dispatcher as its consumer's end, with the reason: no watch of the channel beside it.
    let outcome = tokio::select! {
        biased;
        e = shared.dispatch(replies) => Err(e),
        v = body(&rpc) => Ok(v),
    };
    match outcome {
        Ok(v) => {
            channel.close().await?;
            v
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn a_call_wakes_the_dispatcher_only_when_the_timer_must_be_armed_earlier() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        let mut table = Table::default();
        let now = Instant::now();
        // Nothing to time out: the timer stays unarmed.
        table.poll_timer(&mut cx, timer.as_mut());
        assert_eq!(table.armed, None);
        let (_, _long) = table.insert(now + ms(3_000), ms(3_000));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "not armed: wake to arm it"
        );
        table.poll_timer(&mut cx, timer.as_mut());
        assert_eq!(table.armed, Some(now + ms(3_000)));
        let (_, _later) = table.insert(now + ms(4_000), ms(4_000));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "armed earlier: no wake");
        let (_, mut short) = table.insert(now + ms(50), ms(50));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "armed later: wake to re-arm"
        );
        table.poll_timer(&mut cx, timer.as_mut());
        assert_eq!(table.armed, Some(now + ms(50)));
        // The short call times out at its deadline; the others wait on.
        poll_fn(|cx| {
            table.poll_timer(cx, timer.as_mut());
            match Pin::new(&mut short).poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
        .map(|r| assert!(matches!(r, Err(Error::Timeout(t)) if t == ms(50)), "{r:?}"))
        .expect("the sender answered");
        assert!(Instant::now() >= now + ms(50));
        assert_eq!(table.waiting.len(), 2);
        assert_eq!(table.armed, Some(now + ms(3_000)));
    }

    #[tokio::test]
    async fn a_timer_armed_for_a_finished_call_fires_once_and_is_armed_again() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        let mut table = Table::default();
        let now = Instant::now();
        let (first, _) = table.insert(now + ms(20), ms(20));
        let (_, mut second) = table.insert(now + ms(60), ms(60));
        table.poll_timer(&mut cx, timer.as_mut());
        assert_eq!(table.armed, Some(now + ms(20)));
        // The first call got its reply: the timer is left as it is, and when it fires it
        // times nothing out and is armed for the second call.
        assert!(table.remove(first).is_some());
        tokio::time::sleep(ms(30)).await;
        table.poll_timer(&mut cx, timer.as_mut());
        assert_eq!(table.armed, Some(now + ms(60)));
        assert_eq!(table.waiting.len(), 1);
        assert!(matches!(
            second.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        tokio::time::sleep(ms(40)).await;
        table.poll_timer(&mut cx, timer.as_mut());
        assert!(matches!(second.try_recv(), Ok(Err(Error::Timeout(_)))));
        assert_eq!(
            (table.armed, table.waiting.len(), table.deadlines.len()),
            (None, 0, 0)
        );
    }
}
