//! Connections as scopes.
//!
//! ```text
//!   open_connection(cfg, body)
//!     |  for each broker in turn (or shuffled), until one answers:
//!     |    connect (TCP, TLS or Unix socket) + handshake, bounded by connection_timeout
//!     |  spawn reader + writer tasks (owned by the Connection; aborted when it goes)
//!     |  run body(&conn)  <---- raced against ---->  the connection dying
//!     |        | body returns v                          | server close / socket / heartbeat
//!     |  connection.close -> close-ok                  body cancelled (dropped)
//!     v  Ok(v)                                         Err(error)
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::channel::Channel;
use super::rpc::{RpcClient, RpcOptions};
use super::unconfirmed::UnconfirmedChannel;
use crate::config::{ConnectionConfig, Endpoint};
use crate::driver::shared::{ConnShared, lock};
use crate::driver::transport::{self, Socket, Transport};
use crate::driver::{Reader, handshake, write_loop};
use crate::error::{ConnectAttempt, Error, Result};
use crate::proto::connection::{Tuning, server_has_capability};
use crate::proto::{FieldTable, LongString};

/// How long a clean close waits for the server's `close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a failed connection's writer may take to flush its last frames.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Opens a connection, runs `body` inside it, and closes it.
///
/// When `body` finishes, the connection is closed cleanly (`connection.close` / `close-ok`) and
/// `body`'s result returned, `Ok` or `Err` alike. When the server closes the connection, the
/// socket fails or heartbeats stop, `body` is cancelled (dropped at its current `.await`) and
/// the error returned, for a server close an
/// [`UnexpectedCloseError`](crate::UnexpectedCloseError). An error of the connection itself
/// (it could not be opened, it died, its close failed) wins over `body`'s result. No task
/// started for the connection outlives this call.
///
/// `body` returns `Result<T, E>` for any error type `E` that serena's [`Error`] converts
/// into (`serena::Error` itself, `anyhow::Error`, an application's own error), and so does the
/// scope: `?` works on serena's calls inside `body` and on the scope's result outside it.
///
/// ```no_run
/// use serena::{ConnectionConfig, open_connection};
///
/// async fn count_hello() -> serena::Result<u32> {
///     open_connection(&ConnectionConfig::default(), async |conn| {
///         conn.open_channel(async |ch| {
///             let q = ch.queue_declare("hello", Default::default()).await?;
///             ch.basic_publish("", "hello", b"hi", Default::default()).await?;
///             Ok(q.message_count)
///         })
///         .await
///     })
///     .await
/// }
/// ```
///
/// The error type is inferred from where the scope's result goes. When nothing fixes it (the
/// result is `?`-ed into another error type and `body` ends in `Ok(..)`), name it on the
/// binding: `let n: serena::Result<u32> = open_connection(..).await;`.
pub async fn open_connection<T, E: From<Error>>(
    config: &ConnectionConfig,
    body: impl AsyncFnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    run_scope(Connection::open(config).await?, body).await?
}

/// Runs `body` with `handle` (a handle of the channel `ch`) until it returns or the channel
/// ends. A clean return closes the channel (an error of the close wins over `body`'s result);
/// the channel's end cancels `body` and is the scope's error.
async fn channel_scope<H, T, E: From<Error>>(
    ch: &Channel,
    handle: &H,
    body: impl AsyncFnOnce(&H) -> Result<T, E>,
) -> Result<T, E> {
    let mut closed = ch.closed_watch();
    let outcome = tokio::select! {
        v = body(handle) => Ok(v),
        e = wait_closed(&mut closed) => Err(e),
    };
    match outcome {
        Ok(v) => {
            ch.close().await?;
            v
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `body` inside the open connection `conn`, then closes it: [`open_connection`]'s scope,
/// for any `body` value (the supervisor's carries its own error type); the outer `Result` is
/// the connection's.
pub(crate) async fn run_scope<T>(
    conn: Connection,
    body: impl AsyncFnOnce(&Connection) -> T,
) -> Result<T> {
    let mut closed = conn.closed_watch();
    let outcome = tokio::select! {
        v = body(&conn) => Ok(v),
        e = wait_closed(&mut closed) => Err(e),
    };
    match outcome {
        Ok(v) => {
            conn.close().await?;
            Ok(v)
        }
        Err(e) => {
            conn.finish_after_failure(&e).await;
            Err(e)
        }
    }
}

/// Resolves with the error once the watched connection or channel has ended.
pub(crate) async fn wait_closed(rx: &mut watch::Receiver<Option<Error>>) -> Error {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Error::Closed("connection")),
        Err(_) => Error::Closed("connection"),
    }
}

/// The connection's two tasks. Dropping this aborts both and ends the connection (if the
/// tasks had not): a `close` or a scope's cleanup that is itself dropped mid-way (a `timeout`
/// around it) leaves no task running and no caller waiting on a connection nobody reads.
struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    shared: Arc<ConnShared>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.fail(Error::Closed("connection"));
    }
}

