//! Fire-and-forget channels: publishing without publisher confirms.

use super::body::IntoBody;
use super::channel::{Channel, QueueDeclareOk};
use super::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use crate::error::{Error, Result};
use crate::proto::BasicProperties;
use crate::proto::connection::Publish;

/// A channel that publishes without publisher confirms, for telemetry-style traffic where
/// losing a message when the connection dies is acceptable and a confirm per message is not
/// worth its round trip.
///
/// Opened for a scope with
/// [`Connection::open_unconfirmed_channel`](crate::Connection::open_unconfirmed_channel), or as
/// a handle with [`Connection::unconfirmed_channel`](crate::Connection::unconfirmed_channel);
/// every [`Channel`] keeps confirms on. There is no way to wait for a confirm here, on
/// purpose: [`basic_publish`](Self::basic_publish) resolves once the message is queued for
/// the socket, and a message the broker cannot route is dropped by it (or goes to the
/// exchange's alternate exchange), since no `mandatory` publish can be told about a return
/// without a confirm. What it still gives:
///
/// - back-pressure: a publish waits while the write buffer is full, the broker blocks the
///   connection (a memory or disk alarm) or the server paused the channel; wrap it in
///   [`tokio::time::timeout`] to drop messages instead of waiting, which is safe since a
///   publish dropped while waiting sent nothing;
/// - order: [`close`](Self::close) resolves after the broker received every publish made
///   before it (its `close-ok` follows them on the wire);
/// - the same end as a [`Channel`]: a server close fails the next call with its
///   [`UnexpectedCloseError`](crate::UnexpectedCloseError).
///
/// ```no_run
/// # async fn demo(conn: &serena::Connection) -> serena::Result<()> {
/// conn.open_unconfirmed_channel(async |telemetry| {
///     for reading in [20.5_f64, 20.7, 21.0] {
///         let body = reading.to_string();
///         telemetry.basic_publish("amq.topic", "sensors.kitchen", body, Default::default()).await?;
///     }
///     Ok(())
/// })
/// .await // the scope closes the channel after the broker took all three
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UnconfirmedChannel {
    channel: Channel,
}

impl UnconfirmedChannel {
    pub(crate) fn new(channel: Channel) -> Self {
        UnconfirmedChannel { channel }
    }

    pub(super) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel id.
    pub fn id(&self) -> u16 {
        self.channel.id()
    }

    /// True while the channel can be used.
    pub fn is_open(&self) -> bool {
        self.channel.is_open()
    }

    /// The error the channel ended with, if it has ended.
    pub fn error(&self) -> Option<Error> {
        self.channel.error()
    }

    /// Waits until the channel ends and returns why.
    pub async fn closed(&self) -> Error {
        self.channel.closed().await
    }

    /// Closes the channel; resolves once the broker answered `close-ok`, which it sends after
    /// it received every publish made on the channel before.
    pub async fn close(&self) -> Result<()> {
        self.channel.close().await
    }

    /// Declares the exchange this channel publishes to (see [`Channel::exchange_declare`]).
    pub async fn exchange_declare(
        &self,
        exchange: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
    ) -> Result<()> {
        self.channel.exchange_declare(exchange, kind, options).await
    }

    /// Declares a queue (see [`Channel::queue_declare`]). A passive declare after publishes
    /// counts them: the broker handles a channel's frames in order.
    pub async fn queue_declare(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
    ) -> Result<QueueDeclareOk> {
        self.channel.queue_declare(queue, options).await
    }

    /// Publishes `body` and resolves as soon as it is queued for the socket; no confirm, no
    /// return. Waits first while the write buffer is full, the broker blocks the connection
    /// or the server paused the channel.
    pub async fn basic_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<()> {
        let link = self.channel.link();
        let mut st = self.channel.publishable(None).await?;
        let sent = body.with_body(|body| {
            let publish = Publish {
                exchange,
                routing_key,
                mandatory: false,
                immediate: false,
                properties: (&properties).into(),
                body,
            };
            tracing::trace!(channel = link.id.id, %exchange, %routing_key, len = body.as_slice().len(), "publishing unconfirmed");
            st.machine
                .publish_unconfirmed(link.id, &publish)
                .map_err(|e| link.reason(e))
        });
        link.conn.release(st);
        sent
    }
}
