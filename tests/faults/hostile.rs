//! A hostile server, end to end: a scripted peer ([`serena_tests::fake_peer`]) completes the
//! handshake, lets the client open a channel and start a call, then breaks one rule of AMQP
//! 0-9-1. Each test checks both sides of what the client does about it:
//!
//! - on the wire: the peer reads the client's `connection.close` and checks its reply code (and
//!   the class and method it blames) against the rule of the spec it follows, named in a
//!   comment at each case; after the close the client sends nothing and closes the socket;
//! - for the user: the error `open_connection` returns (variant and message), the call that
//!   was waiting fails with the same error, and all of it within a bound: nothing hangs and
//!   nothing panics (a panic in the client's tasks would leave the scope without its error).
//!
//! The rules themselves, each with its reply code, are unit tests of the connection state
//! machine, without a socket: `serena-proto/src/connection/tests/rules.rs` feeds it the bytes of
//! every case this file had (and the rules are listed in the docs of
//! `serena-proto/src/connection/mod.rs`). What is left here is one rule break per family of
//! reply codes (501 framing, 540 unknown methods, 504 channels, 505 content), to show the
//! driver carries the machine's close to the socket and its error to the user; the two cases
//! of frames the server may legitimately still send (between our `channel.close` and its
//! `close-ok`, or when closes cross), after which the connection lives on; and a rule of the
//! handshake, which the client drives before the machine starts (`serena/src/driver/handshake.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use serena::proto::method::{basic, channel, connection, queue};
use serena::proto::{
    BasicProperties, ContentHeader, DecodeError, Method, frame, table::MAX_NESTING,
};
use serena::{ConnectionConfig, Error, open_connection};
use serena_tests::fake_peer::{FakeServer, Offer, PeerConn, PeerResult};
use tokio::task::JoinHandle;

/// The longest any test may run before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// How soon the client must notice a violation: at once, not at the next heartbeat check (the
/// offer's heartbeat is 60 s).
const NOTICE: Duration = Duration::from_secs(2);

/// The channel the client opens: the first id.
const OPEN: u16 = 1;

/// AMQP reply codes of the client's close.
const FRAME_ERROR: u16 = 501;
const CHANNEL_ERROR: u16 = 504;
const UNEXPECTED_FRAME: u16 = 505;
const NOT_IMPLEMENTED: u16 = 540;

/// What the client did about one violation.
#[derive(Debug)]
struct Seen {
    /// The `connection.close` the client sent.
    close: connection::Close,
    /// The error `open_connection` returned.
    error: Error,
    /// What the `queue.declare` waiting for its reply got.
    pending: Error,
    /// From the peer's last byte to `open_connection` returning.
    noticed_in: Duration,
}

/// Runs the peer's script and the client side by side, neither longer than [`LIMIT`].
async fn with_peer<P, C>(
    peer: impl Future<Output = PeerResult<P>>,
    client: impl Future<Output = C>,
) -> (P, C) {
    let (peer, client) = tokio::time::timeout(LIMIT, async { tokio::join!(peer, client) })
        .await
        .expect("neither the client nor the fake server may hang");
    (peer.expect("the fake server's script"), client)
}

/// The pending call a client leaves behind when its scope is cancelled.
type Pending = Arc<Mutex<Option<JoinHandle<serena::Result<()>>>>>;

/// A client that opens a channel, starts a `queue.declare` in a task of its own (so the call
/// outlives the cancelled scope and its result can be read) and waits; only the connection's
/// failure ends it. Returns the scope's error, when it came, and the call's result.
async fn client_with_pending_call(config: &ConnectionConfig) -> (Error, Instant, Error) {
    let pending: Pending = Arc::default();
    let slot = pending.clone();
    let result = open_connection(config, async move |conn| {
        let ch = conn.channel().await?;
        assert_eq!(ch.id(), OPEN);
        let call = tokio::spawn(async move {
            ch.queue_declare("hostile", Default::default())
                .await
                .map(|_| ())
        });
        *slot.lock().unwrap() = Some(call);
        std::future::pending::<serena::Result<()>>().await
    })
    .await;
    let failed_at = Instant::now();
    let error = match result {
        Err(e) => e,
        Ok(body) => panic!("the connection must fail, the scope returned {body:?}"),
    };
    let call = pending
        .lock()
        .unwrap()
        .take()
        .expect("the call was started before the violation");
    let pending = tokio::time::timeout(NOTICE, call)
        .await
        .expect("the pending call ends with the connection")
        .expect("the call's task did not panic")
        .expect_err("the pending call fails");
    (error, failed_at, pending)
}

