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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::channel::Channel;
use super::consumer::{Consumer, Delivery};
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

/// The calls waiting for their replies, by correlation id.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Result<ReplyMessage>>>,
    /// Why the scope ended; set once, and every later call fails with it at once.
    ended: Option<Error>,
    /// Replies that matched no waiting call (it had timed out or been dropped).
    late: u64,
}

#[derive(Debug)]
struct Shared {
    channel: Channel,
    table: Mutex<Table>,
    slots: Semaphore,
}

impl Shared {
    /// A new correlation id with its waiter, or the reason the scope ended.
    fn register(&self) -> Result<(u64, oneshot::Receiver<Result<ReplyMessage>>)> {
        let mut table = lock(&self.table);
        if let Some(e) = &table.ended {
            return Err(e.clone());
        }
        let id = table.next_id;
        table.next_id += 1;
        let (tx, rx) = oneshot::channel();
        table.waiting.insert(id, tx);
        Ok((id, rx))
    }

    /// Hands a reply to its call; a reply nobody waits for is dropped.
    fn deliver(&self, delivery: Delivery) {
        let id = delivery
            .properties
            .correlation_id
            .as_deref()
            .and_then(|c| c.parse::<u64>().ok());
        let waiter = id.and_then(|id| lock(&self.table).waiting.remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(Ok(ReplyMessage {
                    properties: delivery.properties,
                    body: delivery.body,
                }));
            }
            None => {
                lock(&self.table).late += 1;
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
        for (_, tx) in table.waiting.drain() {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// Routes replies until the consumer ends; returns why it ended.
    async fn dispatch(&self, mut replies: Consumer) -> Error {
        let error = loop {
            match replies.next().await {
                Some(Ok(delivery)) => self.deliver(delivery),
                Some(Err(e)) => break e,
                None => break Error::Closed("channel"),
            }
        };
        self.end(error.clone());
        error
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
        lock(&self.shared.table).waiting.remove(&self.id);
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
        body: impl AsRef<[u8]>,
        properties: BasicProperties,
    ) -> Result<ReplyMessage> {
        let deadline = Instant::now() + self.timeout;
        let call = self.request_inner(exchange, routing_key, body.as_ref(), properties);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!(%exchange, %routing_key, timeout = ?self.timeout, "no reply within the timeout");
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    async fn request_inner(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<ReplyMessage> {
        let shared = &*self.shared;
        let _slot = shared
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Closed("rpc scope"))?;
        let (id, mut reply) = shared.register()?;
        let _forget = Forget { shared, id };
        let properties = properties
            .with_correlation_id(id.to_string())
            .with_reply_to(DIRECT_REPLY_TO);
        let options = PublishOptions::default().with_mandatory(true);
        let mut confirmation = shared
            .channel
            .basic_publish_with(exchange, routing_key, body, properties, options)
            .await?;
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
    super::connection::channel_scope(&channel, &rpc, async |rpc: &RpcClient| {
        // The dispatcher first: a reply that woke this task reaches its call before the body
        // is polled again, in the same wake-up.
        tokio::select! {
            biased;
            e = shared.dispatch(replies) => Err(E::from(e)),
            v = body(rpc) => v,
        }
    })
    .await
}
