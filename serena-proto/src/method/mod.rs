//! Every method of every AMQP 0-9-1 class, with RabbitMQ's extensions, one class per file.
//!
//! Each method is a plain struct named as in the spec (`queue::Declare` is `queue.declare`);
//! [`Method`] is the sum of all of them, with the class and method ids and the wire codec.
//! Deprecated "reserved" fields are not in the structs: they are sent as zero or empty and
//! ignored when received.

pub mod basic;
pub mod channel;
pub mod confirm;
pub mod connection;
pub mod exchange;
pub mod queue;
pub mod tx;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Reader;
use super::error::{DecodeError, EncodeError};

macro_rules! methods {
    ($( $(#[$vm:meta])* $variant:ident($path:ty) = ($class:literal, $method:literal), )*) => {
        /// Any AMQP 0-9-1 method.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Method {
            $( $(#[$vm])* $variant($path), )*
        }

        $(
            impl $path {
                /// The class id on the wire.
                pub const CLASS_ID: u16 = $class;
                /// The method id on the wire.
                pub const METHOD_ID: u16 = $method;
            }

            impl From<$path> for Method {
                fn from(m: $path) -> Self {
                    Method::$variant(m)
                }
            }
        )*

        impl Method {
            /// The class id on the wire.
            pub fn class_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $class, )* }
            }

            /// The method id on the wire.
            pub fn method_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $method, )* }
            }

            /// The spec's name, e.g. `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$variant(_) => <$path>::NAME, )* }
            }

            /// Appends the method payload (class id, method id, arguments) to `buf`.
            /// On error `buf` is left as it was.
            pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                let start = buf.len();
                buf.put_u16(self.class_id());
                buf.put_u16(self.method_id());
                let result = match self { $( Method::$variant(m) => m.encode_args(buf), )* };
                if result.is_err() {
                    buf.truncate(start);
                }
                result
            }

            /// Decodes a method frame's whole payload.
            pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
                let mut r = Reader::new(payload);
                let class_id = r.short("method frame class id")?;
                let method_id = r.short("method frame method id")?;
                let method = match (class_id, method_id) {
                    $( ($class, $method) => Method::$variant(<$path>::decode_args(&mut r)?), )*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                r.finish(method.name())?;
                Ok(method)
            }
        }
    };
}

methods! {
    /// `connection.start`
    ConnectionStart(connection::Start) = (10, 10),
    /// `connection.start-ok`
    ConnectionStartOk(connection::StartOk) = (10, 11),
    /// `connection.secure`
    ConnectionSecure(connection::Secure) = (10, 20),
    /// `connection.secure-ok`
    ConnectionSecureOk(connection::SecureOk) = (10, 21),
    /// `connection.tune`
    ConnectionTune(connection::Tune) = (10, 30),
    /// `connection.tune-ok`
    ConnectionTuneOk(connection::TuneOk) = (10, 31),
    /// `connection.open`
    ConnectionOpen(connection::Open) = (10, 40),
    /// `connection.open-ok`
    ConnectionOpenOk(connection::OpenOk) = (10, 41),
    /// `connection.close`
    ConnectionClose(connection::Close) = (10, 50),
    /// `connection.close-ok`
    ConnectionCloseOk(connection::CloseOk) = (10, 51),
    /// `connection.blocked`
    ConnectionBlocked(connection::Blocked) = (10, 60),
    /// `connection.unblocked`
    ConnectionUnblocked(connection::Unblocked) = (10, 61),
    /// `connection.update-secret`
    ConnectionUpdateSecret(connection::UpdateSecret) = (10, 70),
    /// `connection.update-secret-ok`
    ConnectionUpdateSecretOk(connection::UpdateSecretOk) = (10, 71),
    /// `channel.open`
    ChannelOpen(channel::Open) = (20, 10),
    /// `channel.open-ok`
    ChannelOpenOk(channel::OpenOk) = (20, 11),
    /// `channel.flow`
    ChannelFlow(channel::Flow) = (20, 20),
    /// `channel.flow-ok`
    ChannelFlowOk(channel::FlowOk) = (20, 21),
    /// `channel.close`
    ChannelClose(channel::Close) = (20, 40),
    /// `channel.close-ok`
    ChannelCloseOk(channel::CloseOk) = (20, 41),
    /// `exchange.declare`
    ExchangeDeclare(exchange::Declare) = (40, 10),
    /// `exchange.declare-ok`
    ExchangeDeclareOk(exchange::DeclareOk) = (40, 11),
    /// `exchange.delete`
    ExchangeDelete(exchange::Delete) = (40, 20),
    /// `exchange.delete-ok`
    ExchangeDeleteOk(exchange::DeleteOk) = (40, 21),
    /// `exchange.bind`
    ExchangeBind(exchange::Bind) = (40, 30),
    /// `exchange.bind-ok`
    ExchangeBindOk(exchange::BindOk) = (40, 31),
    /// `exchange.unbind`
    ExchangeUnbind(exchange::Unbind) = (40, 40),
    /// `exchange.unbind-ok` (id 51, not 41, as RabbitMQ defines it)
    ExchangeUnbindOk(exchange::UnbindOk) = (40, 51),
    /// `queue.declare`
    QueueDeclare(queue::Declare) = (50, 10),
    /// `queue.declare-ok`
    QueueDeclareOk(queue::DeclareOk) = (50, 11),
    /// `queue.bind`
    QueueBind(queue::Bind) = (50, 20),
    /// `queue.bind-ok`
    QueueBindOk(queue::BindOk) = (50, 21),
    /// `queue.purge`
    QueuePurge(queue::Purge) = (50, 30),
    /// `queue.purge-ok`
    QueuePurgeOk(queue::PurgeOk) = (50, 31),
    /// `queue.delete`
    QueueDelete(queue::Delete) = (50, 40),
    /// `queue.delete-ok`
    QueueDeleteOk(queue::DeleteOk) = (50, 41),
    /// `queue.unbind`
    QueueUnbind(queue::Unbind) = (50, 50),
    /// `queue.unbind-ok`
    QueueUnbindOk(queue::UnbindOk) = (50, 51),
    /// `basic.qos`
    BasicQos(basic::Qos) = (60, 10),
    /// `basic.qos-ok`
    BasicQosOk(basic::QosOk) = (60, 11),
    /// `basic.consume`
    BasicConsume(basic::Consume) = (60, 20),
    /// `basic.consume-ok`
    BasicConsumeOk(basic::ConsumeOk) = (60, 21),
    /// `basic.cancel`
    BasicCancel(basic::Cancel) = (60, 30),
    /// `basic.cancel-ok`
    BasicCancelOk(basic::CancelOk) = (60, 31),
    /// `basic.publish` (carries content)
    BasicPublish(basic::Publish) = (60, 40),
    /// `basic.return` (carries content)
    BasicReturn(basic::Return) = (60, 50),
    /// `basic.deliver` (carries content)
    BasicDeliver(basic::Deliver) = (60, 60),
    /// `basic.get`
    BasicGet(basic::Get) = (60, 70),
    /// `basic.get-ok` (carries content)
    BasicGetOk(basic::GetOk) = (60, 71),
    /// `basic.get-empty`
    BasicGetEmpty(basic::GetEmpty) = (60, 72),
    /// `basic.ack`
    BasicAck(basic::Ack) = (60, 80),
    /// `basic.reject`
    BasicReject(basic::Reject) = (60, 90),
    /// `basic.recover-async`
    BasicRecoverAsync(basic::RecoverAsync) = (60, 100),
    /// `basic.recover`
    BasicRecover(basic::Recover) = (60, 110),
    /// `basic.recover-ok`
    BasicRecoverOk(basic::RecoverOk) = (60, 111),
    /// `basic.nack`
    BasicNack(basic::Nack) = (60, 120),
    /// `confirm.select`
    ConfirmSelect(confirm::Select) = (85, 10),
    /// `confirm.select-ok`
    ConfirmSelectOk(confirm::SelectOk) = (85, 11),
    /// `tx.select`
    TxSelect(tx::Select) = (90, 10),
    /// `tx.select-ok`
    TxSelectOk(tx::SelectOk) = (90, 11),
    /// `tx.commit`
    TxCommit(tx::Commit) = (90, 20),
    /// `tx.commit-ok`
    TxCommitOk(tx::CommitOk) = (90, 21),
    /// `tx.rollback`
    TxRollback(tx::Rollback) = (90, 30),
    /// `tx.rollback-ok`
    TxRollbackOk(tx::RollbackOk) = (90, 31),
}