/// The peer's side of every violation: handshake, answer the channel setup, wait for the
/// client's `queue.declare` (left unanswered), send `bytes`, then read the client's close and
/// check nothing follows it but the end of the socket.
async fn send_after_setup(bytes: &[u8]) -> Seen {
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        p.serve_setup_until(OPEN, "queue.declare").await?;
        p.send_raw(bytes).await?;
        let sent = Instant::now();
        let close = p.expect_connection_close().await?;
        p.expect_eof().await?;
        Ok((close, sent))
    };
    let config = server.client_config();
    let ((close, sent), (error, failed_at, pending)) =
        with_peer(peer, client_with_pending_call(&config)).await;
    Seen {
        close,
        error,
        pending,
        noticed_in: failed_at.duration_since(sent),
    }
}

impl Seen {
    /// The close carries `code` and blames `(class, method)`; the pending call failed with the
    /// scope's error; it all happened at once.
    fn assert_closed_with(&self, code: u16, cause: (u16, u16)) {
        assert_eq!(self.close.reply_code, code, "{self:#?}");
        assert_eq!(
            (self.close.class_id, self.close.method_id),
            cause,
            "{self:#?}"
        );
        let text = self.close.reply_text.to_string();
        assert!(
            !text.is_empty()
                && self
                    .error
                    .to_string()
                    .starts_with(&text[..text.len().min(40)]),
            "the close tells the server what the user is told: {text:?} / {}",
            self.error
        );
        assert_eq!(
            self.pending.to_string(),
            self.error.to_string(),
            "the pending call fails with the connection's error"
        );
        assert!(
            self.noticed_in < NOTICE,
            "noticed {:?} after the last byte",
            self.noticed_in
        );
    }

    /// The decode error the user got.
    fn decode_error(&self) -> &DecodeError {
        match &self.error {
            Error::Protocol(e) => e,
            other => panic!("expected Error::Protocol, got {other:?}"),
        }
    }

    /// The message of an `Error::UnexpectedMethod` the user got.
    fn violation(&self) -> &str {
        match &self.error {
            Error::UnexpectedMethod(m) => m,
            other => panic!("expected Error::UnexpectedMethod, got {other:?}"),
        }
    }
}

/// A method frame.
fn method_frame(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_method(&mut out, channel, &method.into()).expect("encodes");
    out
}

/// A frame of `frame_type` on `channel` around `payload`, with a correct size and frame-end.
fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![frame_type];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out.push(frame::FRAME_END);
    out
}

/// A basic content header frame for a body of `size` bytes, no properties.
fn header_frame(channel: u16, size: u64) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_header(
        &mut out,
        channel,
        &ContentHeader::basic(size, BasicProperties::default()),
    )
    .expect("encodes");
    out
}

/// A body frame.
fn body_frame(channel: u16, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_body(&mut out, channel, body).expect("encodes");
    out
}

