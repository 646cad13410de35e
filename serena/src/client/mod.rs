//! The user-facing handles: [`Connection`], [`Channel`], [`Consumer`] and [`Delivery`].

mod body;
mod channel;
mod connection;
mod consumer;
mod id_hash;
mod options;
mod pool;
mod reliable;
mod rpc;
mod stream;
mod unconfirmed;

pub use body::IntoBody;
pub use channel::{Channel, Confirmation, QueueDeclareOk};
pub use connection::{Connection, HeartbeatStats, open_connection};
pub(crate) use connection::{run_scope, shuffle};
pub use consumer::{Consumer, Delivery, GetMessage};
pub use options::{ConsumeOptions, ExchangeDeclareOptions, PublishOptions, QueueDeclareOptions};
pub use pool::{ChannelPool, PooledChannel};
pub use reliable::{
    PublisherState, PublisherStats, ReliableConfirmation, ReliablePublisher,
    ReliablePublisherOptions, WhenFull,
};
pub use rpc::{DIRECT_REPLY_TO, ReplyMessage, RpcClient, RpcOptions};
pub use stream::StreamOffset;
pub use unconfirmed::UnconfirmedChannel;
