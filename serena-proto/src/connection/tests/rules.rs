//! The rules a hostile server breaks, without a socket. Each test leaves the machine as the
//! end-to-end hostile server leaves the client (channel 1 open, a `queue.declare` on it waiting
//! for its reply), feeds it the bytes that server sends through
//! [`handle_bytes`](Connection::handle_bytes), and checks what the machine does about them:
//!
//! - the `connection.close` it queues, and nothing else: the reply code of the rule of the
//!   spec (named in a comment at each case), the class and method it blames, and a text that
//!   says what the error says;
//! - the error it returns (variant and message), which the waiting call and the channel's
//!   watch get too;
//! - that nothing is accepted after it: the reply the call waited for, arriving late, gets the
//!   same error and queues nothing, and so do new calls and channels.
//!
//! Frames the server may legitimately still send (between our `channel.close` and its
//! `close-ok`, or when closes cross) must not be taken for violations: the last two tests check
//! that the connection lives on. `tests/faults/hostile.rs` keeps a few of these cases end to end,
//! over a socket, with the handshake's own rules.

use std::sync::mpsc::{Receiver, channel};

use bytes::{BufMut, BytesMut};

use super::*;
use crate::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE, FRAME_HEARTBEAT, FRAME_METHOD,
    FRAME_OVERHEAD, encode_body, encode_header, encode_method,
};
use crate::method::{basic, channel as chm, connection as connm, queue};
use crate::properties::{BasicProperties, ContentHeader};
use crate::table::MAX_NESTING;

/// The channel [`Client::new`] opens: the first id.
const OPEN: u16 = 1;

/// The `frame_max` of [`machine`].
const FRAME_MAX: u32 = 131_072;

/// A machine as the hostile server leaves it before it breaks a rule.
struct Client {
    m: Connection<T>,
    ch: ChannelRef,
    /// The channel's watch.
    log: Receiver<Note>,
    /// The waiter of the `queue.declare` left unanswered.
    call: Receiver<Note>,
}

/// What the machine did about one rule break.
#[derive(Debug)]
struct Refused {
    /// The `connection.close` it queued.
    close: connm::Close,
    /// The error `handle_bytes` returned.
    error: Failure,
}

fn declare(queue: &str) -> Method {
    queue::Declare {
        queue: queue.into(),
        ..Default::default()
    }
    .into()
}

fn ack(delivery_tag: u64) -> basic::Ack {
    basic::Ack {
        delivery_tag,
        multiple: false,
    }
}