struct Inner {
    shared: Arc<ConnShared>,
    tasks: Mutex<Option<Tasks>>,
    prefetch: u16,
    endpoint: Endpoint,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the tasks aborts them.
        drop(lock(&self.tasks).take());
        self.shared.fail(Error::Closed("connection"));
    }
}

/// Heartbeat and traffic counters of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatStats {
    /// The negotiated interval (zero: heartbeats off).
    pub interval: Duration,
    /// Heartbeats we sent because the connection was quiet.
    pub sent: u64,
    /// Heartbeats the server sent.
    pub received: u64,
    /// Frames received of any kind.
    pub frames_received: u64,
    /// Bytes written to the socket.
    pub bytes_written: u64,
    /// Frames that belonged to nothing any more and were dropped: deliveries RabbitMQ sent
    /// after it closed a channel, deliveries to a consumer that is gone, replies nobody
    /// waits for, what arrives after our close.
    pub late_frames: u64,
    /// Acks that left folded into an earlier ack of their channel, as one
    /// `ack(multiple)`: acks made in delivery order while the previous one still waited for
    /// the socket. The broker saw the same acks in fewer frames.
    pub acks_folded: u64,
}

/// An open AMQP connection. Cheap to clone; the connection's tasks stop when the last clone
/// is dropped or [`close`](Self::close) is called. Prefer [`open_connection`], which scopes it.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.inner.endpoint)
            .field("tuning", &self.inner.shared.tuning)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the first broker of the configuration that answers (`host:port`, then
    /// `more_hosts`, or all of them shuffled with `shuffle_hosts`), each attempt within
    /// `config.connection_timeout`.
    ///
    /// With one broker, the error is that attempt's; with several,
    /// [`Error::AllHostsFailed`] lists every attempt.
    pub async fn open(config: &ConnectionConfig) -> Result<Connection> {
        let mut endpoints = config.endpoints();
        if config.shuffle_hosts {
            shuffle(&mut endpoints);
        }
        Ok(Self::open_first(config, &endpoints).await?.0)
    }

    /// Tries `endpoints` in order; the connection and the index of the broker that answered.
    pub(crate) async fn open_first(
        config: &ConnectionConfig,
        endpoints: &[Endpoint],
    ) -> Result<(Connection, usize)> {
        let mut attempts = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match Self::open_endpoint(config, endpoint).await {
                Ok(conn) => return Ok((conn, i)),
                Err(error) => {
                    if endpoints.len() > 1 {
                        tracing::warn!(%endpoint, %error, "broker unreachable; trying the next");
                    }
                    attempts.push(ConnectAttempt {
                        endpoint: endpoint.to_string(),
                        error,
                    });
                }
            }
        }
        match attempts.len() {
            0 => Err(Error::Config("no broker to connect to".into())),
            1 => Err(attempts.remove(0).error),
            _ => Err(Error::AllHostsFailed(attempts)),
        }
    }

    /// Connects to one broker and performs the handshake, both within
    /// `config.connection_timeout`, then starts the connection's tasks.
    async fn open_endpoint(config: &ConnectionConfig, endpoint: &Endpoint) -> Result<Connection> {
        let connect = async {
            // The one place that asks which kind of socket it is: from here on the code is
            // generic, compiled once per kind.
            match transport::connect(endpoint, config).await? {
                Socket::Tcp(s) => Self::start(s, config, endpoint).await,
                Socket::Custom(s) => Self::start(s, config, endpoint).await,
                #[cfg(unix)]
                Socket::Unix(s) => Self::start(s, config, endpoint).await,
                #[cfg(feature = "tls")]
                Socket::Tls(s) => Self::start(s, config, endpoint).await,
            }
        };
        tokio::time::timeout(config.connection_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout {
                addr: endpoint.to_string(),
                after: config.connection_timeout,
            })?
            .map_err(transport::classify)
    }

    /// Performs the handshake on a fresh `stream`, then starts the reader and writer tasks on
    /// its halves.
    async fn start(
        mut stream: impl Transport,
        config: &ConnectionConfig,
        endpoint: &Endpoint,
    ) -> Result<Connection> {
        let (tuning, props, buf) = handshake(&mut stream, config).await?;
        tracing::debug!(%endpoint, ?tuning, "connection open");
        let shared = Arc::new(ConnShared::new(tuning, props));
        let (read_half, write_half) = stream.into_halves();

        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = Reader::new(shared.clone()).run(read_half, buf).await;
                // A server that broke the protocol has had its connection.close from the
                // reader already, with the reply code of the rule it broke.
                shared.fail(result.err().unwrap_or(Error::Closed("connection")));
            })
        };
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = write_loop(write_half, shared.clone()).await {
                    shared.fail(e);
                }
            })
        };
        Ok(Connection {
            inner: Arc::new(Inner {
                shared: shared.clone(),
                tasks: Mutex::new(Some(Tasks {
                    reader,
                    writer,
                    shared,
                })),
                prefetch: config.prefetch_count(),
                endpoint: endpoint.clone(),
            }),
        })
    }

    pub(crate) fn closed_watch(&self) -> watch::Receiver<Option<Error>> {
        self.inner.shared.closed.subscribe()
    }

    /// The error the connection ended with, if it has ended.
    pub fn error(&self) -> Option<Error> {
        self.inner.shared.closed.borrow().clone()
    }

    /// Waits until the connection ends and returns why.
    pub async fn closed(&self) -> Error {
        wait_closed(&mut self.closed_watch()).await
    }

    /// The broker this connection reached (of the configuration's list).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The limits settled with the server.
    pub fn tuning(&self) -> Tuning {
        self.inner.shared.tuning
    }

    /// The negotiated maximum frame size in bytes.
    pub fn frame_max(&self) -> u32 {
        self.inner.shared.frame_max
    }

    /// The properties the server announced in `connection.start` (product, version,
    /// capabilities, ...).
    pub fn server_properties(&self) -> &FieldTable {
        &self.inner.shared.server_properties
    }

    /// True when the server announced `capability` (e.g. `"consumer_cancel_notify"`).
    pub fn server_has_capability(&self, capability: &str) -> bool {
        server_has_capability(&self.inner.shared.server_properties, capability)
    }

    /// Heartbeat and traffic counters.
    pub fn heartbeat_stats(&self) -> HeartbeatStats {
        let s = &self.inner.shared.stats;
        let seen = lock(&self.inner.shared.state).machine.stats();
        HeartbeatStats {
            interval: Duration::from_secs(u64::from(self.inner.shared.tuning.heartbeat)),
            sent: seen.heartbeats_sent,
            received: seen.heartbeats_received,
            frames_received: seen.frames_received,
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            late_frames: seen.late_frames,
            acks_folded: seen.acks_folded,
        }
    }

    /// The reason the broker blocks publishing (`connection.blocked`), while it does.
    pub fn blocked(&self) -> Option<String> {
        lock(&self.inner.shared.state)
            .machine
            .blocked()
            .map(str::to_owned)
    }

    /// Number of channels open on this connection.
    pub fn open_channels(&self) -> usize {
        lock(&self.inner.shared.state).machine.open_channels()
    }

    /// Opens a channel, runs `body` with it, and closes it.
    ///
    /// The channel comes with publisher confirms on and QoS set (prefetch a third of
    /// `channel_buffer_size`, per consumer). When the server closes the channel (or the
    /// connection dies), `body` is cancelled and the [`UnexpectedCloseError`](crate::UnexpectedCloseError)
    /// returned; otherwise the channel is closed cleanly and `body`'s result returned (an
    /// error of the close wins over it). As with [`open_connection`], `body` returns
    /// `Result<T, E>` for any `E: From<serena::Error>`, and so does the scope.
    pub async fn open_channel<T, E: From<Error>>(
        &self,
        body: impl AsyncFnOnce(&Channel) -> Result<T, E>,
    ) -> Result<T, E> {
        let ch = self.channel().await?;
        channel_scope(&ch, &ch, body).await
    }

    /// Opens a channel without publisher confirms ([`UnconfirmedChannel`]), runs `body` with
    /// it, and closes it; the scope of [`open_channel`](Self::open_channel) for fire-and-forget
    /// publishing. A clean end closes the channel after the broker received every publish.
    pub async fn open_unconfirmed_channel<T, E: From<Error>>(
        &self,
        body: impl AsyncFnOnce(&UnconfirmedChannel) -> Result<T, E>,
    ) -> Result<T, E> {
        let ch = self.unconfirmed_channel().await?;
        channel_scope(ch.channel(), &ch, body).await
    }

    /// Opens a channel for request/reply over RabbitMQ's direct reply-to, runs `body` with its
    /// [`RpcClient`], and closes it; [`open_rpc_with`](Self::open_rpc_with) with the default
    /// [`RpcOptions`] (30 s per call, 1,000 calls in flight).
    ///
    /// ```no_run
    /// # async fn demo(conn: &serena::Connection) -> serena::Result<()> {
    /// let total: u64 = conn
    ///     .open_rpc(async |rpc| {
    ///         // Both calls are in flight at once on the scope's one channel.
    ///         let (a, b) = tokio::join!(rpc.call::<_, u64>("square", &3), rpc.call::<_, u64>("square", &4));
    ///         Ok::<_, serena::Error>(a? + b?)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn open_rpc<T, E: From<Error>>(
        &self,
        body: impl AsyncFnOnce(&RpcClient) -> Result<T, E>,
    ) -> Result<T, E> {
        self.open_rpc_with(RpcOptions::default(), body).await
    }

    /// Opens a channel for request/reply, runs `body` with its [`RpcClient`], and closes it.
    ///
    /// The channel (with confirms, like every [`Channel`]) consumes `amq.rabbitmq.reply-to`
    /// before `body` starts, and the dispatcher that hands each reply to its call runs in this
    /// future beside `body`: no task is spawned, and nothing outlives the scope. When the
    /// channel or the connection ends, every call in flight fails with the reason at once,
    /// `body` is dropped, and the scope returns the reason; a handle cloned out of the scope
    /// fails its calls with [`Error::Closed`] afterwards. See [`RpcClient`] for what a call
    /// resolves with.
    pub async fn open_rpc_with<T, E: From<Error>>(
        &self,
        options: RpcOptions,
        body: impl AsyncFnOnce(&RpcClient) -> Result<T, E>,
    ) -> Result<T, E> {
        let ch = self.channel().await?;
        super::rpc::rpc_scope(ch, options, body).await
    }

    /// Opens a channel as a handle: confirms on, QoS set. It is closed by
    /// [`Channel::close`], or in the background when the last clone is dropped.
    pub async fn channel(&self) -> Result<Channel> {
        Channel::open(self.inner.shared.clone(), self.inner.prefetch, true).await
    }

    /// Opens a channel without publisher confirms, for fire-and-forget publishing (see
    /// [`UnconfirmedChannel`]). QoS is set as on every channel. It is closed by
    /// [`UnconfirmedChannel::close`], or in the background when the last clone is dropped.
    pub async fn unconfirmed_channel(&self) -> Result<UnconfirmedChannel> {
        let channel = Channel::open(self.inner.shared.clone(), self.inner.prefetch, false).await?;
        Ok(UnconfirmedChannel::new(channel))
    }

    /// Opens a pool of `size` channels on this connection.
    pub async fn channel_pool(&self, size: usize) -> Result<super::ChannelPool> {
        super::ChannelPool::new(self, size).await
    }

    /// Replaces the secret (password) of the live connection, RabbitMQ's `update-secret`: an
    /// expiring token (OAuth 2) is rotated without reconnecting. Resolves once the broker
    /// accepts it (`update-secret-ok`); a broker that refuses it closes the connection, and
    /// the call fails with that error.
    pub async fn update_secret(
        &self,
        new_secret: impl Into<LongString>,
        reason: &str,
    ) -> Result<()> {
        let shared = &self.inner.shared;
        let (tx, accepted) = tokio::sync::oneshot::channel();
        let new_secret = new_secret.into();
        shared.with(true, |m| m.update_secret(new_secret, reason, tx))?;
        let mut closed = self.closed_watch();
        tokio::select! {
            ok = accepted => match ok {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(wait_closed(&mut closed).await),
            },
            e = wait_closed(&mut closed) => Err(e),
        }
    }

    /// Closes the connection cleanly: `connection.close`, then waits (5 s at most) for
    /// `close-ok`. Calls still pending fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let shared = &self.inner.shared;
        match shared.with(false, |m| m.close(200, "goodbye")) {
            Ok(()) => {}
            Err(Error::Closed(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        let tasks = lock(&self.inner.tasks).take();
        if let Some(mut tasks) = tasks {
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut tasks.reader)
                .await
                .is_err()
            {
                tracing::warn!("no close-ok from the server within {CLOSE_TIMEOUT:?}");
                tasks.reader.abort();
                shared.fail(Error::Closed("connection"));
            }
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut tasks.writer).await;
            // Dropped here: whatever has not finished is aborted.
        }
        match shared.closed.borrow().clone() {
            None | Some(Error::Closed(_)) => {}
            Some(e) => return Err(e),
        }
        shared.fail(Error::Closed("connection"));
        Ok(())
    }

    /// After the connection failed with `error`: lets the writer flush what is queued (a
    /// close-ok for the server's close, or our close with a 501/505 reply code) for a moment
    /// when the server is still there to read it, then stops both tasks. After a socket error
    /// or a heartbeat loss nobody reads any more, and a writer stuck on a full socket buffer
    /// would only delay the error: both tasks stop at once.
    async fn finish_after_failure(&self, error: &Error) {
        let tasks = lock(&self.inner.tasks).take();
        if let Some(mut tasks) = tasks {
            tasks.reader.abort();
            let server_listens = matches!(
                error,
                Error::UnexpectedClose(_) | Error::Protocol(_) | Error::UnexpectedMethod(_)
            );
            if server_listens {
                let _ = tokio::time::timeout(FLUSH_GRACE, &mut tasks.writer).await;
            }
            // Dropped here: the writer is aborted unless it finished flushing.
        }
        self.inner.shared.fail(Error::Closed("connection"));
    }
}

/// Puts `endpoints` in a random order (`fastrand`'s Fisher-Yates shuffle).
pub(crate) fn shuffle(endpoints: &mut [Endpoint]) {
    fastrand::shuffle(endpoints);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_keeps_every_broker_and_varies_the_order() {
        let list: Vec<Endpoint> = (0..6)
            .map(|i| Endpoint::new(format!("h{i}"), 5672))
            .collect();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut shuffled = list.clone();
            shuffle(&mut shuffled);
            let mut sorted = shuffled.clone();
            sorted.sort_by(|a, b| a.host.cmp(&b.host));
            assert_eq!(sorted, list);
            orders.insert(shuffled);
        }
        // 720 orders are possible; 50 draws that all agree would mean no shuffling at all.
        assert!(orders.len() > 1, "{orders:?}");
    }
}
