//! An in-memory AMQP 0-9-1 broker for testing serena clients, publishers and workers without
//! RabbitMQ.
//!
//! [`MemoryBroker`] speaks the real protocol to the real client over an in-process byte
//! stream: the [`ConnectionConfig`] from [`MemoryBroker::config`] opens its connections
//! through a [`serena::Connector`], so `Connection`, channels, the `Supervisor`, `#[consumer]`
//! handlers, publishers and their retries all run unchanged. Tests then look at what each queue
//! holds ([`MemoryBroker::messages`]) and what happened ([`MemoryBroker::stats`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> serena::Result<()> {
//! use serena::proto::BasicProperties;
//! use serena_testing::MemoryBroker;
//!
//! let broker = MemoryBroker::new();
//! serena::open_connection(&broker.config(), async |conn| {
//!     let ch = conn.channel().await?;
//!     ch.queue_declare("orders", Default::default()).await?;
//!     ch.basic_publish("", "orders", "hello", BasicProperties::default()).await
//! })
//! .await?;
//! assert_eq!(&broker.messages("orders").unwrap()[0].body[..], b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `core`: the broker, sans-IO: bytes in, bytes out, the clock passed in; one vhost (`/`).
//!   `core::methods` dispatches a client's methods, `core::declare` holds declares, bindings and
//!   consumers, `core::deliver` routing,
//!   delivery, settlement, expiry and dead-lettering.
//! - `queue`: exchanges, queues, bindings and messages; `routing`: the four exchange types.
//! - this file: the handle, the in-process stream and the inspection API.
//!
//! # What it does
//!
//! The default, `direct`, `fanout`, `topic` and `headers` exchanges (and the `amq.*` ones),
//! exchange-to-exchange bindings, alternate exchanges, internal exchanges; queues in FIFO order
//! (`x-max-priority` by priority), exclusive, auto-delete and server-named (`amq.gen-...`)
//! queues; per-consumer prefetch (`basic.qos`, and `global` as a channel-wide limit),
//! ack / nack / reject (one or `multiple`), requeue at the head with the redelivered flag,
//! `basic.get`, exclusive consumers, `basic.cancel` and the server's cancel when a consumed queue is deleted,
//! purge and delete with counts, passive declares (404), redeclares with other flags or
//! arguments (406), `x-max-length` / `x-max-length-bytes` with `drop-head`,
//! `reject-publish` and `reject-publish-dlx`, message TTL (`x-message-ttl` and `expiration`,
//! applied at the queue's head as classic queues do, on tokio's clock), queue expiry
//! (`x-expires`: deleted once unused that long, never while consumed), dead-lettering with `x-death` (count, reason,
//! queue, time, exchange, routing-keys) and `x-first-death-*`, quorum queues'
//! `x-delivery-limit` (with `x-delivery-count`), publisher confirms (a nack for a refused
//! publish) and mandatory returns (`basic.return` before the confirm). Close codes and texts
//! follow RabbitMQ's.
//!
//! # What it does not
//!
//! A stream queue is kept as a plain queue, and consuming with a stream offset, like transactions, is refused with 540
//! NOT_IMPLEMENTED (RabbitMQ supports them); `immediate` closes the connection with 540 as
//! RabbitMQ does; heartbeats are tuned off (a client that sends its own is answered); credentials are not
//! checked and `/` is the only vhost; `x-single-active-consumer`, consumer priorities and
//! `no_local` are ignored.

mod core;
mod queue;
mod routing;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serena::proto::{BasicProperties, FieldTable};
use serena::topology::{ApplyReport, Topology, TopologyExt};
use serena::{ByteStream, ConnectFuture, ConnectionConfig, Connector, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::time::{Instant, Sleep};

use crate::core::{Core, Now};

/// What happened on the broker since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages published (to an existing exchange).
    pub published: u64,
    /// Mandatory messages returned as unroutable.
    pub returned: u64,
    /// Publisher confirms sent as `basic.ack`.
    pub confirms_acked: u64,
    /// Publisher confirms sent as `basic.nack` (a full `reject-publish` queue).
    pub confirms_nacked: u64,
    /// Deliveries the consumers acknowledged.
    pub acked: u64,
    /// Deliveries the consumers nacked or rejected (requeued or not).
    pub nacked: u64,
    /// Messages dead-lettered (to an existing dead-letter exchange).
    pub dead_lettered: u64,
}

