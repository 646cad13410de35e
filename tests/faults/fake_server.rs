//! A scripted server ([`serena_tests::fake_peer`]) that misbehaves one way at a time, and the
//! error the client reports for each: no publisher confirms, an unsupported login mechanism,
//! silence after the handshake, garbage bytes, a socket closed mid-frame, a handshake that
//! never completes. None of them may leave the client waiting.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serena::proto::method::connection;
use serena::proto::{DecodeError, FieldTable, Method, frame};
use serena::{Error, open_connection};
use serena_tests::fake_peer::{FakeServer, Offer, server_properties};

use super::{Cancelled, doomed_client, with_peer};

#[tokio::test]
async fn a_server_without_publisher_confirms_is_refused() {
    let without_capability =
        server_properties().with("capabilities", FieldTable::new().with("basic.nack", true));
    let switched_off = server_properties().with(
        "capabilities",
        FieldTable::new().with("publisher_confirms", false),
    );
    let no_capabilities_at_all = FieldTable::new().with("product", "bare");
    for properties in [without_capability, switched_off, no_capabilities_at_all] {
        let server = FakeServer::bind().await.expect("bind");
        let offer = Offer {
            server_properties: properties,
            ..Offer::default()
        };
        let peer = async {
            let mut p = server.accept().await?;
            p.expect_protocol_header().await?;
            p.send_start(&offer).await?;
            // The client hangs up without a start-ok.
            p.expect_eof().await
        };
        let config = server.client_config();
        let client = open_connection(&config, async |_| Ok::<_, Error>(()));
        let ((), result) = with_peer(peer, client).await;
        let err = result.expect_err("refused");
        assert!(matches!(err, Error::ConfirmsNotSupported), "{err:?}");
    }
}

#[tokio::test]
async fn a_server_offering_only_external_is_refused() {
    let server = FakeServer::bind().await.expect("bind");
    let offer = Offer {
        mechanisms: "EXTERNAL".into(),
        ..Offer::default()
    };
    let peer = async {
        let mut p = server.accept().await?;
        p.expect_protocol_header().await?;
        p.send_start(&offer).await?;
        p.expect_eof().await?;
        // The client dropped the socket entirely: writing to it soon fails.
        Ok(p.write_fails_within(Duration::from_secs(2)).await)
    };
    let config = server.client_config();
    let client = open_connection(&config, async |_| Ok::<_, Error>(()));
    let (socket_closed, result) = with_peer(peer, client).await;
    assert!(socket_closed, "the client closed its socket");
    match result.expect_err("no common mechanism") {
        Error::NoCommonMechanism { offered } => assert_eq!(offered, "EXTERNAL"),
        other => panic!("expected NoCommonMechanism, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_server_is_declared_dead_after_two_heartbeat_intervals() {
    let server = FakeServer::bind().await.expect("bind");
    let offer = Offer {
        tune: connection::Tune {
            heartbeat: 1,
            ..Offer::default().tune
        },
        ..Offer::default()
    };
    let cancelled = Cancelled::default();
    let peer = async {
        let mut p = server.accept().await?;
        let hs = p.handshake(&offer).await?;
        let open_ok_sent = Instant::now();
        // Read everything, write nothing.
        let heartbeats = p.drain().await?;
        Ok((hs, open_ok_sent, heartbeats))
    };
    let ((hs, open_ok_sent, heartbeats), (err, failed_at)) =
        with_peer(peer, doomed_client(&server.client_config(), &cancelled)).await;
    assert_eq!(hs.tune_ok.heartbeat, 1, "the smaller interval wins");
    match err {
        Error::HeartbeatTimeout(after) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("expected HeartbeatTimeout, got {other:?}"),
    }
    let took = failed_at.duration_since(open_ok_sent);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "declared dead {took:?} after the last bytes from the server"
    );
    assert!(cancelled.happened(), "the scope's body was cancelled");
    assert!(
        heartbeats >= 2,
        "the client kept sending heartbeats meanwhile: {heartbeats}"
    );
}

/// A heartbeat frame (legal) with its last byte replaced.
fn heartbeat_ending_with(end: u8) -> Vec<u8> {
    vec![8, 0, 0, 0, 0, 0, 0, end]
}

/// The bytes of a method frame on channel 0.
fn method_bytes(method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_method(&mut out, 0, &method.into()).expect("encodes");
    out
}

/// Bytes a server sends after the handshake, the decode error they must cause, and the reply
/// code of the client's close (the rules are unit tests of the connection machine, in
/// `serena-proto/src/connection/tests/rules.rs`).
struct Garbage {
    what: &'static str,
    bytes: Vec<u8>,
    expected: fn(&DecodeError) -> bool,
    reply_code: u16,
}

#[tokio::test]
async fn garbage_after_the_handshake_is_a_protocol_error() {
    // A method frame naming class 10 method 99, which does not exist.
    let mut unknown_method = method_bytes(connection::CloseOk {});
    unknown_method[10] = 99;
    let cases = [
        Garbage {
            what: "bad frame end",
            bytes: heartbeat_ending_with(0x00),
            expected: |e| {
                matches!(
                    e,
                    DecodeError::BadFrameEnd {
                        channel: 0,
                        found: 0
                    }
                )
            },
            reply_code: 501,
        },
        Garbage {
            what: "unknown frame type",
            bytes: vec![9, 0, 1, 0, 0, 0, 0, 0xCE],
            expected: |e| {
                matches!(
                    e,
                    DecodeError::UnknownFrameType {
                        frame_type: 9,
                        channel: 1
                    }
                )
            },
            reply_code: 501,
        },
        Garbage {
            what: "frame over frame_max",
            bytes: vec![3, 0, 1, 0x7f, 0xff, 0xff, 0xff],
            expected: |e| matches!(e, DecodeError::FrameTooLarge { channel: 1, .. }),
            reply_code: 501,
        },
        Garbage {
            what: "unknown method",
            bytes: unknown_method.to_vec(),
            expected: |e| {
                matches!(
                    e,
                    DecodeError::UnknownMethod {
                        class_id: 10,
                        method_id: 99
                    }
                )
            },
            reply_code: 540,
        },
        Garbage {
            what: "heartbeat with a payload",
            bytes: vec![8, 0, 0, 0, 0, 0, 1, 0, 0xCE],
            expected: |e| {
                matches!(
                    e,
                    DecodeError::BadHeartbeat {
                        channel: 0,
                        size: 1
                    }
                )
            },
            reply_code: 501,
        },
    ];
    for Garbage {
        what,
        bytes: garbage,
        expected,
        reply_code,
    } in cases
    {
        let server = FakeServer::bind().await.expect("bind");
        let cancelled = Cancelled::default();
        let peer = async {
            let mut p = server.accept().await?;
            p.handshake(&Offer::default()).await?;
            p.send_raw(&garbage).await?;
            let sent = Instant::now();
            // The client says why before it drops the socket.
            let answer = p.recv_connection_method().await;
            p.drain().await?;
            Ok((sent, answer))
        };
        let ((sent, answer), (err, failed_at)) =
            with_peer(peer, doomed_client(&server.client_config(), &cancelled)).await;
        match answer {
            Ok(Method::ConnectionClose(c)) => {
                assert_eq!(c.reply_code, reply_code, "{what}: {c:?}");
            }
            other => panic!("{what}: expected connection.close from the client, got {other:?}"),
        }
        match &err {
            Error::Protocol(e) => assert!(expected(e), "{what}: {e:?}"),
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
        assert!(
            failed_at.duration_since(sent) < Duration::from_secs(2),
            "{what}: noticed at once"
        );
        assert!(cancelled.happened(), "{what}: the body was cancelled");
    }
}

#[tokio::test]
async fn a_socket_closed_mid_frame_is_an_io_error() {
    let blocked = method_bytes(connection::Blocked {
        reason: "low on memory".into(),
    });
    // Closed after 5 of the 7 header bytes, and after the header but before the frame-end.
    for cut in [5, blocked.len() - 1] {
        let server = FakeServer::bind().await.expect("bind");
        let cancelled = Cancelled::default();
        let partial = &blocked[..cut];
        let peer = async {
            let mut p = server.accept().await?;
            p.handshake(&Offer::default()).await?;
            p.send_raw(partial).await?;
            drop(p);
            Ok(Instant::now())
        };
        let (closed, (err, failed_at)) =
            with_peer(peer, doomed_client(&server.client_config(), &cancelled)).await;
        match &err {
            Error::Io(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ),
                "cut at {cut}: {e:?}"
            ),
            other => panic!("cut at {cut}: expected an I/O error, got {other:?}"),
        }
        assert!(
            failed_at.duration_since(closed) < Duration::from_secs(2),
            "cut at {cut}: noticed at once"
        );
        assert!(cancelled.happened());
    }
}

#[tokio::test]
async fn a_socket_closed_mid_handshake_is_an_io_error_not_a_timeout() {
    let server = FakeServer::bind().await.expect("bind");
    let start = method_bytes(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: "PLAIN".into(),
        locales: "en_US".into(),
    });
    let peer = async {
        let mut p = server.accept().await?;
        p.expect_protocol_header().await?;
        p.send_raw(&start[..start.len() / 2]).await?;
        Ok(())
    };
    let began = Instant::now();
    let config = server.client_config();
    let client = open_connection(&config, async |_| Ok::<_, Error>(()));
    let ((), result) = with_peer(peer, client).await;
    match result.expect_err("the handshake cannot finish") {
        Error::Io(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{e:?}"
        ),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "not the 5 s timeout"
    );
}

