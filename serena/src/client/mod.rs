//! The user-facing handles: [`Connection`], [`Channel`], [`Consumer`] and [`Delivery`].

mod channel;
mod connection;
mod consumer;
mod pool;
mod unconfirmed;

pub use channel::{
    Channel, Confirmation, ConsumeOptions, ExchangeDeclareOptions, PublishOptions, QueueDeclareOk,
    QueueDeclareOptions,
};
pub use connection::{Connection, HeartbeatStats, open_connection};
pub(crate) use connection::{run_scope, shuffle};
pub use consumer::{Consumer, Delivery, GetMessage};
pub use pool::{ChannelPool, PooledChannel};
pub use unconfirmed::UnconfirmedChannel;