/// One message as a queue holds it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueuedMessage {
    /// The body.
    pub body: Bytes,
    /// The properties, headers included (`x-death` once dead-lettered).
    pub properties: BasicProperties,
    /// Delivered before and requeued.
    pub redelivered: bool,
    /// The routing key it was published (or dead-lettered) with.
    pub routing_key: String,
}

impl QueuedMessage {
    /// The message's headers (empty when it has none).
    pub fn headers(&self) -> FieldTable {
        self.properties.headers.clone().unwrap_or_default()
    }
}

struct Inner {
    core: Core,
    wakers: Vec<(u64, Waker)>,
    /// Where the core's monotonic clock starts.
    epoch: Instant,
}

impl Inner {
    fn now(&self) -> Now {
        Now {
            millis: u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX),
            unix_secs: unix_seconds(),
        }
    }

    /// When the core's next timer is due, on tokio's clock.
    fn next_timer(&self) -> Option<Instant> {
        self.core
            .poll_timeout()
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    /// Lets the core see the time; returns the wakers of readers that now have output.
    fn tick(&mut self) -> Vec<Waker> {
        let now = self.now();
        self.core.handle_timeout(now);
        self.ready_wakers()
    }

    /// The wakers of readers that now have something to read.
    fn ready_wakers(&mut self) -> Vec<Waker> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wakers)
            .into_iter()
            .partition(|(id, _)| self.core.has_output(*id));
        self.wakers = waiting;
        ready.into_iter().map(|(_, w)| w).collect()
    }
}

/// An in-memory broker; clones are handles to the same broker. See the [crate docs](crate).
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

/// [`MemoryBroker::from_topology`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TopologyError {
    /// The connection to the in-memory broker failed.
    Connection(serena::Error),
    /// The broker refused part of the topology.
    Apply(ApplyReport),
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Connection(e) => write!(f, "connecting to the in-memory broker: {e}"),
            TopologyError::Apply(report) => write!(f, "applying the topology: {report}"),
        }
    }
}

impl std::error::Error for TopologyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TopologyError::Connection(e) => Some(e),
            TopologyError::Apply(_) => None,
        }
    }
}

impl MemoryBroker {
    /// An empty broker: the default and `amq.*` exchanges, no queues.
    pub fn new() -> Self {
        MemoryBroker {
            inner: Arc::new(Mutex::new(Inner {
                core: Core::new(),
                wakers: Vec::new(),
                epoch: Instant::now(),
            })),
        }
    }

    /// A broker with `topology` declared on it (through the client, as `serena apply` would).
    pub async fn from_topology(topology: &Topology) -> Result<Self, TopologyError> {
        let broker = MemoryBroker::new();
        let report = serena::open_connection(&broker.config(), async |conn| {
            Ok::<_, serena::Error>(topology.apply(conn).await)
        })
        .await
        .map_err(TopologyError::Connection)?;
        if !report.is_ok() {
            return Err(TopologyError::Apply(report));
        }
        Ok(broker)
    }