/// Failures compared by what they say (`Failure` has no `PartialEq`).
fn same(a: &Failure, b: &Failure) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl Client {
    /// Channel 1 open, a `queue.declare` on it waiting.
    fn new() -> Client {
        let mut m = machine();
        let (ch, log) = open(&mut m);
        assert_eq!(ch.id, OPEN);
        Client::waiting(m, ch, log)
    }

    /// Starts the `queue.declare` on `ch` that the rule break finds waiting for its reply.
    fn waiting(mut m: Connection<T>, ch: ChannelRef, log: Receiver<Note>) -> Client {
        let (tx, call) = channel();
        m.call(ch, &declare("hostile"), tx).expect("declare sent");
        sent(&mut m);
        Client { m, ch, log, call }
    }

    /// Feeds `bytes`, which break a rule, and checks what every rule break gets: one
    /// `connection.close` on channel 0 and nothing else, saying what the error says; the
    /// waiting call and the channel's watch told the same error; nothing accepted after.
    fn refuse(mut self, bytes: &[u8]) -> Refused {
        let mut buf = BytesMut::from(bytes);
        let error = self
            .m
            .handle_bytes(&mut buf)
            .expect_err("a rule break ends the connection");
        let close = match &sent(&mut self.m)[..] {
            [
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(close),
                },
            ] => close.clone(),
            other => panic!("expected one connection.close, the machine queued {other:?}"),
        };
        // The close tells the server what the user is told (serena's `Error` shows these two
        // failures with these words), cut to a short string's 255 bytes.
        let told = match &error {
            Failure::Protocol(e) => format!("protocol error from the server: {e}"),
            Failure::UnexpectedMethod(m) => format!("protocol violation by the server: {m}"),
            other => panic!("a rule break is Protocol or UnexpectedMethod, got {other:?}"),
        };
        assert!(
            !close.reply_text.is_empty() && told.starts_with(close.reply_text.as_str()),
            "the close says {:?}, the error {told:?}",
            close.reply_text
        );
        match self.call.try_recv() {
            Ok(Note::Reply(Err(e))) => assert!(same(&e, &error), "the call got {e:?}"),
            other => panic!("the waiting call must fail with the error, got {other:?}"),
        }
        match self.log.try_recv() {
            Ok(Note::ChannelEnded(e)) => assert!(same(&e, &error), "the channel got {e:?}"),
            other => panic!("the channel must end with the error, got {other:?}"),
        }
        assert!(self.m.error().is_some_and(|e| same(e, &error)));
        assert_eq!(self.m.open_channels(), 0);
        // Nothing is accepted after: not the reply the call waited for, arriving late ...
        let mut late = method_frame(
            OPEN,
            queue::DeclareOk {
                queue: "hostile".into(),
                message_count: 0,
                consumer_count: 0,
            },
        );
        let again = self
            .m
            .handle_bytes(&mut late)
            .expect_err("nothing is read after the close");
        assert!(same(&again, &error), "{again:?}");
        assert!(self.call.try_recv().is_err(), "the call was told once");
        // ... nor a new call or channel.
        let (tx, _rx) = channel();
        let call = self.m.call(self.ch, &declare("after"), tx);
        assert!(call.is_err_and(|e| same(&e, &error)));
        let (tx, _rx) = channel();
        assert!(self.m.open_channel(tx.clone(), tx).is_err());
        assert!(sent(&mut self.m).is_empty(), "nothing follows the close");
        Refused { close, error }
    }
}

impl Refused {
    /// The close carries `code` and blames `(class, method)`.
    fn assert_closed_with(&self, code: u16, cause: (u16, u16)) {
        assert_eq!(self.close.reply_code, code, "{self:#?}");
        assert_eq!(
            (self.close.class_id, self.close.method_id),
            cause,
            "{self:#?}"
        );
    }

    /// The decode error of a `Failure::Protocol`.
    fn decode_error(&self) -> &DecodeError {
        match &self.error {
            Failure::Protocol(e) => e,
            other => panic!("expected Failure::Protocol, got {other:?}"),
        }
    }

    /// The message of a `Failure::UnexpectedMethod`.
    fn violation(&self) -> &str {
        match &self.error {
            Failure::UnexpectedMethod(m) => m,
            other => panic!("expected Failure::UnexpectedMethod, got {other:?}"),
        }
    }
}

// The server's bytes.

fn method_frame(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &method.into()).expect("encodes");
    out
}

/// A frame of `frame_type` on `channel` around `payload`, with a correct size and frame-end.
fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![frame_type];
    out.put_u16(channel);
    out.put_u32(u32::try_from(payload.len()).expect("a small payload"));
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

/// A basic content header frame for a body of `size` bytes, no properties.
fn header_frame(channel: u16, size: u64) -> BytesMut {
    let mut out = BytesMut::new();
    let header = ContentHeader::basic(size, BasicProperties::default());
    encode_header(&mut out, channel, &header).expect("encodes");
    out
}

fn body_frame(channel: u16, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_body(&mut out, channel, body).expect("encodes");
    out
}

/// `basic.deliver` to a consumer the client never started.
fn deliver_frame(channel: u16) -> BytesMut {
    method_frame(
        channel,
        basic::Deliver {
            consumer_tag: "serena.1.1".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "hostile".into(),
        },
    )
}

/// Property flag of `headers` in a basic content header.
const HEADERS_FLAG: u16 = 1 << 13;