/// How far a stalling server gets through the handshake before it stops answering.
#[derive(Debug, Clone, Copy)]
enum StallAfter {
    /// Never answers the protocol header.
    ProtocolHeader,
    /// Reads `start-ok`, never sends `tune`.
    StartOk,
    /// Reads `tune-ok` and `open`, never sends `open-ok`.
    Open,
}

#[tokio::test]
async fn a_server_that_stops_answering_mid_handshake_hits_the_connect_timeout() {
    for stall in [
        StallAfter::ProtocolHeader,
        StallAfter::StartOk,
        StallAfter::Open,
    ] {
        let server = FakeServer::bind().await.expect("bind");
        let config = server
            .client_config()
            .with_connection_timeout(Duration::from_millis(500));
        let offer = Offer::default();
        let peer = async {
            let mut p = server.accept().await?;
            match stall {
                StallAfter::ProtocolHeader => p.expect_protocol_header().await?,
                StallAfter::StartOk => {
                    p.start(&offer).await?;
                }
                StallAfter::Open => {
                    p.start(&offer).await?;
                    p.send(0, offer.tune.clone()).await?;
                    p.recv_connection_method().await?;
                    p.recv_connection_method().await?;
                }
            }
            p.expect_eof().await
        };
        let began = Instant::now();
        let client = open_connection(&config, async |_| Ok::<_, Error>(()));
        let ((), result) = with_peer(peer, client).await;
        match result.expect_err("the handshake never finishes") {
            Error::ConnectTimeout { addr, after } => {
                assert_eq!(addr, server.addr().to_string(), "{stall:?}");
                assert_eq!(after, Duration::from_millis(500), "{stall:?}");
            }
            other => panic!("{stall:?}: expected ConnectTimeout, got {other:?}"),
        }
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(2),
            "{stall:?}: gave up after {took:?}"
        );
    }
}
