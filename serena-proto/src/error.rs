//! Errors of the sans-IO protocol layer.
//!
//! Decoding tells "need more bytes" apart from "invalid": the frame decoder returns `Ok(None)` when
//! a frame is incomplete and a [`DecodeError`] only when the bytes can never become a valid frame.
//! Every error names where it happened: the frame's channel, or the method and field (for example
//! `queue.declare.arguments`) as a `&'static str` a caller can log or match on.

use thiserror::Error;

/// The bytes received can never form valid AMQP 0-9-1: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The peer answered the protocol header with a header for another protocol version.
    #[error(
        "peer does not speak AMQP 0-9-1: it offered protocol {protocol_id}-{major}-{minor}-{revision}"
    )]
    UnsupportedProtocol {
        /// Protocol id octet (0 for plain AMQP).
        protocol_id: u8,
        /// Major version the peer offered.
        major: u8,
        /// Minor version the peer offered.
        minor: u8,
        /// Revision the peer offered.
        revision: u8,
    },
    /// The bytes where a frame should start are not a frame (and not a protocol header).
    #[error("frame on channel {channel}: unknown frame type {frame_type}")]
    UnknownFrameType {
        /// The frame type octet that was read.
        frame_type: u8,
        /// The channel the frame named.
        channel: u16,
    },
    /// The octet after the payload was not the frame-end octet 0xCE.
    #[error("frame on channel {channel}: frame-end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd {
        /// The channel of the broken frame.
        channel: u16,
        /// The octet found where 0xCE belongs.
        found: u8,
    },
    /// A frame announced a size above the negotiated `frame_max`; it was refused before its
    /// payload was buffered.
    #[error("frame on channel {channel}: {size} bytes exceeds frame_max of {frame_max}")]
    FrameTooLarge {
        /// The channel of the refused frame.
        channel: u16,
        /// The whole frame's size as announced (header, payload and frame-end).
        size: u64,
        /// The limit in force.
        frame_max: u32,
    },
    /// A heartbeat frame on a channel other than 0, or with a payload.
    #[error(
        "heartbeat frame on channel {channel} with {size} payload bytes: must be channel 0 and empty"
    )]
    BadHeartbeat {
        /// The channel the heartbeat named.
        channel: u16,
        /// Its payload size.
        size: u32,
    },
    /// A method frame named a class and method that AMQP 0-9-1 does not define.
    #[error("method frame: unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// The class id read.
        class_id: u16,
        /// The method id read.
        method_id: u16,
    },
    /// A field ran past the end of its frame, table or array.
    #[error("{context}: truncated: needs {needed} bytes, {available} left")]
    Truncated {
        /// Which field was being read.
        context: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A short string (or a field-table key) is not valid UTF-8.
    #[error("{context}: short string is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field held the string.
        context: &'static str,
    },
    /// A field table or array holds a value type tag that is not in RabbitMQ's errata.
    #[error("{context}: unknown field value type {tag:#04x}")]
    UnknownFieldType {
        /// Which table was being read.
        context: &'static str,
        /// The type tag read.
        tag: u8,
    },
    /// Field tables and arrays are nested deeper than [`MAX_NESTING`](super::table::MAX_NESTING).
    #[error("{context}: field tables and arrays nested deeper than {max}")]
    TooDeep {
        /// Which table was being read.
        context: &'static str,
        /// The nesting limit.
        max: usize,
    },
    /// Bytes were left over after the last field of a method or content header.
    #[error("{context}: {extra} unexpected bytes after the last field")]
    TrailingBytes {
        /// The method or header that had them.
        context: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A content header whose property flags name properties the class does not have.
    #[error("content header: property flags {flags:#06x} set bits no basic property uses")]
    UnknownProperties {
        /// The flags word read.
        flags: u16,
    },
    /// A content header or method arrived where the frame sequence does not allow it.
    #[error("channel {channel}: unexpected {found} frame while {state}")]
    UnexpectedFrame {
        /// The channel of the frame.
        channel: u16,
        /// What kind of frame arrived.
        found: &'static str,
        /// What the channel was waiting for.
        state: &'static str,
    },
    /// A content header whose class differs from the method it follows.
    #[error(
        "channel {channel}: content header of class {header_class} after a method of class {method_class}"
    )]
    ContentClassMismatch {
        /// The channel of the content.
        channel: u16,
        /// The class of the content-bearing method.
        method_class: u16,
        /// The class the header named.
        header_class: u16,
    },
    /// A content body larger than its header announced.
    #[error("channel {channel}: content body exceeds the {expected} bytes its header announced")]
    BodyTooLong {
        /// The channel of the content.
        channel: u16,
        /// The body size from the content header.
        expected: u64,
    },
    /// A content header announcing a body larger than the assembler accepts.
    #[error("channel {channel}: content header announces {size} bytes, above the limit of {max}")]
    BodyTooLarge {
        /// The channel of the content.
        channel: u16,
        /// The announced body size.
        size: u64,
        /// The limit in force.
        max: u64,
    },
}

/// A value cannot be put on the wire as given. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A short string (a name, a routing key, a table key) over 255 bytes.
    #[error("{context}: short string is {len} bytes; AMQP short strings hold at most 255")]
    ShortStringTooLong {
        /// Which field held the string.
        context: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A long string, table or array whose encoding does not fit a 32-bit length.
    #[error("{context}: {len} bytes do not fit in a 32-bit length")]
    TooLong {
        /// Which field was too long.
        context: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Field tables and arrays nested deeper than [`MAX_NESTING`](super::table::MAX_NESTING).
    #[error("{context}: field tables and arrays nested deeper than {max}")]
    TooDeep {
        /// Which table was too deep.
        context: &'static str,
        /// The nesting limit.
        max: usize,
    },
    /// A method or content header frame that would exceed the negotiated `frame_max` (for
    /// example a very large `headers` table); the peer would refuse it.
    #[error("{context}: frame of {size} bytes exceeds frame_max of {frame_max}")]
    FrameTooLarge {
        /// Which frame.
        context: &'static str,
        /// Its size with overhead.
        size: usize,
        /// The limit in force.
        frame_max: u32,
    },
    /// A NaN or infinite float in a table bound for RabbitMQ, which closes the whole
    /// connection (541) on one. The codec itself carries any bit pattern; the client refuses
    /// these before sending.
    #[error("{context}: NaN or infinite float in field {key:?}; RabbitMQ refuses it")]
    NonFiniteFloat {
        /// Which table.
        context: &'static str,
        /// The key (the innermost one, for nested tables).
        key: String,
    },
    /// A `frame_max` too small to carry any body bytes (the minimum is 4096 in AMQP 0-9-1).
    #[error("frame_max of {frame_max} leaves no room for a body")]
    FrameMaxTooSmall {
        /// The frame_max given.
        frame_max: u32,
    },
}