/// A content header frame whose `headers` property is `table` (its bytes, length included).
fn header_with_table(channel: u16, table: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.put_u16(basic::Publish::CLASS_ID);
    payload.put_u16(0); // weight
    payload.put_u64(0); // body size
    payload.put_u16(HEADERS_FLAG);
    payload.extend_from_slice(table);
    raw_frame(FRAME_HEADER, channel, &payload)
}

/// A field table holding one table under key `a`, holding one table ... `depth` tables in
/// all, the innermost empty: 7 bytes a level.
fn nested_tables(depth: usize) -> Vec<u8> {
    let mut table = 0u32.to_be_bytes().to_vec();
    for _ in 1..depth {
        let mut entry = vec![1, b'a', b'F'];
        entry.extend_from_slice(&table);
        table = u32::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
    }
    table
}

// ---------------------------------------------------------------------------------------------
// Framing: 501 FRAME_ERROR

#[test]
fn an_unknown_frame_type_is_a_frame_error() {
    // §4.2.3: a frame type other than 1, 2, 3 and 8 is a fatal protocol error. (The rule says
    // to close without sending more; the machine, like RabbitMQ, first sends a 501 close.)
    let seen = Client::new().refuse(&raw_frame(9, OPEN, &[]));
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::UnknownFrameType {
            frame_type: 9,
            channel: OPEN
        }
    );
    assert_eq!(
        seen.close.reply_text,
        "protocol error from the server: frame on channel 1: unknown frame type 9"
    );
}

#[test]
fn a_truncated_method_payload_is_a_frame_error() {
    // 501 is "a malformed frame that the recipient could not decode": basic.deliver whose
    // routing key is cut short, in a frame whose size matches what was sent.
    let whole = deliver_frame(OPEN);
    let payload = &whole[FRAME_HEADER_SIZE..whole.len() - 1];
    let cut = &payload[..payload.len() - 4];
    let seen = Client::new().refuse(&raw_frame(FRAME_METHOD, OPEN, cut));
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert!(
        matches!(seen.decode_error(), DecodeError::Truncated { .. }),
        "{seen:?}"
    );
}

#[test]
fn a_frame_over_frame_max_is_a_frame_error() {
    // §4.2.3: "A peer that receives an oversized frame MUST signal a connection exception with
    // reply code 501 (frame error)." A whole body frame one byte over the negotiated 131072,
    // after its delivery's method and header.
    let body = vec![0u8; FRAME_MAX as usize - FRAME_OVERHEAD + 1];
    let mut bytes = deliver_frame(OPEN);
    bytes.extend_from_slice(&header_frame(OPEN, body.len() as u64));
    bytes.extend_from_slice(&body_frame(OPEN, &body));
    let seen = Client::new().refuse(&bytes);
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::FrameTooLarge {
            channel: OPEN,
            size: 131_073,
            frame_max: FRAME_MAX
        }
    );
}

#[test]
fn a_huge_declared_length_is_refused_from_the_frame_header_alone() {
    // §4.2.3 (oversized frame: 501). Only the 7-byte header of a body frame declaring
    // 0xFFFF_FFF0 payload bytes: the machine refuses it from the header alone instead of
    // waiting for a payload that never comes.
    let header = [FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xF0];
    let seen = Client::new().refuse(&header);
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::FrameTooLarge {
            channel: OPEN,
            size: 0xFFFF_FFF0 + FRAME_OVERHEAD as u64,
            frame_max: FRAME_MAX
        }
    );
}

