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
use super::connection::{Body, Outgoing, Publish};
use super::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD, Frame, encode_body,
    encode_header_parts, encode_method, encode_method_with,
};
use super::method::Method;
use super::properties::{BasicProperties, ContentHeader, PropertiesRef};

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

/// Shared bodies ([`Body::Shared`]) at least this long are queued for the socket by reference,
/// between the frame headers, instead of being copied into the write buffer. Below it a copy
/// costs less than the extra piece of a vectored write.
pub const SHARED_BODY_MIN: usize = 16 * 1024;

/// Appends `basic.publish` with its content header and body frames, from borrowed names: the
/// bytes [`encode_content`] writes for a [`Method::BasicPublish`], without building one (and
/// allocating its two names) for every message. A large [`Body::Shared`] is queued by
/// reference (see [`SHARED_BODY_MIN`]). With `fingerprint`, returns the [`fingerprint`] of the
/// message (a mandatory publish's, to match its return). On error nothing is queued.
pub(crate) fn encode_publish(
    out: &mut Outgoing,
    channel: u16,
    fields: &Publish<'_>,
    frame_max: u32,
    with_fingerprint: bool,
) -> Result<Option<u64>, EncodeError> {
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
    let body = fields.body.as_slice();
    let buf = out.buf();
    let header = encode_head(
        buf,
        channel,
        Method::CLASS_ID,
        method_frame,
        (fields.properties, body.len()),
        frame_max,
    )?;
    let fingerprint = with_fingerprint.then(|| fingerprint(&buf[header], body));
    let chunk = body_chunk(frame_max);
    match fields.body {
        Body::Shared(shared) if shared.len() >= SHARED_BODY_MIN => {
            let mut at = 0;
            while at < shared.len() {
                let end = shared.len().min(at + chunk);
                let buf = out.buf();
                buf.put_u8(FRAME_BODY);
                buf.put_u16(channel);
                buf.put_u32((end - at) as u32);
                out.push_shared(shared.slice(at..end));
                out.buf().put_u8(FRAME_END);
                at = end;
            }
        }
        _ => encode_body_frames(out.buf(), channel, body, chunk),
    }
    Ok(fingerprint)
}

/// A hash of a message's content header payload and the ends of its body, eight bytes at a
/// time: cheap enough for every mandatory publish (the default), and enough to tell apart
/// messages that share a route. Not a defence against crafted collisions, which only make a
/// return wait for its confirm to be matched by route.
pub(crate) fn fingerprint(header_payload: &[u8], body: &[u8]) -> u64 {
    const SAMPLE: usize = 32;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let head = &body[..body.len().min(SAMPLE)];
    let tail = &body[body.len().saturating_sub(SAMPLE)..];
    let mut h = (header_payload.len() as u64) << 32 ^ body.len() as u64;
    for part in [header_payload, head, tail] {
        let mut words = part.chunks_exact(8);
        for word in &mut words {
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            h = (h ^ w).wrapping_mul(K);
            h ^= h >> 29;
        }
        let mut last = [0u8; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last) ^ rest.len() as u64).wrapping_mul(K);
        h ^= h >> 29;
    }
    h
}

