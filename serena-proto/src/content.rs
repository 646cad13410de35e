//! Whole messages to and from frames: a content-bearing method, its content header, and body
//! frames split to fit `frame_max`.
//!
//! [`encode_content`] writes the frames of one outgoing message. [`ContentAssembler`] is the
//! per-channel state machine that turns incoming frames back into whole messages:
//!
//! ```text
//!            method with content             header (body_size > 0)
//!   Idle ----------------------> AwaitHeader ----------------------> AwaitBody
//!    ^  \                            |                                  |
//!    |   `-- other method: emitted   | header with body_size 0:         | body frames until
//!    |                               v message emitted                  v body_size: emitted
//!    `---------------------------------------------------------------------'
//! ```
//!
//! Any other frame order is a [`DecodeError::UnexpectedFrame`]. A body that arrives in one frame
//! is handed on as that frame's slice of the read buffer, without copying.

use bytes::{Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use bytes::BufMut;

use super::codec::put_shortstr;
use super::connection::Publish;
use super::frame::{
    FRAME_OVERHEAD, Frame, encode_body, encode_header_parts, encode_method, encode_method_with,
};
use super::method::Method;
use super::properties::{BasicProperties, ContentHeader};

/// The largest body the assembler accepts unless told otherwise: RabbitMQ's own ceiling (512 MiB).
pub const DEFAULT_MAX_BODY: u64 = 512 * 1024 * 1024;

/// Appends the frames of one message: `method`, a basic content header, and the body split into
/// frames of at most `frame_max` bytes. On error `buf` is left as it was.
pub fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), EncodeError> {
    let method_frame = |b: &mut BytesMut| encode_method(b, channel, method);
    let message = (properties, body);
    encode_message(
        buf,
        channel,
        method.class_id(),
        method_frame,
        message,
        frame_max,
    )
}

/// Appends `basic.publish` with its content header and body frames, from borrowed names: the
/// bytes [`encode_content`] writes for a [`Method::BasicPublish`], without building one (and
/// allocating its two names) for every message.
pub(crate) fn encode_publish(
    buf: &mut BytesMut,
    channel: u16,
    fields: &Publish<'_>,
    frame_max: u32,
) -> Result<(), EncodeError> {
    use crate::method::basic::Publish as Method;
    let method_frame = |b: &mut BytesMut| {
        encode_method_with(b, channel, |b| {
            b.put_u16(Method::CLASS_ID);
            b.put_u16(Method::METHOD_ID);
            b.put_u16(0); // reserved (the ticket)
            put_shortstr(b, fields.exchange.as_bytes(), "basic.publish.exchange")?;
            put_shortstr(
                b,
                fields.routing_key.as_bytes(),
                "basic.publish.routing_key",
            )?;
            b.put_u8(u8::from(fields.mandatory) | u8::from(fields.immediate) << 1);
            Ok(())
        })
    };
    let message = (fields.properties, fields.body);
    encode_message(
        buf,
        channel,
        Method::CLASS_ID,
        method_frame,
        message,
        frame_max,
    )
}

/// The frames of one message, the method frame written by `method_frame`. On error `buf` is
/// left as it was.
fn encode_message(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    method_frame: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    (properties, body): (&BasicProperties, &[u8]),
    frame_max: u32,
) -> Result<(), EncodeError> {
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD);
    if chunk == 0 && !body.is_empty() {
        return Err(EncodeError::FrameMaxTooSmall { frame_max });
    }
    let start = buf.len();
    let fits = |buf: &BytesMut, from: usize, context: &'static str| {
        let size = buf.len() - from;
        if size > frame_max as usize {
            return Err(EncodeError::FrameTooLarge {
                context,
                size,
                frame_max,
            });
        }
        Ok(())
    };
    let result = method_frame(buf)
        .and_then(|()| fits(buf, start, "content method frame"))
        .and_then(|()| {
            let header_start = buf.len();
            encode_header_parts(buf, channel, class_id, body.len() as u64, properties)?;
            fits(buf, header_start, "content header frame")
        })
        .and_then(|()| {
            buf.reserve(body.len() + body.len().div_ceil(chunk.max(1)) * FRAME_OVERHEAD);
            body.chunks(chunk.max(1))
                .try_for_each(|piece| encode_body(buf, channel, piece))
        });
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A method with its content, reassembled.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// `basic.deliver`, `basic.get-ok`, `basic.return` (or `basic.publish` on a server).
    pub method: Method,
    /// The message properties, boxed as they came in the content header (see
    /// [`ContentHeader::properties`]).
    pub properties: Box<BasicProperties>,
    /// The whole body.
    pub body: Bytes,
}

