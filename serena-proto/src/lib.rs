//! The AMQP 0-9-1 wire protocol, sans-IO: no tokio, no sockets, no clocks.
//!
//! Bytes in, values out, and back: [`FrameDecoder`] splits a read buffer into [`Frame`]s,
//! [`ContentAssembler`] joins a channel's frames into whole messages, and the `encode`
//! functions append frames to a write buffer. Everything here is a plain function or struct
//! that the driver (or a test, or a fuzzer) calls with bytes.

#[macro_use]
mod macros;

pub(crate) mod codec;
pub mod connection;
pub mod content;
mod error;
pub mod frame;
pub mod method;
pub mod properties;
pub mod table;
mod types;

pub use content::{Assembled, Content, ContentAssembler};
pub use error::{DecodeError, EncodeError};
pub use frame::{FRAME_MIN_SIZE, Frame, FrameDecoder, PROTOCOL_HEADER};
pub use method::Method;
pub use properties::{BasicProperties, ContentHeader, EncodedProperties, PropertiesRef};
pub use table::{Decimal, FieldTable, FieldValue};
pub use types::{LongString, ShortString};