/// The most body bytes one frame carries.
fn body_chunk(frame_max: u32) -> usize {
    (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
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
    encode_head(
        buf,
        channel,
        class_id,
        method_frame,
        (properties.into(), body.len()),
        frame_max,
    )?;
    encode_body_frames(buf, channel, body, body_chunk(frame_max));
    Ok(())
}

/// The method and content header frames of a message of `body_len` bytes; returns where the
/// header frame's payload is in `buf`. On error `buf` is left as it was.
fn encode_head(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    method_frame: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    (properties, body_len): (PropertiesRef<'_>, usize),
    frame_max: u32,
) -> Result<std::ops::Range<usize>, EncodeError> {
    if (frame_max as usize) <= FRAME_OVERHEAD && body_len > 0 {
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
            encode_header_parts(buf, channel, class_id, body_len as u64, properties)?;
            fits(buf, header_start, "content header frame")?;
            Ok(header_start + FRAME_HEADER_SIZE..buf.len() - 1)
        });
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Body frames carrying `body`, copied, at most `chunk` bytes each.
fn encode_body_frames(buf: &mut BytesMut, channel: u16, body: &[u8], chunk: usize) {
    buf.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for piece in body.chunks(chunk) {
        // A piece is at most frame_max (a u32) long: the frame always encodes.
        let _ = encode_body(buf, channel, piece);
    }
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
    use crate::properties::EncodedProperties;

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
        let typed = match p.properties {
            PropertiesRef::Typed(t) => t.clone(),
            PropertiesRef::Encoded(e) => e.decode().expect("decodes"),
        };
        let mut general = BytesMut::from(&b"kept"[..]);
        let general = encode_content(
            &mut general,
            3,
            &method,
            &typed,
            p.body.as_slice(),
            frame_max,
        )
        .map(|()| general);
        let mut out = Outgoing::default();
        out.buf().extend_from_slice(b"kept");
        let borrowed = encode_publish(&mut out, 3, p, frame_max, false)
            .map(|_| BytesMut::from(&out.take().concat()[..]));
        (general, borrowed)
    }

    /// The fingerprint `encode_publish` gives, from the header it wrote, and the one a return
    /// of the same message gets, from a header encoded anew.
    fn fingerprints(p: &Publish<'_>) -> (u64, u64) {
        let mut out = Outgoing::default();
        let given = encode_publish(&mut out, 3, p, 131_072, true)
            .expect("encodes")
            .expect("asked for");
        let mut header = BytesMut::new();
        crate::properties::encode_header_payload(
            &mut header,
            basic::Publish::CLASS_ID,
            p.body.as_slice().len() as u64,
            p.properties,
        )
        .expect("encodes");
        (given, fingerprint(&header, p.body.as_slice()))
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
            let p = Publish { exchange: &exchange, routing_key: &routing_key, mandatory, immediate, properties: (&properties).into(), body: Body::Borrowed(&body) };
            let (general, borrowed) = both(&p, frame_max);
            prop_assert_eq!(&general, &borrowed);
            // Properties encoded before: the same bytes.
            let encoded = EncodedProperties::new(&properties).expect("encodes");
            let p = Publish { properties: (&encoded).into(), ..p };
            let (_, pre_encoded) = both(&p, frame_max);
            prop_assert_eq!(general, pre_encoded);
        }

        /// A shared body is queued by reference from [`SHARED_BODY_MIN`] on: the bytes on
        /// the wire are the same as a copied one's, whatever the frame size.
        #[test]
        fn a_shared_body_goes_out_as_the_same_bytes(
            len in prop_oneof![0usize..100, (SHARED_BODY_MIN - 2)..(SHARED_BODY_MIN + 2), 40_000usize..300_000],
            frame_max in prop_oneof![Just(4096u32), Just(131_072), 9u32..200],
        ) {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let shared = Bytes::from(body.clone());
            let properties = BasicProperties::default().with_message_id("m");
            let p = |body| Publish { exchange: "x", routing_key: "k", mandatory: true, immediate: false, properties: (&properties).into(), body };
            let (copied, _) = both(&p(Body::Borrowed(&body)), frame_max);
            let (by_reference, _) = both(&p(Body::Shared(&shared)), frame_max);
            prop_assert_eq!(copied, by_reference);
            let (given, anew) = fingerprints(&p(Body::Shared(&shared)));
            prop_assert_eq!(given, anew);
        }
    }

    #[test]
    fn fingerprints_tell_apart_one_byte_at_either_end_or_in_the_header() {
        let body: Vec<u8> = (0..200u8).collect();
        let header = b"\x00\x3c\x00\x00 some header bytes";
        let base = fingerprint(header, &body);
        assert_eq!(base, fingerprint(header, &body.clone()));
        for at in [0, 7, 8, 31, 168, 199] {
            let mut other = body.clone();
            other[at] ^= 1;
            assert_ne!(base, fingerprint(header, &other), "body byte {at}");
        }
        let mut h = header.to_vec();
        h[5] ^= 0x80;
        assert_ne!(base, fingerprint(&h, &body));
        assert_ne!(fingerprint(header, b"ab"), fingerprint(header, b"ab\0"));
        assert_ne!(fingerprint(b"", b""), fingerprint(b"\0", b""));
    }

    #[test]
    fn a_large_shared_body_is_not_copied() {
        let shared = Bytes::from(vec![7u8; 3 * 131_072]);
        let properties = BasicProperties::default();
        let p = Publish {
            exchange: "",
            routing_key: "q",
            mandatory: false,
            immediate: false,
            properties: (&properties).into(),
            body: Body::Shared(&shared),
        };
        let mut out = Outgoing::default();
        encode_publish(&mut out, 1, &p, 131_072, false).expect("encodes");
        let pieces = out.take();
        let referenced: Vec<_> = pieces
            .iter()
            .filter(|piece| {
                let range = shared.as_ptr_range();
                range.contains(&piece.as_ptr())
            })
            .collect();
        assert_eq!(
            referenced.len(),
            4,
            "three full frames and the rest, each by reference"
        );
        assert_eq!(
            referenced.iter().map(|piece| piece.len()).sum::<usize>(),
            shared.len(),
            "the whole body, and only it, by reference"
        );
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
            properties: (&properties).into(),
            body: Body::Borrowed(b"x"),
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
        let mut out = Outgoing::default();
        out.buf().extend_from_slice(b"kept");
        let _ = encode_publish(&mut out, 1, &p, 131_072, true);
        assert_eq!(out.take().concat(), b"kept");
    }
}
