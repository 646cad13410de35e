//! Frames: the protocol header, method / content header / body / heartbeat frames, and the
//! incremental decoder.
//!
//! ```text
//! 0      1         3             7                  size+7  size+8
//! +------+---------+-------------+------------------+--------+
//! | type | channel |    size     |  payload (size)  |  0xCE  |
//! +------+---------+-------------+------------------+--------+
//! ```
//!
//! Decoding is two-phase: [`FrameDecoder::check`] looks at the bytes buffered so far and says
//! whether a whole frame is there (`Ok(Some(len))`), more bytes are needed (`Ok(None)`), or the
//! bytes are invalid (`Err`); [`FrameDecoder::decode`] then splits the frame off the buffer
//! without copying. A frame whose header announces more than `frame_max` is refused as soon as
//! its 7-byte header is in, before any of its payload is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::method::Method;
use super::properties::ContentHeader;

/// The bytes a client sends first: `AMQP` 0 0 9 1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of frame header (type, channel, size).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Bytes a frame adds around its payload (header and frame-end).
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// The smallest `frame_max` a peer may negotiate, and the limit before tuning.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Frame type octet of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type octet of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type octet of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type octet of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;

/// One AMQP frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method on a channel (0 for the connection).
    Method {
        /// Channel number.
        channel: u16,
        /// The method.
        method: Method,
    },
    /// The content header that follows a content-bearing method.
    Header {
        /// Channel number.
        channel: u16,
        /// The header.
        header: ContentHeader,
    },
    /// A piece of content body.
    Body {
        /// Channel number.
        channel: u16,
        /// The bytes, sliced from the read buffer.
        payload: Bytes,
    },
    /// A heartbeat (always channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. } => *channel,
            Frame::Heartbeat => 0,
        }
    }

    /// Appends the whole frame to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Frame::Method { channel, method } => {
                encode_with(buf, FRAME_METHOD, *channel, |b| method.encode(b))
            }
            Frame::Header { channel, header } => {
                encode_with(buf, FRAME_HEADER, *channel, |b| header.encode(b))
            }
            Frame::Body { channel, payload } => encode_body(buf, *channel, payload),
            Frame::Heartbeat => {
                encode_heartbeat(buf);
                Ok(())
            }
        }
    }
}

/// Writes a frame header, the payload `body` writes, then patches in the size and the frame-end.
fn encode_with(
    buf: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u8(frame_type);
    buf.put_u16(channel);
    buf.put_u32(0);
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let size = buf.len() - start - FRAME_HEADER_SIZE;
    let Ok(size32) = u32::try_from(size) else {
        buf.truncate(start);
        return Err(EncodeError::TooLong {
            context: "frame payload",
            len: size,
        });
    };
    buf[start + 3..start + 7].copy_from_slice(&size32.to_be_bytes());
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a method frame.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &Method) -> Result<(), EncodeError> {
    encode_with(buf, FRAME_METHOD, channel, |b| method.encode(b))
}

/// Appends a method frame whose payload `payload` writes.
pub(crate) fn encode_method_with(
    buf: &mut BytesMut,
    channel: u16,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    encode_with(buf, FRAME_METHOD, channel, payload)
}

/// Appends a content header frame.
pub fn encode_header(
    buf: &mut BytesMut,
    channel: u16,
    header: &ContentHeader,
) -> Result<(), EncodeError> {
    encode_with(buf, FRAME_HEADER, channel, |b| header.encode(b))
}

/// Appends a content header frame from its parts (see [`encode_header`]).
pub(crate) fn encode_header_parts(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: crate::PropertiesRef<'_>,
) -> Result<(), EncodeError> {
    encode_with(buf, FRAME_HEADER, channel, |b| {
        crate::properties::encode_header_payload(b, class_id, body_size, properties)
    })
}

/// Appends a body frame carrying `payload`.
pub fn encode_body(buf: &mut BytesMut, channel: u16, payload: &[u8]) -> Result<(), EncodeError> {
    let size = u32::try_from(payload.len()).map_err(|_| EncodeError::TooLong {
        context: "body frame",
        len: payload.len(),
    })?;
    buf.reserve(payload.len() + FRAME_OVERHEAD);
    buf.put_u8(FRAME_BODY);
    buf.put_u16(channel);
    buf.put_u32(size);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Splits frames off a read buffer, refusing any larger than `frame_max`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(FRAME_MIN_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `frame_max` bytes, overhead included.
    /// A `frame_max` below [`FRAME_MIN_SIZE`] is raised to it.
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder {
            frame_max: frame_max.max(FRAME_MIN_SIZE),
        }
    }

    /// The limit in force.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Changes the limit, as after `connection.tune-ok`.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max.max(FRAME_MIN_SIZE);
    }

    /// Phase one: the length of the whole frame at the start of `buf`, `None` if more bytes
    /// are needed, or the reason the bytes can never be a valid frame.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(&frame_type) = buf.first() else {
            return Ok(None);
        };
        if frame_type == b'A' {
            return check_protocol_header(buf).map(|()| None);
        }
        if buf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        if !matches!(
            frame_type,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(DecodeError::UnknownFrameType {
                frame_type,
                channel,
            });
        }
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        let total = u64::from(size) + FRAME_OVERHEAD as u64;
        if total > u64::from(self.frame_max) {
            return Err(DecodeError::FrameTooLarge {
                channel,
                size: total,
                frame_max: self.frame_max,
            });
        }
        if frame_type == FRAME_HEARTBEAT && (channel != 0 || size != 0) {
            return Err(DecodeError::BadHeartbeat { channel, size });
        }
        let total = total as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let end = buf[total - 1];
        if end != FRAME_END {
            return Err(DecodeError::BadFrameEnd {
                channel,
                found: end,
            });
        }
        Ok(Some(total))
    }

    /// Phase two: splits the next whole frame off `buf` and parses it. `Ok(None)` means more
    /// bytes are needed; `buf` is then untouched. Body payloads are slices of `buf`'s storage.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(len) = self.check(buf)? else {
            return Ok(None);
        };
        let mut frame = buf.split_to(len).freeze();
        let frame_type = frame.get_u8();
        let channel = frame.get_u16();
        frame.advance(4);
        frame.truncate(len - FRAME_OVERHEAD);
        let parsed = match frame_type {
            FRAME_METHOD => Frame::Method {
                channel,
                method: Method::decode(frame)?,
            },
            FRAME_HEADER => Frame::Header {
                channel,
                header: ContentHeader::decode(frame)?,
            },
            FRAME_BODY => Frame::Body {
                channel,
                payload: frame,
            },
            _ => Frame::Heartbeat,
        };
        Ok(Some(parsed))
    }
}

/// A peer that refuses our protocol version answers with its own header and closes.
fn check_protocol_header(buf: &[u8]) -> Result<(), DecodeError> {
    let n = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..n.min(4)] != b"AMQP"[..n.min(4)] {
        return Err(DecodeError::UnknownFrameType {
            frame_type: buf[0],
            channel: 0,
        });
    }
    if buf.len() < PROTOCOL_HEADER.len() {
        return Ok(());
    }
    Err(DecodeError::UnsupportedProtocol {
        protocol_id: buf[4],
        major: buf[5],
        minor: buf[6],
        revision: buf[7],
    })
}
