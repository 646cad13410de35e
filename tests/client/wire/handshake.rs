//! Handshake, PLAIN and AMQPLAIN logins, tuning, refused logins and vhosts, heartbeats.

use serena::proto::connection::{Tuning, amqplain_response, server_has_capability};
use serena::proto::method::connection;
use serena::proto::{BasicProperties, FieldTable, FieldValue, LongString, Method};
use serena_tests::unique_name;
use serena_tests::wire::{CLIENT_TUNING, GUEST, Login, WireConn};

use super::{TestResult, closed_connection, declare_queue, delete_queue, get};

#[test]
fn handshake_plain_tune_open_and_clean_close() -> TestResult {
    let mut conn = WireConn::connect()?;

    let start = expect!(conn.recv_method(0)?, Method::ConnectionStart(s) => s);
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let props = &start.server_properties;
    assert_eq!(
        props.get("product").and_then(FieldValue::as_str),
        Some("RabbitMQ")
    );
    let version = props
        .get("version")
        .and_then(FieldValue::as_str)
        .unwrap_or_default();
    assert!(version.starts_with("3."), "server version {version:?}");
    let capabilities = expect!(props.get("capabilities"), Some(FieldValue::Table(t)) => t);
    assert_eq!(
        capabilities.get("publisher_confirms"),
        Some(&FieldValue::Bool(true))
    );
    for capability in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert!(
            server_has_capability(props, capability),
            "{capability}: {props:?}"
        );
    }
    let mechanisms: Vec<&[u8]> = start.mechanisms.as_bytes().split(|b| *b == b' ').collect();
    assert!(
        mechanisms.contains(&&b"PLAIN"[..]),
        "{:?}",
        start.mechanisms
    );
    assert!(
        mechanisms.contains(&&b"AMQPLAIN"[..]),
        "{:?}",
        start.mechanisms
    );
    assert!(start.locales.as_str().is_some_and(|l| l.contains("en_US")));

    let client_properties = serena_tests::wire::client_properties("wire-handshake");
    let capabilities =
        expect!(client_properties.get("capabilities"), Some(FieldValue::Table(t)) => t);
    for capability in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(capabilities.get(capability), Some(&FieldValue::Bool(true)));
    }
    conn.send(
        0,
        connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        },
    )?;

    let tune = expect!(conn.recv_method(0)?, Method::ConnectionTune(t) => t);
    assert!(tune.frame_max >= 4096, "{tune:?}");
    let wanted = Tuning {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 30,
    };
    let tuning = conn.tune(&tune, wanted)?;
    let smaller = |ours: u32, theirs: u32| if theirs == 0 { ours } else { ours.min(theirs) };
    assert_eq!(tuning.frame_max, smaller(131_072, tune.frame_max));
    assert_eq!(
        u32::from(tuning.heartbeat),
        smaller(30, u32::from(tune.heartbeat))
    );
    assert_eq!(
        u32::from(tuning.channel_max),
        smaller(2047, u32::from(tune.channel_max))
    );
    assert_eq!(conn.frame_max(), tuning.frame_max);

    let open = connection::Open {
        virtual_host: "/".into(),
    };
    expect!(conn.rpc(0, open)?, Method::ConnectionOpenOk(_));

    // The connection works: a channel opens and closes.
    conn.open_channel(1)?;
    conn.close_channel(1)?;
    // close / close-ok, then the broker closes its side once we close ours.
    conn.close()?;
    Ok(())
}

#[test]
fn amqplain_login_and_a_smaller_frame_max() -> TestResult {
    let mut conn = WireConn::connect()?;
    let response = amqplain_response(GUEST, GUEST)?;
    // The AMQPLAIN response is a field table's entries without the table's length prefix.
    assert_eq!(
        response.as_bytes().as_ref(),
        b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
    );
    let login = Login {
        mechanism: "AMQPLAIN",
        response,
    };
    // Ask for the smallest frame_max and no heartbeats: the broker must keep to both.
    let wanted = Tuning {
        channel_max: 16,
        frame_max: 4096,
        heartbeat: 0,
    };
    let (_, tuning) = conn.handshake(&login, "wire-amqplain", wanted, "/")?;
    assert_eq!(tuning.frame_max, 4096);
    assert_eq!(tuning.heartbeat, 0);
    assert_eq!(tuning.channel_max, 16);

    // A body of several 4096-byte frames both ways: the decoder refuses any larger frame.
    conn.open_channel(1)?;
    let q = unique_name("amqplain");
    // Gone a minute after this test, whatever happens to it.
    let expires = FieldTable::new().with("x-expires", 60_000i32);
    declare_queue(&mut conn, 1, &q, expires)?;
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    conn.publish(1, "", &q, &BasicProperties::default(), &body)?;
    let frames_before = conn.body_frames();
    let (_, _, got) = get(&mut conn, 1, &q)?.expect("the message");
    assert_eq!(&got[..], &body[..]);
    assert_eq!(
        conn.body_frames() - frames_before,
        20_000u64.div_ceil(4096 - 8)
    );
    assert_eq!(delete_queue(&mut conn, 1, &q)?, 0);
    conn.close()?;
    Ok(())
}

#[test]
fn wrong_password_is_refused_with_403() -> TestResult {
    let amqplain = Login {
        mechanism: "AMQPLAIN",
        response: amqplain_response(GUEST, "not-the-password")?,
    };
    for login in [Login::plain(GUEST, "not-the-password"), amqplain] {
        let mut conn = WireConn::connect()?;
        conn.start(&login, "wire-bad-password")?;
        // We announced authentication_failure_close, so the broker says why before closing.
        let close = closed_connection(conn.recv_method(0)?);
        assert_eq!(close.reply_code, 403, "{}: {close:?}", login.mechanism);
        assert!(close.reply_text.starts_with("ACCESS_REFUSED"), "{close:?}");
        // The broker names the mechanism it checked the response with.
        let mechanism = format!("mechanism {}.", login.mechanism);
        assert!(close.reply_text.contains(&mechanism), "{close:?}");
        assert_eq!((close.class_id, close.method_id), (0, 0), "{close:?}");
        conn.ack_connection_close()?;
    }
    Ok(())
}

#[test]
fn unknown_vhost_is_refused_with_530() -> TestResult {
    let mut conn = WireConn::connect()?;
    conn.start(&Login::plain(GUEST, GUEST), "wire-bad-vhost")?;
    conn.recv_tune(CLIENT_TUNING)?;
    let vhost = unique_name("no-such-vhost");
    let open = connection::Open {
        virtual_host: vhost.as_str().into(),
    };
    let close = closed_connection(conn.rpc(0, open)?);
    assert_eq!(close.reply_code, 530, "{close:?}");
    assert!(close.reply_text.starts_with("NOT_ALLOWED"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (10, 40), "{close:?}");
    conn.ack_connection_close()?;
    Ok(())
}

#[test]
fn heartbeats_from_the_broker_are_decoded_and_skipped() -> TestResult {
    let mut conn = WireConn::connect()?;
    let wanted = Tuning {
        heartbeat: 1,
        ..CLIENT_TUNING
    };
    let (_, tuning) = conn.handshake(&Login::plain(GUEST, GUEST), "wire-heartbeat", wanted, "/")?;
    assert_eq!(tuning.heartbeat, 1);
    // Stay idle (but for our own heartbeats) long enough for the broker to send some.
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        conn.send_heartbeat()?;
    }
    // They wait in the socket ahead of the open-ok, and recv skips them.
    conn.open_channel(1)?;
    assert!(conn.heartbeats() >= 1, "no heartbeat in 2.5 s");
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}