/// What the assembler hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// A method without content.
    Method(Method),
    /// A whole message.
    Content(Content),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitHeader(Method),
    AwaitBody {
        method: Method,
        properties: Box<BasicProperties>,
        expected: u64,
        /// The first body frame, kept without copying in case it is the only one.
        first: Option<Bytes>,
        /// Where bodies of several frames are joined.
        joined: BytesMut,
    },
}

/// Reassembles one channel's frames into methods and whole messages.
#[derive(Debug)]
pub struct ContentAssembler {
    channel: u16,
    max_body: u64,
    state: State,
}

impl ContentAssembler {
    /// An assembler for `channel` refusing bodies over [`DEFAULT_MAX_BODY`].
    pub fn new(channel: u16) -> Self {
        ContentAssembler::with_max_body(channel, DEFAULT_MAX_BODY)
    }

    /// An assembler for `channel` refusing bodies over `max_body` bytes.
    pub fn with_max_body(channel: u16, max_body: u64) -> Self {
        ContentAssembler {
            channel,
            max_body,
            state: State::Idle,
        }
    }

    /// True when no message is half received.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    fn unexpected(&self, found: &'static str) -> DecodeError {
        let state = match self.state {
            State::Idle => "expecting a method",
            State::AwaitHeader(_) => "expecting a content header",
            State::AwaitBody { .. } => "expecting a body frame",
        };
        DecodeError::UnexpectedFrame {
            channel: self.channel,
            found,
            state,
        }
    }

    /// Takes one frame of this channel. Heartbeats belong to the connection, not a channel.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<Option<Assembled>, DecodeError> {
        match frame {
            Frame::Method { method, .. } => self.handle_method(method),
            Frame::Header { header, .. } => self.handle_header(header),
            Frame::Body { payload, .. } => self.handle_body(payload),
            Frame::Heartbeat => Err(self.unexpected("heartbeat")),
        }
    }

    /// Takes a method frame's method.
    pub fn handle_method(&mut self, method: Method) -> Result<Option<Assembled>, DecodeError> {
        if !self.is_idle() {
            return Err(self.unexpected("method"));
        }
        if method.has_content() {
            self.state = State::AwaitHeader(method);
            Ok(None)
        } else {
            Ok(Some(Assembled::Method(method)))
        }
    }

    /// Takes a content header.
    pub fn handle_header(
        &mut self,
        header: ContentHeader,
    ) -> Result<Option<Assembled>, DecodeError> {
        let State::AwaitHeader(method) = &self.state else {
            return Err(self.unexpected("content header"));
        };
        if header.class_id != method.class_id() {
            return Err(DecodeError::ContentClassMismatch {
                channel: self.channel,
                method_class: method.class_id(),
                header_class: header.class_id,
            });
        }
        if header.body_size > self.max_body {
            return Err(DecodeError::BodyTooLarge {
                channel: self.channel,
                size: header.body_size,
                max: self.max_body,
            });
        }
        let State::AwaitHeader(method) = std::mem::take(&mut self.state) else {
            unreachable!("checked above");
        };
        if header.body_size == 0 {
            return Ok(Some(Assembled::Content(Content {
                method,
                properties: header.properties,
                body: Bytes::new(),
            })));
        }
        self.state = State::AwaitBody {
            method,
            properties: header.properties,
            expected: header.body_size,
            first: None,
            joined: BytesMut::new(),
        };
        Ok(None)
    }

    /// Takes a body frame's payload.
    pub fn handle_body(&mut self, payload: Bytes) -> Result<Option<Assembled>, DecodeError> {
        let channel = self.channel;
        let State::AwaitBody {
            expected,
            first,
            joined,
            ..
        } = &mut self.state
        else {
            return Err(self.unexpected("body"));
        };
        let have = first.as_ref().map_or(0, Bytes::len) + joined.len();
        let total = (have + payload.len()) as u64;
        if total > *expected {
            let expected = *expected;
            self.state = State::Idle;
            return Err(DecodeError::BodyTooLong { channel, expected });
        }
        if first.is_none() && joined.is_empty() {
            *first = Some(payload);
        } else {
            if let Some(f) = first.take() {
                // Grow as bytes arrive rather than trusting the announced size up front.
                joined.reserve((*expected as usize).min(f.len() * 16));
                joined.extend_from_slice(&f);
            }
            joined.extend_from_slice(&payload);
        }
        if total < *expected {
            return Ok(None);
        }
        let State::AwaitBody {
            method,
            properties,
            first,
            joined,
            ..
        } = std::mem::take(&mut self.state)
        else {
            unreachable!("matched above");
        };
        let body = first.unwrap_or_else(|| joined.freeze());
        Ok(Some(Assembled::Content(Content {
            method,
            properties,
            body,
        })))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::method::basic;

    /// `encode_publish` against the general path with a built `basic.publish`.
    fn both(
        p: &Publish<'_>,
        frame_max: u32,
    ) -> (Result<BytesMut, EncodeError>, Result<BytesMut, EncodeError>) {
        let method: Method = basic::Publish {
            exchange: p.exchange.into(),
            routing_key: p.routing_key.into(),
            mandatory: p.mandatory,
            immediate: p.immediate,
        }
        .into();
        let mut general = BytesMut::from(&b"kept"[..]);
        let general = encode_content(&mut general, 3, &method, p.properties, p.body, frame_max)
            .map(|()| general);
        let mut borrowed = BytesMut::from(&b"kept"[..]);
        let borrowed = encode_publish(&mut borrowed, 3, p, frame_max).map(|()| borrowed);
        (general, borrowed)
    }

    proptest! {
        #[test]
        fn a_borrowed_publish_encodes_the_bytes_of_a_built_one(
            exchange in "[a-z.]{0,40}",
            routing_key in "\\PC{0,60}",
            mandatory: bool,
            immediate: bool,
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            frame_max in prop_oneof![Just(4096u32), Just(131_072), 60u32..200],
        ) {
            let properties = BasicProperties::default().with_content_type("text/plain");
            let p = Publish { exchange: &exchange, routing_key: &routing_key, mandatory, immediate, properties: &properties, body: &body };
            let (general, borrowed) = both(&p, frame_max);
            prop_assert_eq!(general, borrowed);
        }
    }

    #[test]
    fn a_name_over_255_bytes_is_refused_and_nothing_is_written() {
        let long = "k".repeat(256);
        let properties = BasicProperties::default();
        let p = Publish {
            exchange: "",
            routing_key: &long,
            mandatory: true,
            immediate: false,
            properties: &properties,
            body: b"x",
        };
        let (general, borrowed) = both(&p, 131_072);
        assert_eq!(general, borrowed);
        assert!(matches!(
            borrowed,
            Err(EncodeError::ShortStringTooLong {
                context: "basic.publish.routing_key",
                len: 256
            })
        ));
        let mut buf = BytesMut::from(&b"kept"[..]);
        let _ = encode_publish(&mut buf, 1, &p, 131_072);
        assert_eq!(&buf[..], b"kept");
    }
}
