//! # serena
//!
//! A structurally concurrent AMQP 0-9-1 client for RabbitMQ on tokio.
//!
//! A connection is a scope ([`open_connection`]); channels are opened inside it
//! ([`Connection::open_channel`]). When the server closes a channel, calls on it fail with an
//! [`UnexpectedCloseError`] carrying the reply code and text; when it closes the connection,
//! everything inside the scope is cancelled and the scope returns that error. Publisher
//! confirms are always on, every channel gets QoS (prefetch = `channel_buffer_size / 3`), and
//! the frame size is the smaller of ours and the server's.
//!
//! ```no_run
//! use serena::{ConnectionConfig, open_connection, proto::BasicProperties};
//!
//! async fn greet() -> serena::Result<()> {
//!     open_connection(&ConnectionConfig::default(), async |conn| {
//!         conn.open_channel(async |ch| {
//!             ch.queue_declare("greetings", Default::default()).await?;
//!             ch.basic_publish("", "greetings", b"hello", BasicProperties::default()).await?;
//!             let msg = ch.basic_get("greetings", false).await?.expect("a message");
//!             msg.ack()?;
//!             Ok(())
//!         })
//!         .await
//!     })
//!     .await
//! }
//! ```
//!
//! ## Layout
//!
//! - [`proto`] (the crate `serena-proto`, which has no tokio to reach for): the sans-IO AMQP
//!   0-9-1 codec (frames, every method of every class with RabbitMQ's extensions, field tables
//!   with every errata type, the content header and its 14 properties, message (re)assembly,
//!   handshake negotiation) and [`proto::connection::Connection`], the state machine that
//!   owns every channel's life: ids, close handshakes, pending calls, confirms and returns,
//!   consumers, flow, the broker's block, heartbeats. No I/O, no clocks, no panics on any
//!   input.
//! - `driver` (private): the transport (TCP, TLS, Unix socket), the handshake, and the reader
//!   and writer tasks that own the socket; they feed the machine bytes and time, write what
//!   it queues, and complete the handles' waiters through its `Sinks`.
//! - `client` (private; its items are at the crate root): the handles: [`Connection`],
//!   [`Channel`], [`Consumer`], [`Delivery`]. They call methods on the machine (under the
//!   connection's one lock) and never hold protocol state of their own.
//! - `config` (private; at the root): [`ConnectionConfig`], from code or an `amqp://` /
//!   `amqps://` URI: TLS, host lists, Unix sockets.
//! - `error` (private; at the root): [`Error`] and [`UnexpectedCloseError`].
//!
//! Every type has one public path: the handles, the configuration and the errors are named
//! from the crate root (`serena::Channel`, `serena::ConnectionConfig`, `serena::Error`);
//! [`topology`], [`worker`] and [`proto`] are modules of their own.
//! - [`topology`]: declarative exchanges, queues and bindings from `topology.toml`. The model,
//!   the TOML loading with line and column in every error and the validation are the crate
//!   `serena-topology` (pure, shared with `#[consumer]`, which loads the file at compile time);
//!   apply, verify and resolving the `[connection]` settings are here.
//! - [`worker`]: `#[consumer]` handlers, extractors, outcomes and the supervisor; with the
//!   features `metrics` and `http`, its metrics and the `/metrics`, `/healthz`, `/readyz`
//!   endpoint.
//! - `otel` (feature `otel`): trace context carried in message headers, from the handler that
//!   publishes to the handler that consumes.

#[macro_use]
mod macros;
mod client;
mod config;
mod driver;
mod error;
pub use serena_proto as proto;
#[cfg(feature = "otel")]
pub mod otel;
pub mod topology;
pub mod worker;

pub use client::{
    Channel, ChannelPool, Confirmation, Connection, ConsumeOptions, Consumer, DIRECT_REPLY_TO,
    Delivery, ExchangeDeclareOptions, GetMessage, HeartbeatStats, IntoBody, PooledChannel,
    PublishOptions, PublisherState, PublisherStats, QueueDeclareOk, QueueDeclareOptions,
    ReliableConfirmation, ReliablePublisher, ReliablePublisherOptions, ReplyMessage, RpcClient,
    RpcOptions, StreamOffset, UnconfirmedChannel, WhenFull, open_connection,
};
pub use config::{
    AuthMechanism, ByteStream, ClientCertificate, ConnectFuture, ConnectionConfig, Connector,
    Endpoint, Password, SharedConnector, TlsOptions,
};
pub use error::{
    CertificateProblem, CloseScope, ConnectAttempt, Error, Result, ReturnedMessage, TlsError,
    UnexpectedCloseError,
};
/// Turns an `async fn` into a [`worker::Handler`]: `#[consumer(queue = "orders")]`.
pub use serena_macros::consumer;

/// The README's Rust examples, compiled as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