    /// A configuration whose connections open to this broker (heartbeats off).
    pub fn config(&self) -> ConnectionConfig {
        let mut config = ConnectionConfig::default().with_connector(MemoryConnector {
            inner: self.inner.clone(),
        });
        config.heartbeat = Duration::ZERO;
        config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// What queue `queue` holds, head first; `None` when there is no such queue. Messages
    /// delivered and not yet settled are not in the queue.
    pub fn messages(&self, queue: &str) -> Option<Vec<QueuedMessage>> {
        let inner = self.lock();
        let queued = inner.core.queued(queue)?;
        Some(
            queued
                .into_iter()
                .map(|m| QueuedMessage {
                    body: m.body,
                    properties: m.properties,
                    redelivered: m.redelivered,
                    routing_key: m.routing_key,
                })
                .collect(),
        )
    }

    /// How many messages queue `queue` holds (`None`: no such queue).
    pub fn message_count(&self, queue: &str) -> Option<usize> {
        self.messages(queue).map(|m| m.len())
    }

    /// The names of the queues, sorted.
    pub fn queues(&self) -> Vec<String> {
        self.lock().core.queue_names()
    }

    /// What happened so far.
    pub fn stats(&self) -> Stats {
        self.lock().core.stats
    }

    /// True when nothing is in flight: every connection has read what the broker sent, no
    /// delivery waits for its settlement, no queue holds a message that a consumer could take.
    /// Messages waiting for their TTL do not count (see [`run_until_idle`](Self::run_until_idle)).
    pub fn is_idle(&self) -> bool {
        self.lock().core.is_idle()
    }

    /// Runs the broker for at most `limit` of tokio time, and returns as soon as it is
    /// [idle](Self::is_idle) over a few turns of the runtime with no message due to expire
    /// before the end of `limit`: true then, false when `limit` ran out first.
    ///
    /// Under `tokio::time::pause` (`#[tokio::test(start_paused = true)]`) the waits take no
    /// time: a message in a delay queue with a one-minute TTL comes back at once, and retry
    /// schedules run through in milliseconds. A message that expires after `limit` (a parking
    /// queue's 14 days) stays where it is.
    pub async fn run_until_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut quiet = 0;
        while quiet < 3 {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            let (idle, next) = {
                let mut inner = self.lock();
                let wakers = inner.tick();
                let state = (inner.core.is_idle(), inner.next_timer());
                drop(inner);
                wakers.into_iter().for_each(Waker::wake);
                state
            };
            let now = Instant::now();
            match next {
                Some(at) if idle && at <= deadline => {
                    quiet = 0;
                    tokio::time::sleep_until(at).await;
                    continue;
                }
                _ if idle => quiet += 1,
                _ => quiet = 0,
            }
            if now >= deadline {
                return quiet >= 3;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The core never panics while locked in normal operation; a poisoned lock still holds a
    // consistent broker for inspection.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct MemoryConnector {
    inner: Arc<Mutex<Inner>>,
}

impl Connector for MemoryConnector {
    fn connect<'a>(&'a self, _endpoint: &'a Endpoint) -> ConnectFuture<'a> {
        Box::pin(async move {
            let id = lock(&self.inner).core.handle_connect();
            Ok(Box::new(MemoryStream {
                inner: self.inner.clone(),
                id,
                timer: None,
            }) as Box<dyn ByteStream>)
        })
    }
}

/// One connection's end: what the client writes goes through the core at once; reads take
/// what the core has for this connection, or wait to be woken when it has more.
/// A waiting reader also keeps the broker's next TTL timer, so messages expire while every
/// client only waits.
struct MemoryStream {
    inner: Arc<Mutex<Inner>>,
    id: u64,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut inner = lock(&this.inner);
            match inner.core.poll_output(this.id, buf.remaining()) {
                None => return Poll::Ready(Ok(())),
                Some(bytes) if !bytes.is_empty() => {
                    buf.put_slice(&bytes);
                    return Poll::Ready(Ok(()));
                }
                Some(_) => {}
            }
            let id = this.id;
            inner.wakers.retain(|(w, _)| *w != id);
            inner.wakers.push((id, cx.waker().clone()));
            let Some(at) = inner.next_timer() else {
                this.timer = None;
                return Poll::Pending;
            };
            drop(inner);
            if this.timer.as_ref().is_none_or(|(t, _)| *t != at) {
                this.timer = Some((at, Box::pin(tokio::time::sleep_until(at))));
            }
            let (_, sleep) = this.timer.as_mut().expect("set above");
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.timer = None;
            let wakers = lock(&this.inner).tick();
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wakers = {
            let mut inner = lock(&self.inner);
            let now = inner.now();
            inner.core.handle_input(self.id, buf, now);
            inner.ready_wakers()
        };
        wakers.into_iter().for_each(Waker::wake);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let wakers = {
            let mut inner = lock(&self.inner);
            inner.core.handle_disconnect(self.id);
            let id = self.id;
            inner.wakers.retain(|(w, _)| *w != id);
            inner.ready_wakers()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}