/// `basic.deliver` to the client's (not yet started) consumer on the open channel.
fn deliver(channel: u16) -> BytesMut {
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

// ---------------------------------------------------------------------------------------------
// Framing: 501 FRAME_ERROR

#[tokio::test]
async fn a_huge_declared_length_is_refused_from_the_frame_header_alone() {
    // §4.2.3 (oversized frame: 501). Only the 7-byte header of a body frame declaring
    // 0xFFFF_FFF0 payload bytes is sent, then nothing: the client refuses it from the header
    // alone, before any payload (which never comes): the error arrives within NOTICE, not
    // at the 60 s heartbeat, though the frame's bytes never do. (The decoder refuses it before
    // it reserves anything; process RSS would not show a reservation, which the kernel only
    // backs when written, so the proof is that the client never waits for the bytes.)
    let header = [frame::FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xF0];
    let seen = send_after_setup(&header).await;
    seen.assert_closed_with(FRAME_ERROR, (0, 0));
    match seen.decode_error() {
        DecodeError::FrameTooLarge {
            channel,
            size,
            frame_max,
        } => {
            assert_eq!(*channel, OPEN);
            assert_eq!(*size, 0xFFFF_FFF0 + frame::FRAME_OVERHEAD as u64);
            assert_eq!(*frame_max, 131_072);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown classes and methods: 540 NOT_IMPLEMENTED

#[tokio::test]
async fn an_unknown_class_is_not_implemented() {
    // §4.2.4 reserves class ids below 0xF000 for AMQP and leaves 0xF000 and above to
    // extensions: a method of a class serena does not know is functionality it does not
    // implement (540), named in the close's class and method ids.
    for class_id in [99u16, 0xF001] {
        let mut payload = class_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&10u16.to_be_bytes());
        payload.extend_from_slice(b"arguments");
        let seen = send_after_setup(&raw_frame(frame::FRAME_METHOD, OPEN, &payload)).await;
        seen.assert_closed_with(NOT_IMPLEMENTED, (class_id, 10));
        assert_eq!(
            seen.decode_error(),
            &DecodeError::UnknownMethod {
                class_id,
                method_id: 10
            }
        );
        assert_eq!(
            seen.error.to_string(),
            format!("protocol error from the server: method frame: unknown method {class_id}.10")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Channels: 504 CHANNEL_ERROR

#[tokio::test]
async fn a_method_on_a_channel_the_client_closed_is_a_channel_error() {
    // 504: channel 2 was opened, closed by the client, and its close-ok received; from then
    // on the server may send nothing on it (channel.close-ok is its last word there).
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        p.serve_setup_until(2, "channel.close").await?;
        p.send(2, channel::CloseOk {}).await?;
        p.serve_setup_until(OPEN, "queue.declare").await?;
        p.send(
            2,
            basic::Ack {
                delivery_tag: 1,
                multiple: false,
            },
        )
        .await?;
        let sent = Instant::now();
        let close = p.expect_connection_close().await?;
        p.expect_eof().await?;
        Ok((close, sent))
    };
    let config = server.client_config();
    let pending: Pending = Arc::default();
    let slot = pending.clone();
    let client = async {
        let result = open_connection(&config, async move |conn| {
            let ch = conn.channel().await?;
            let second = conn.channel().await?;
            assert_eq!((ch.id(), second.id()), (1, 2));
            second.close().await?;
            assert_eq!(conn.open_channels(), 1, "close-ok freed channel 2");
            let call = tokio::spawn(async move {
                ch.queue_declare("hostile", Default::default())
                    .await
                    .map(|_| ())
            });
            *slot.lock().unwrap() = Some(call);
            std::future::pending::<serena::Result<()>>().await
        })
        .await;
        (result, Instant::now())
    };
    let ((close, sent), (result, failed_at)) = with_peer(peer, client).await;
    let error = result.expect_err("the connection fails");
    let call = pending
        .lock()
        .unwrap()
        .take()
        .expect("the call was started");
    let pending_error = tokio::time::timeout(NOTICE, call)
        .await
        .expect("the pending call ends")
        .expect("no panic")
        .expect_err("the pending call fails");
    let seen = Seen {
        close,
        error,
        pending: pending_error,
        noticed_in: failed_at.duration_since(sent),
    };
    seen.assert_closed_with(CHANNEL_ERROR, (60, 80));
    assert_eq!(
        seen.violation(),
        "method basic.ack on channel 2, which is not open"
    );
}

// ---------------------------------------------------------------------------------------------
// Content out of order: 505 UNEXPECTED_FRAME

#[tokio::test]
async fn a_body_longer_than_its_header_said_is_an_unexpected_frame() {
    // §4.2.6, badly-formatted content (505): the header announces 5 bytes, the body frame
    // carries 10.
    let mut bytes = deliver(OPEN);
    bytes.extend_from_slice(&header_frame(OPEN, 5));
    bytes.extend_from_slice(&body_frame(OPEN, b"0123456789"));
    let seen = send_after_setup(&bytes).await;
    seen.assert_closed_with(UNEXPECTED_FRAME, (0, 0));
    assert_eq!(
        seen.decode_error(),
        &DecodeError::BodyTooLong {
            channel: OPEN,
            expected: 5
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Legitimate late frames: the connection lives on

#[tokio::test]
async fn frames_between_our_channel_close_and_its_close_ok_are_ignored() {
    // channel.close / stability: "After sending this method, any received methods except
    // Close and Close-OK MUST be discarded." The server sent a delivery, an ack and a flow
    // before it saw our close: discarded, not answered (no reject, no flow-ok), not fatal.
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        p.serve_setup_until(OPEN, "channel.close").await?;
        let mut late = deliver(OPEN);
        late.extend_from_slice(&header_frame(OPEN, 4));
        late.extend_from_slice(&body_frame(OPEN, b"late"));
        late.extend_from_slice(&method_frame(
            OPEN,
            basic::Ack {
                delivery_tag: 1,
                multiple: false,
            },
        ));
        late.extend_from_slice(&method_frame(OPEN, channel::Flow { active: false }));
        p.send_raw(&late).await?;
        p.send(OPEN, channel::CloseOk {}).await?;
        // The client goes on: a new channel (the next id: ids are handed out round-robin),
        // a declare, then a clean close.
        answer_declare_then_close(&mut p, OPEN + 1).await
    };
    let config = server.client_config();
    let client = open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        ch.close().await?;
        let again = conn.channel().await?;
        let ok = again.queue_declare("after", Default::default()).await?;
        Ok::<_, Error>((again.id(), ok.queue))
    });
    let (close, result) = with_peer(peer, client).await;
    let (id, queue) = result.expect("the connection stays up and the calls succeed");
    assert_eq!((id, queue.as_str()), (OPEN + 1, "after"));
    assert_eq!(close.reply_code, 200, "a clean close: {close:?}");
}

#[tokio::test]
async fn crossing_channel_closes_keep_the_connection() {
    // Both sides close channel 1 at once. channel.close / stability: each answers the other's
    // close with close-ok, so the client gets the server's close and then a close-ok for its
    // own. That close-ok is for a channel still closing, not one that is gone: no 504.
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        p.serve_setup_until(OPEN, "channel.close").await?;
        p.send(
            OPEN,
            channel::Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - crossed".into(),
                class_id: 50,
                method_id: 10,
            },
        )
        .await?;
        p.send(OPEN, channel::CloseOk {}).await?;
        // The client answers the server's close.
        p.serve_setup_until(OPEN, "channel.close-ok").await?;
        answer_declare_then_close(&mut p, OPEN + 1).await
    };
    let config = server.client_config();
    let client = open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        ch.close().await?;
        let again = conn.channel().await?;
        let ok = again.queue_declare("after", Default::default()).await?;
        Ok::<_, Error>((again.id(), ok.queue))
    });
    let (close, result) = with_peer(peer, client).await;
    let (id, queue) = result.expect("the connection stays up and the calls succeed");
    assert_eq!((id, queue.as_str()), (OPEN + 1, "after"));
    assert_eq!(close.reply_code, 200, "a clean close: {close:?}");
}

/// The end of a well-behaved script: answers the new channel's setup and its `queue.declare`,
/// its close, and the connection's close; returns the client's `connection.close`.
async fn answer_declare_then_close(p: &mut PeerConn, ch: u16) -> PeerResult<connection::Close> {
    let Method::QueueDeclare(declare) = p.serve_setup_until(ch, "queue.declare").await? else {
        unreachable!("checked by name");
    };
    p.send(
        ch,
        queue::DeclareOk {
            queue: declare.queue,
            message_count: 0,
            consumer_count: 0,
        },
    )
    .await?;
    p.serve_setup_until(ch, "channel.close").await?;
    p.send(ch, channel::CloseOk {}).await?;
    let close = p.expect_connection_close().await?;
    p.send(0, connection::CloseOk {}).await?;
    p.expect_eof().await?;
    Ok(close)
}

// ---------------------------------------------------------------------------------------------
// The handshake, which the client drives before the connection machine starts

#[tokio::test]
async fn deeply_nested_server_properties_fail_the_handshake() {
    // connection.start with server properties holding arrays nested 800 deep (as deep as fits
    // the 4096-byte frames allowed before tuning, §4.2.3 / connection.tune frame-max minimum).
    // The handshake ends there: no start-ok, the socket closed, the error to the user.
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.expect_protocol_header().await?;
        p.send_raw(&start_frame_with_deep_properties()).await?;
        let sent = Instant::now();
        // Nothing from the client but the end of its socket.
        p.expect_eof().await?;
        Ok(sent)
    };
    let config = server.client_config();
    let client = async {
        let result = open_connection(&config, async |_| Ok::<_, Error>(())).await;
        (result, Instant::now())
    };
    let (sent, (result, failed_at)) = with_peer(peer, client).await;
    match result {
        Err(Error::Protocol(DecodeError::TooDeep { max, .. })) => assert_eq!(max, MAX_NESTING),
        other => panic!("expected a TooDeep protocol error, got {other:?}"),
    }
    assert!(failed_at.duration_since(sent) < NOTICE);
}

