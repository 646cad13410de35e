//! The content header and the 14 basic properties.
//!
//! Wire form: class id, weight (0), body size, a 16-bit property-flags word (bit 15 is the first
//! property; bit 0 says another flags word follows), then the present properties in order.
//! A property is present exactly when its field is `Some`, so `priority = Some(0)` or an empty
//! `content_type` is sent and comes back as set.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, Writer};
use super::error::{DecodeError, EncodeError};
use super::table::FieldTable;
use super::types::ShortString;

macro_rules! properties {
    ($( $(#[$m:meta])* $name:ident : $kind:ident = $bit:literal, )*) => {
        /// The properties of a basic-class message. Every field is optional; `None` is absent.
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct BasicProperties {
            $( $(#[$m])* pub $name: Option<field_type!($kind)>, )*
        }

        impl BasicProperties {
            fn flags(&self) -> u16 {
                let mut flags = 0;
                $( if self.$name.is_some() { flags |= 1 << $bit; } )*
                flags
            }

            fn encode_list(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                let mut w = Writer::new(buf);
                $(
                    if let Some(v) = &self.$name {
                        w.$kind(v, concat!("basic properties.", stringify!($name)))?;
                    }
                )*
                w.finish();
                Ok(())
            }

            /// Decodes the present properties straight into a box: no 368-byte value is
            /// built on the stack and then moved to the heap.
            fn decode_list(flags: u16, r: &mut Reader) -> Result<Box<Self>, DecodeError> {
                let mut p = Box::<BasicProperties>::default();
                $(
                    if flags & (1 << $bit) != 0 {
                        p.$name = Some(r.$kind(concat!("basic properties.", stringify!($name)))?);
                    }
                )*
                Ok(p)
            }
        }
    };
}

properties! {
    /// MIME type of the body, e.g. `application/json`.
    content_type: shortstr = 15,
    /// MIME encoding of the body, e.g. `gzip`.
    content_encoding: shortstr = 14,
    /// Application headers.
    headers: table = 13,
    /// 1 for transient, 2 for persistent.
    delivery_mode: octet = 12,
    /// Priority, 0 to 9 (RabbitMQ honours it on queues with `x-max-priority`).
    priority: octet = 11,
    /// Correlates a reply with its request.
    correlation_id: shortstr = 10,
    /// Queue to send a reply to.
    reply_to: shortstr = 9,
    /// Per-message TTL in milliseconds, as a decimal string.
    expiration: shortstr = 8,
    /// Application message id.
    message_id: shortstr = 7,
    /// Seconds since the Unix epoch.
    timestamp: timestamp = 6,
    /// Application message type (the spec's `type`).
    kind: shortstr = 5,
    /// Authenticated user id; RabbitMQ checks it against the connection's user.
    user_id: shortstr = 4,
    /// Application id.
    app_id: shortstr = 3,
    /// Deprecated in AMQP 0-9-1; carried for completeness.
    cluster_id: shortstr = 2,
}

/// Flags that no basic property uses: bit 1, and bit 0 when further flag words carry nothing.
const UNUSED_FLAGS: u16 = 0b10;

impl BasicProperties {
    /// Sets `content_type`.
    #[must_use]
    pub fn with_content_type(mut self, v: impl Into<ShortString>) -> Self {
        self.content_type = Some(v.into());
        self
    }

    /// Sets `headers`.
    #[must_use]
    pub fn with_headers(mut self, v: FieldTable) -> Self {
        self.headers = Some(v);
        self
    }

    /// Sets `delivery_mode` to 2 (persistent) or 1 (transient).
    #[must_use]
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.delivery_mode = Some(if persistent { 2 } else { 1 });
        self
    }

    /// Sets `priority`.
    #[must_use]
    pub fn with_priority(mut self, v: u8) -> Self {
        self.priority = Some(v);
        self
    }

    /// Sets `correlation_id`.
    #[must_use]
    pub fn with_correlation_id(mut self, v: impl Into<ShortString>) -> Self {
        self.correlation_id = Some(v.into());
        self
    }

    /// Sets `reply_to`.
    #[must_use]
    pub fn with_reply_to(mut self, v: impl Into<ShortString>) -> Self {
        self.reply_to = Some(v.into());
        self
    }

    /// Sets `expiration` to a TTL in milliseconds.
    #[must_use]
    pub fn with_expiration_ms(mut self, ms: u64) -> Self {
        self.expiration = Some(ms.to_string().into());
        self
    }

    /// Sets `message_id`.
    #[must_use]
    pub fn with_message_id(mut self, v: impl Into<ShortString>) -> Self {
        self.message_id = Some(v.into());
        self
    }
}

/// Basic properties encoded once, as a content header carries them (the flags word, then the
/// present properties), to be published any number of times without encoding them again. A
/// publisher that keeps messages until they are confirmed holds these: a few dozen bytes for
/// a few properties instead of a 368-byte [`BasicProperties`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedProperties(Bytes);

impl EncodedProperties {
    /// Encodes `properties`. Fails as publishing them would: a short string over 255 bytes,
    /// or a NaN or infinite float in the headers (RabbitMQ closes the connection on one).
    pub fn new(properties: &BasicProperties) -> Result<Self, EncodeError> {
        Self::encode_into(properties, &mut BytesMut::new())
    }

    /// [`new`](Self::new), written into `buf` (cleared first) and split off it: encodings
    /// made one after another into one buffer share its allocation until it is used up, and
    /// each keeps it alive.
    pub fn encode_into(
        properties: &BasicProperties,
        buf: &mut BytesMut,
    ) -> Result<Self, EncodeError> {
        if let Some(key) = properties
            .headers
            .as_ref()
            .and_then(FieldTable::find_non_finite_float)
        {
            return Err(EncodeError::NonFiniteFloat {
                context: "basic properties.headers",
                key: key.to_owned(),
            });
        }
        buf.clear();
        buf.put_u16(properties.flags());
        if let Err(e) = properties.encode_list(buf) {
            buf.clear();
            return Err(e);
        }
        Ok(EncodedProperties(buf.split().freeze()))
    }

    /// The properties again.
    pub fn decode(&self) -> Result<BasicProperties, DecodeError> {
        let mut r = Reader::new(self.0.clone());
        let flags = r.short("basic properties flags")?;
        BasicProperties::decode_list(flags, &mut r).map(|p| *p)
    }

    /// The encoded bytes: the flags word and the property list.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// The properties of a message to publish: as given, or encoded before.
#[derive(Debug, Clone, Copy)]
pub enum PropertiesRef<'a> {
    /// Encoded as the message is.
    Typed(&'a BasicProperties),
    /// Encoded already: copied as they are.
    Encoded(&'a EncodedProperties),
}

impl<'a> From<&'a BasicProperties> for PropertiesRef<'a> {
    fn from(properties: &'a BasicProperties) -> Self {
        PropertiesRef::Typed(properties)
    }
}

impl<'a> From<&'a EncodedProperties> for PropertiesRef<'a> {
    fn from(properties: &'a EncodedProperties) -> Self {
        PropertiesRef::Encoded(properties)
    }
}

/// Appends a content header payload built from its parts, so a publisher need not assemble
/// (and clone its properties into) a [`ContentHeader`]. On error `buf` is left as it was.
pub(crate) fn encode_header_payload<'a>(
    buf: &mut BytesMut,
    class_id: u16,
    body_size: u64,
    properties: impl Into<PropertiesRef<'a>>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u16(class_id);
    buf.put_u16(0);
    buf.put_u64(body_size);
    let result = match properties.into() {
        PropertiesRef::Typed(properties) => {
            buf.put_u16(properties.flags());
            properties.encode_list(buf)
        }
        PropertiesRef::Encoded(encoded) => {
            buf.put_slice(&encoded.0);
            Ok(())
        }
    };
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A content header frame's payload: which class, how many body bytes follow, the properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    /// Class of the method the content belongs to (60, basic).
    pub class_id: u16,
    /// Total size of the body frames that follow.
    pub body_size: u64,
    /// The message properties, boxed: 368 bytes inline would be copied each time a frame or a
    /// message moves on its way from the socket to the consumer (measured with callgrind, those
    /// copies were 40% of a delivery's instructions); a box moves as one pointer.
    pub properties: Box<BasicProperties>,
}

impl ContentHeader {
    /// A basic-class header.
    pub fn basic(body_size: u64, properties: BasicProperties) -> Self {
        ContentHeader {
            class_id: 60,
            body_size,
            properties: Box::new(properties),
        }
    }

    /// Appends the header payload to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_header_payload(buf, self.class_id, self.body_size, &*self.properties)
    }

    /// Decodes a content header frame's whole payload.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let class_id = r.short("content header class id")?;
        r.short("content header weight")?;
        let body_size = r.longlong("content header body size")?;
        let flags = r.short("content header property flags")?;
        if flags & UNUSED_FLAGS != 0 {
            return Err(DecodeError::UnknownProperties { flags });
        }
        let mut more = flags & 1 != 0;
        while more {
            let next = r.short("content header property flags")?;
            if next & !1 != 0 {
                return Err(DecodeError::UnknownProperties { flags: next });
            }
            more = next & 1 != 0;
        }
        let properties = BasicProperties::decode_list(flags, &mut r)?;
        r.finish("content header")?;
        Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        })
    }
}
