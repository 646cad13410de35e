//! The core's protocol rules without a socket: handshakes, hostile bytes.

use super::*;

const NOW: Now = Now {
    millis: 0,
    unix_secs: 0,
};

/// The methods the broker sent on connection `id`.
fn methods(core: &mut Core, id: u64) -> Vec<Method> {
    let mut out = BytesMut::new();
    while let Some(b) = core.poll_output(id, usize::MAX) {
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    if out.starts_with(&PROTOCOL_HEADER) {
        return Vec::new();
    }
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut found = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut out) {
        if let serena_proto::Frame::Method { method, .. } = frame {
            found.push(method);
        }
    }
    found
}

fn handshake(core: &mut Core) -> u64 {
    let id = core.handle_connect();
    let mut buf = BytesMut::from(&PROTOCOL_HEADER[..]);
    for m in [
        Method::from(connection::StartOk::default()),
        connection::TuneOk {
            channel_max: 0,
            frame_max: FRAME_MAX,
            heartbeat: 0,
        }
        .into(),
        connection::Open {
            virtual_host: "/".into(),
        }
        .into(),
    ] {
        encode_method(&mut buf, 0, &m).expect("encodes");
    }
    core.handle_input(id, &buf, NOW);
    let sent = methods(core, id);
    assert!(
        matches!(sent.last(), Some(Method::ConnectionOpenOk(_))),
        "{sent:?}"
    );
    id
}

#[test]
fn a_wrong_protocol_header_gets_ours_and_the_end() {
    let mut core = Core::new();
    let id = core.handle_connect();
    core.handle_input(id, b"HTTP/1.1 GET /", NOW);
    assert_eq!(
        core.poll_output(id, 64).as_deref(),
        Some(&PROTOCOL_HEADER[..])
    );
    assert_eq!(core.poll_output(id, 64), None);
}

#[test]
fn garbage_after_the_handshake_closes_the_connection_with_a_frame_error() {
    let mut core = Core::new();
    let id = handshake(&mut core);
    core.handle_input(id, &[1, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0x00], NOW);
    let sent = methods(&mut core, id);
    let Some(Method::ConnectionClose(close)) = sent.last() else {
        panic!("{sent:?}");
    };
    assert_eq!(close.reply_code, code::FRAME_ERROR);
}

#[test]
fn a_frame_on_an_unopened_channel_is_a_channel_error() {
    let mut core = Core::new();
    let id = handshake(&mut core);
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 5, &basic::Qos::default().into()).expect("encodes");
    core.handle_input(id, &buf, NOW);
    let sent = methods(&mut core, id);
    let Some(Method::ConnectionClose(close)) = sent.last() else {
        panic!("{sent:?}");
    };
    assert_eq!(close.reply_code, code::CHANNEL_ERROR);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small xorshift generator: deterministic, no dependency.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2_000 {
        let mut core = Core::new();
        let id = if round % 2 == 0 {
            handshake(&mut core)
        } else {
            core.handle_connect()
        };
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half the rounds start with a valid frame header so the decoder gets further.
        if round % 4 < 2 && bytes.len() > 7 {
            bytes[0] = 1;
            bytes[1] = 0;
            bytes[2] = (next() % 3) as u8;
        }
        core.handle_input(id, &bytes, NOW);
        let _ = methods(&mut core, id);
        core.handle_disconnect(id);
    }
}