/// A `connection.start` frame whose server properties hold one entry, `deep`: 800 nested
/// arrays. (The client reads the whole table before it looks for its capabilities.)
fn start_frame_with_deep_properties() -> Vec<u8> {
    let mut props = vec![4, b'd', b'e', b'e', b'p', b'A'];
    props.extend_from_slice(&nested_arrays(800));
    let mut payload = Vec::new();
    payload.put_u16(10);
    payload.put_u16(10);
    payload.put_u8(0);
    payload.put_u8(9);
    payload.put_u32(u32::try_from(props.len()).unwrap());
    payload.extend_from_slice(&props);
    for long_string in [&b"PLAIN"[..], b"en_US"] {
        payload.put_u32(u32::try_from(long_string.len()).unwrap());
        payload.extend_from_slice(long_string);
    }
    let frame = raw_frame(frame::FRAME_METHOD, 0, &payload);
    assert!(frame.len() <= 4096, "{} bytes", frame.len());
    frame
}

/// A field array holding one array ... `depth` arrays in all, the innermost empty: 5 bytes a
/// level.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut array = 0u32.to_be_bytes().to_vec();
    for _ in 1..depth {
        let mut value = vec![b'A'];
        value.extend_from_slice(&array);
        array = u32::try_from(value.len()).unwrap().to_be_bytes().to_vec();
        array.extend_from_slice(&value);
    }
    array
}