#[test]
fn a_string_or_table_length_beyond_its_frame_is_a_frame_error() {
    // 501, "could not decode": lengths inside a frame of ordinary size that claim 0xFFFF_FFF0
    // bytes. The decoder checks each length against the bytes left before taking any.
    let huge = 0xFFFF_FFF0u32.to_be_bytes();
    // The headers table itself claims 4 GiB.
    let mut table_length = huge.to_vec();
    table_length.extend_from_slice(&[1, b'a', b't', 1]);
    // A table of the right length holding a long string that claims 4 GiB.
    let mut entry = vec![1, b'a', b'S'];
    entry.extend_from_slice(&huge);
    entry.extend_from_slice(b"short");
    let mut string_length = u32::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
    string_length.extend_from_slice(&entry);

    for (what, table) in [
        ("table length", table_length),
        ("long string length", string_length),
    ] {
        let mut bytes = deliver_frame(OPEN).to_vec();
        bytes.extend_from_slice(&header_with_table(OPEN, &table));
        let seen = Client::new().refuse(&bytes);
        seen.assert_closed_with(FRAME_ERROR, (0, 0));
        match seen.decode_error() {
            DecodeError::Truncated {
                needed, available, ..
            } => {
                assert_eq!(*needed, 0xFFFF_FFF0, "{what}");
                assert!(*available < 64, "{what}: {available} bytes were left");
            }
            other => panic!("{what}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn a_wrong_frame_end_is_a_frame_error() {
    // §4.2.3: the frame-end octet must be 0xCE, checked before the frame is decoded. A valid
    // basic.ack for the open channel with its last octet replaced.
    let mut bytes = method_frame(OPEN, ack(1));
    let last = bytes.len() - 1;
    bytes[last] = 0xCD;
    let seen = Client::new().refuse(&bytes);
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::BadFrameEnd {
            channel: OPEN,
            found: 0xCD
        }
    );
}

#[test]
fn a_heartbeat_on_a_channel_is_a_frame_error() {
    // §4.2.7: "Heartbeat frames MUST have a channel number of zero. A peer that receives an
    // invalid heartbeat frame MUST raise a connection exception with reply code 501." (§4.2.3
    // says 503 for a non-zero channel on any connection frame; the heartbeat's own rule wins.)
    let seen = Client::new().refuse(&raw_frame(FRAME_HEARTBEAT, OPEN, &[]));
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::BadHeartbeat {
            channel: OPEN,
            size: 0
        }
    );
}

#[test]
fn a_table_nested_a_thousand_deep_in_a_delivery_is_refused_at_the_nesting_limit() {
    // 501, "could not decode": the headers of a delivery nest 1,000 tables (7 KB, well inside
    // frame_max). The decoder stops at its nesting limit instead of recursing 1,000 deep.
    let mut bytes = deliver_frame(OPEN).to_vec();
    bytes.extend_from_slice(&header_with_table(OPEN, &nested_tables(1_000)));
    let seen = Client::new().refuse(&bytes);
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    match seen.decode_error() {
        DecodeError::TooDeep { max, .. } => assert_eq!(*max, MAX_NESTING),
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown classes and methods: 540 NOT_IMPLEMENTED

#[test]
fn an_unknown_class_is_not_implemented() {
    // §4.2.4 reserves class ids below 0xF000 for AMQP and leaves 0xF000 and above to
    // extensions: a method of a class the machine does not know is functionality it does not
    // implement (540), named in the close's class and method ids.
    for class_id in [99u16, 0xF001] {
        let mut payload = Vec::new();
        payload.put_u16(class_id);
        payload.put_u16(10);
        payload.extend_from_slice(b"arguments");
        let seen = Client::new().refuse(&raw_frame(FRAME_METHOD, OPEN, &payload));
        seen.assert_closed_with(NOT_IMPLEMENTED, (class_id, 10));
        assert_eq!(
            seen.decode_error(),
            &DecodeError::UnknownMethod {
                class_id,
                method_id: 10
            }
        );
        assert_eq!(
            seen.close.reply_text.as_str(),
            format!("protocol error from the server: method frame: unknown method {class_id}.10")
        );
    }
}

#[test]
fn an_unknown_method_of_a_known_class_is_not_implemented() {
    // As above (540), for method 99 of class basic (60), which defines methods 10 to 120.
    let mut payload = Vec::new();
    payload.put_u16(60);
    payload.put_u16(99);
    let seen = Client::new().refuse(&raw_frame(FRAME_METHOD, OPEN, &payload));
    seen.assert_closed_with(NOT_IMPLEMENTED, (60, 99));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::UnknownMethod {
            class_id: 60,
            method_id: 99
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Channels: 503 COMMAND_INVALID, 504 CHANNEL_ERROR

#[test]
fn frames_for_a_channel_never_opened_are_a_channel_error() {
    // 504 CHANNEL_ERROR: "The client attempted to work with a channel that had not been
    // correctly opened" (RabbitMQ answers the same way, "expected 'channel.open'"). Channel 7
    // was never opened; a method, a content header and a body frame each end the connection.
    let cases: [(&str, BytesMut, (u16, u16)); 3] = [
        ("method basic.ack", method_frame(7, ack(1)), (60, 80)),
        ("content header", header_frame(7, 5), (0, 0)),
        ("content body", body_frame(7, b"hello"), (0, 0)),
    ];
    for (what, bytes, cause) in cases {
        let seen = Client::new().refuse(&bytes);
        seen.assert_closed_with(CHANNEL_ERROR, cause);
        assert_eq!(
            seen.violation(),
            format!("{what} on channel 7, which is not open")
        );
        assert_eq!(
            seen.close.reply_text.as_str(),
            format!("protocol violation by the server: {what} on channel 7, which is not open")
        );
    }
}

#[test]
fn a_frame_on_channel_65535_is_a_channel_error() {
    // 504 as above, for the highest channel number. (The machine checks the channel before it
    // stores anything for it, so such a number does not grow its channel table to 65,536.)
    let seen = Client::new().refuse(&body_frame(u16::MAX, b"x"));
    seen.assert_closed_with(CHANNEL_ERROR, (0, 0));
    assert_eq!(
        seen.violation(),
        "content body on channel 65535, which is not open"
    );
}

#[test]
fn a_method_on_a_channel_the_client_closed_is_a_channel_error() {
    // 504: channel 2 was opened, closed by the client, and its close-ok received; from then
    // on the server may send nothing on it (channel.close-ok is its last word there).
    let mut m = machine();
    let (ch, log) = open(&mut m);
    let (second, _second_log) = open(&mut m);
    assert_eq!((ch.id, second.id), (1, 2));
    let (tx, closed) = channel();
    assert!(m.close_channel(second, Some(tx)).unwrap());
    sent(&mut m);
    m.handle_bytes(&mut method_frame(2, chm::CloseOk {}))
        .expect("close-ok");
    assert!(matches!(closed.try_recv(), Ok(Note::Reply(Ok(_)))));
    assert_eq!(m.open_channels(), 1, "close-ok freed channel 2");
    let seen = Client::waiting(m, ch, log).refuse(&method_frame(2, ack(1)));
    seen.assert_closed_with(CHANNEL_ERROR, (60, 80));
    assert_eq!(
        seen.violation(),
        "method basic.ack on channel 2, which is not open"
    );
}

#[test]
fn a_connection_method_on_a_channel_is_an_invalid_command() {
    // §4.2.3: "The channel number MUST be zero for all heartbeat frames, and for method,
    // header and body frames that refer to the Connection class. A peer that receives a
    // non-zero channel number for one of these frames MUST signal a connection exception with
    // reply code 503 (command invalid)." connection.blocked (10.60) on the open channel.
    let blocked = connm::Blocked {
        reason: "low on memory".into(),
    };
    let seen = Client::new().refuse(&method_frame(OPEN, blocked));
    seen.assert_closed_with(COMMAND_INVALID, (10, 60));
    assert_eq!(
        seen.violation(),
        "connection.blocked on channel 1: connection methods belong on channel 0"
    );
}

#[test]
fn a_handshake_method_after_the_handshake_is_an_invalid_command() {
    // 503 COMMAND_INVALID, "an invalid sequence of frames": connection.tune once the
    // connection is open.
    let tune = connm::Tune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    let seen = Client::new().refuse(&method_frame(0, tune));
    seen.assert_closed_with(COMMAND_INVALID, (10, 30));
    assert_eq!(seen.violation(), "connection.tune on channel 0");
}

#[test]
fn channel_traffic_on_channel_zero_is_a_channel_error() {
    // §4.2.6.1: "A peer that receives a zero channel number in a content frame MUST signal a
    // connection exception with reply code 504 (channel error)"; and a channel's method on
    // channel 0 works with a channel that was never opened (504, as RabbitMQ does).
    let cases: [(&str, BytesMut, (u16, u16)); 3] = [
        ("content header", header_frame(0, 5), (0, 0)),
        ("content body", body_frame(0, b"hello"), (0, 0)),
        (
            "channel.flow",
            method_frame(0, chm::Flow { active: false }),
            (20, 20),
        ),
    ];
    for (what, bytes, cause) in cases {
        let seen = Client::new().refuse(&bytes);
        seen.assert_closed_with(CHANNEL_ERROR, cause);
        assert_eq!(seen.violation(), format!("{what} on channel 0"));
    }
}

// ---------------------------------------------------------------------------------------------
// Content out of order: 505 UNEXPECTED_FRAME

#[test]
fn a_content_header_without_its_method_is_an_unexpected_frame() {
    // §4.2.6: "A peer that receives an incomplete or badly-formatted content MUST raise a
    // connection exception with reply code 505 (unexpected frame). This includes missing
    // content headers ..." Here the method is missing: a header on the open channel.
    let seen = Client::new().refuse(&header_frame(OPEN, 5));
    seen.assert_closed_with(UNEXPECTED_FRAME, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::UnexpectedFrame {
            channel: OPEN,
            found: "content header",
            state: "expecting a method",
        }
    );
}

#[test]
fn a_body_longer_than_its_header_said_is_an_unexpected_frame() {
    // §4.2.6, badly-formatted content (505): the header announces 5 bytes, the body frame
    // carries 10.
    let mut bytes = deliver_frame(OPEN);
    bytes.extend_from_slice(&header_frame(OPEN, 5));
    bytes.extend_from_slice(&body_frame(OPEN, b"0123456789"));
    let seen = Client::new().refuse(&bytes);
    seen.assert_closed_with(UNEXPECTED_FRAME, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::BodyTooLong {
            channel: OPEN,
            expected: 5
        }
    );
}

#[test]
fn a_method_inside_a_message_is_an_unexpected_frame() {
    // §4.2.6: content frames of one channel may not be mixed with its method frames (505).
    let mut bytes = deliver_frame(OPEN);
    bytes.extend_from_slice(&header_frame(OPEN, 5));
    bytes.extend_from_slice(&method_frame(OPEN, ack(1)));
    let seen = Client::new().refuse(&bytes);
    seen.assert_closed_with(UNEXPECTED_FRAME, (0, 0));
    assert!(
        matches!(
            seen.decode_error(),
            DecodeError::UnexpectedFrame {
                channel: OPEN,
                found: "method",
                ..
            }
        ),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Legitimate late frames: the connection lives on

#[test]
fn frames_between_our_channel_close_and_its_close_ok_are_ignored() {
    // channel.close / stability: "After sending this method, any received methods except
    // Close and Close-OK MUST be discarded." The server sent a delivery, an ack and a flow
    // before it saw our close: discarded, not answered (no reject, no flow-ok), not fatal.
    let mut m = machine();
    let (ch, log) = open(&mut m);
    let (tx, closed) = channel();
    assert!(m.close_channel(ch, Some(tx)).unwrap());
    assert!(matches!(&methods(&mut m)[..], [Method::ChannelClose(_)]));
    let mut late = deliver_frame(OPEN);
    late.extend_from_slice(&header_frame(OPEN, 4));
    late.extend_from_slice(&body_frame(OPEN, b"late"));
    late.extend_from_slice(&method_frame(OPEN, ack(1)));
    late.extend_from_slice(&method_frame(OPEN, chm::Flow { active: false }));
    late.extend_from_slice(&method_frame(OPEN, chm::CloseOk {}));
    m.handle_bytes(&mut late)
        .expect("late frames are not a violation");
    assert!(late.is_empty(), "every frame was read");
    assert!(sent(&mut m).is_empty(), "no reject, no flow-ok");
    assert!(
        matches!(closed.try_recv(), Ok(Note::Reply(Ok(_)))),
        "close() completes"
    );
    assert!(matches!(
        log.try_recv(),
        Ok(Note::ChannelEnded(Failure::Closed("channel")))
    ));
    assert!(log.try_recv().is_err(), "the flow reached nobody");
    lives_on(&mut m);
}

#[test]
fn crossing_channel_closes_keep_the_connection() {
    // Both sides close channel 1 at once. channel.close / stability: each answers the other's
    // close with close-ok, so the machine gets the server's close and then a close-ok for its
    // own. That close-ok is for a channel still closing, not one that is gone: no 504.
    let mut m = machine();
    let (ch, log) = open(&mut m);
    let (tx, closed) = channel();
    assert!(m.close_channel(ch, Some(tx)).unwrap());
    sent(&mut m);
    let mut crossing = method_frame(
        OPEN,
        chm::Close {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED - crossed".into(),
            class_id: 50,
            method_id: 10,
        },
    );
    crossing.extend_from_slice(&method_frame(OPEN, chm::CloseOk {}));
    m.handle_bytes(&mut crossing)
        .expect("crossing closes are not a violation");
    assert!(
        matches!(
            &sent(&mut m)[..],
            [Frame::Method {
                channel: OPEN,
                method: Method::ChannelCloseOk(_)
            }]
        ),
        "the server's close is answered"
    );
    assert!(matches!(closed.try_recv(), Ok(Note::Reply(Ok(_)))));
    assert!(matches!(
        log.try_recv(),
        Ok(Note::ChannelEnded(Failure::Closed("channel")))
    ));
    lives_on(&mut m);
}

/// The connection goes on after late frames: a new channel (the next id: ids are handed out
/// round-robin) answers a `queue.declare`, closes, and the connection closes cleanly.
fn lives_on(m: &mut Connection<T>) {
    assert!(m.error().is_none());
    assert_eq!(m.open_channels(), 0);
    let (tx, log) = channel();
    let again = m
        .open_channel(tx.clone(), tx.clone())
        .expect("a new channel");
    assert_eq!(again.id, OPEN + 1);
    m.call(again, &declare("after"), tx).expect("declare sent");
    assert!(matches!(
        &methods(m)[..],
        [Method::ChannelOpen(_), Method::QueueDeclare(d)] if d.queue == "after"
    ));
    let mut replies = method_frame(again.id, chm::OpenOk {});
    replies.extend_from_slice(&method_frame(
        again.id,
        queue::DeclareOk {
            queue: "after".into(),
            message_count: 0,
            consumer_count: 0,
        },
    ));
    m.handle_bytes(&mut replies).expect("replies");
    assert!(matches!(log.try_recv(), Ok(Note::Reply(Ok(_)))), "open-ok");
    match log.try_recv() {
        Ok(Note::Reply(Ok(Assembled::Method(Method::QueueDeclareOk(ok))))) => {
            assert_eq!(ok.queue, "after");
        }
        other => panic!("expected the declare-ok, got {other:?}"),
    }
    assert!(m.close_channel(again, None).unwrap());
    m.handle_bytes(&mut method_frame(again.id, chm::CloseOk {}))
        .expect("close-ok");
    m.close(200, "bye").expect("a clean close");
    assert!(matches!(
        &methods(m)[..],
        [Method::ChannelClose(_), Method::ConnectionClose(c)] if c.reply_code == 200
    ));
    m.handle_bytes(&mut method_frame(0, connm::CloseOk {}))
        .expect("close-ok");
    assert_eq!(m.poll_event(), Some(Event::Closed));
}