impl Method {
    /// True for the four methods followed by a content header and body:
    /// `basic.publish`, `basic.return`, `basic.deliver` and `basic.get-ok`.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish(_)
                | Method::BasicReturn(_)
                | Method::BasicDeliver(_)
                | Method::BasicGetOk(_)
        )
    }
}

/// A synchronous request a client sends on a channel, and the one reply it waits for.
/// (`basic.consume`, `basic.cancel` and `basic.get` are not here: their replies need more than
/// a method: a consumer to feed, or content.)
pub trait Request: Into<Method> {
    /// The reply's body.
    type Reply;
    /// The reply's name, for the error when the server sends another method.
    const REPLY: &'static str;
    /// The reply, or `None` when `method` is another one.
    fn reply(method: Method) -> Option<Self::Reply>;
}

macro_rules! requests {
    ($($request:ty => $variant:ident($reply:ty),)*) => {$(
        impl Request for $request {
            type Reply = $reply;
            const REPLY: &'static str = <$reply>::NAME;
            fn reply(method: Method) -> Option<$reply> {
                match method {
                    Method::$variant(ok) => Some(ok),
                    _ => None,
                }
            }
        }
    )*};
}

requests! {
    channel::Open => ChannelOpenOk(channel::OpenOk),
    channel::Flow => ChannelFlowOk(channel::FlowOk),
    exchange::Declare => ExchangeDeclareOk(exchange::DeclareOk),
    exchange::Delete => ExchangeDeleteOk(exchange::DeleteOk),
    exchange::Bind => ExchangeBindOk(exchange::BindOk),
    exchange::Unbind => ExchangeUnbindOk(exchange::UnbindOk),
    queue::Declare => QueueDeclareOk(queue::DeclareOk),
    queue::Bind => QueueBindOk(queue::BindOk),
    queue::Purge => QueuePurgeOk(queue::PurgeOk),
    queue::Delete => QueueDeleteOk(queue::DeleteOk),
    queue::Unbind => QueueUnbindOk(queue::UnbindOk),
    basic::Qos => BasicQosOk(basic::QosOk),
    basic::Recover => BasicRecoverOk(basic::RecoverOk),
    confirm::Select => ConfirmSelectOk(confirm::SelectOk),
    tx::Select => TxSelectOk(tx::SelectOk),
    tx::Commit => TxCommitOk(tx::CommitOk),
    tx::Rollback => TxRollbackOk(tx::RollbackOk),
}
