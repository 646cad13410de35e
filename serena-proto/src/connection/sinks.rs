//! What the state machine hands results to, and the failures it reports.
//!
//! The machine never waits and never wakes anybody: it keeps the driver's waiters (a oneshot
//! sender, a channel to a consumer, whatever the driver chose) as opaque values of the
//! [`Sinks`] types, and gives each back through a `Sinks` function when its answer is known.
//! Tests use plain `std::sync::mpsc` senders.

use std::time::Duration;

use bytes::Bytes;

use crate::content::{Assembled, Content};
use crate::error::{DecodeError, EncodeError};
use crate::properties::BasicProperties;

/// The driver's side of the state machine: the types of its waiters and how to complete them.
///
/// Every function is called with the machine's own state already updated, so a waiter woken
/// by it sees the outcome when it asks the machine (a channel's error is recorded before any
/// of its calls fail).
pub trait Sinks {
    /// The error every caller gets; built from the machine's [`Failure`]s, and able to carry
    /// the driver's own (a socket error, a lost heartbeat) through [`Connection::fail`](super::Connection::fail).
    type Error: Clone + From<Failure>;
    /// Waits for the reply to one synchronous method.
    type Call;
    /// Waits for the broker's confirm of one publish.
    type Confirm;
    /// Receives one consumer's deliveries.
    type Consumer;
    /// Watches one channel: told when it ends and when the server pauses it.
    type Channel;

    /// Completes a call. `false` when nobody waits any more (the caller's future was dropped):
    /// the machine then undoes what the call left behind (cancels a consumer, gives back a
    /// fetched message).
    fn reply(call: Self::Call, reply: Result<Assembled, Self::Error>) -> bool;
    /// Completes a publish: `Ok` when the broker took it.
    fn confirm(confirm: Self::Confirm, outcome: Result<(), Self::Error>);
    /// Hands a delivery to its consumer; `false` when the consumer is gone.
    fn deliver(consumer: &Self::Consumer, delivery: Content) -> bool;
    /// Ends a consumer: cancelled by the server, or its channel ended. A consumer that ends
    /// because we cancelled it is simply dropped.
    fn end_consumer(consumer: Self::Consumer, reason: Self::Error);
    /// The channel ended (closed by either side, or the connection went).
    fn channel_ended(channel: &Self::Channel, reason: &Self::Error);
    /// `channel.flow` from the server: `false` pauses publishing on the channel.
    fn flow_changed(channel: &Self::Channel, active: bool);
}

/// Why a call, a channel or the connection failed, as the protocol sees it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The server closed the connection or a channel.
    ServerClosed(ServerClose),
    /// This side closed the connection (`"connection"`) or the channel (`"channel"`) first.
    Closed(&'static str),
    /// The server sent bytes that are not valid AMQP 0-9-1.
    Protocol(DecodeError),
    /// The server sent a valid frame the protocol does not allow there.
    UnexpectedMethod(String),
    /// A frame could not be encoded; nothing was sent.
    Encode(EncodeError),
    /// Every channel id up to `channel_max` is taken.
    ChannelsExhausted {
        /// The negotiated limit.
        max: u16,
    },
    /// A mandatory publish no queue took.
    Returned(Box<Returned>),
    /// The broker refused a publish (`basic.nack`).
    Nacked,
    /// The server cancelled a consumer (`basic.cancel`), with its tag.
    ConsumerCancelled(String),
    /// Nothing came from the server for this long (two heartbeat intervals).
    HeartbeatTimeout(Duration),
    /// A call the channel's mode does not allow (a confirmed publish without confirm mode,
    /// a fire-and-forget one with it); nothing was sent.
    Misuse(&'static str),
}

impl From<EncodeError> for Failure {
    fn from(e: EncodeError) -> Self {
        Failure::Encode(e)
    }
}

/// A `connection.close` or `channel.close` from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClose {
    /// The channel it closed, or `None` for the connection.
    pub channel: Option<u16>,
    /// AMQP reply code (404, 406, 320, ...).
    pub reply_code: u16,
    /// The server's reason.
    pub reply_text: String,
    /// Class of the method that caused it, or 0.
    pub class_id: u16,
    /// Method that caused it, or 0.
    pub method_id: u16,
}

/// A message the broker handed back (`basic.return`).
#[derive(Debug, Clone, PartialEq)]
pub struct Returned {
    /// Why (312 no-route).
    pub reply_code: u16,
    /// The broker's reason.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}
