//! Frame decoder behaviour: "need more bytes" (`Ok(None)`, buffer untouched) against "invalid"
//! (a typed `DecodeError`), frame streams cut at every byte, `frame_max` enforced from the
//! header alone, and the errors method and content header parsing give for broken payloads.

use bytes::{BufMut, Bytes, BytesMut};
use serena::proto::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, encode_heartbeat,
};
use serena::proto::method::{basic, channel, queue};
use serena::proto::{
    BasicProperties, ContentHeader, DecodeError, FieldTable, FieldValue, Frame, FrameDecoder,
    Method, content,
};

/// A frame with the given type, channel and payload, and a correct size and frame-end.
fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(frame_type);
    buf.put_u16(channel);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
    buf
}

/// A method payload: class id, method id, then `args` as given.
fn method_payload(class_id: u16, method_id: u16, args: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u16(class_id);
    p.put_u16(method_id);
    p.put_slice(args);
    p.freeze()
}

/// Decodes frames until the decoder asks for more, checking that asking for more leaves the
/// buffer exactly as it was.
fn drain(decoder: &FrameDecoder, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    loop {
        let before = buf.clone();
        match decoder.decode(buf).expect("a valid stream") {
            Some(f) => out.push(f),
            None => {
                assert_eq!(*buf, before, "Ok(None) must leave the buffer untouched");
                return;
            }
        }
    }
}

/// A stream of every frame kind: a heartbeat, a method with a table, a delivery split over
/// two body frames, a delivery with an empty body, and a close.
fn sample_stream() -> (BytesMut, Vec<Frame>) {
    let declare = Method::from(queue::Declare {
        queue: "orders".into(),
        durable: true,
        arguments: FieldTable::new()
            .with("x-queue-type", "quorum")
            .with("x-max-length", 10_000i64)
            .with(
                "x-nested",
                FieldTable::new().with("list", vec![FieldValue::Void]),
            ),
        ..Default::default()
    });
    let deliver = Method::from(basic::Deliver {
        consumer_tag: "ctag".into(),
        delivery_tag: 7,
        redelivered: true,
        exchange: "ex".into(),
        routing_key: "rk".into(),
    });
    let props = BasicProperties::default()
        .with_content_type("text/plain")
        .with_priority(3);
    let body = vec![b'x'; 5000];
    let close = Method::from(channel::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    });

    let mut wire = BytesMut::new();
    encode_heartbeat(&mut wire);
    Frame::Method {
        channel: 1,
        method: declare.clone(),
    }
    .encode(&mut wire)
    .unwrap();
    content::encode_content(&mut wire, 2, &deliver, &props, &body, 4096).unwrap();
    content::encode_content(&mut wire, 2, &deliver, &props, &[], 4096).unwrap();
    Frame::Method {
        channel: 1,
        method: close.clone(),
    }
    .encode(&mut wire)
    .unwrap();

    let header = |size: u64| Frame::Header {
        channel: 2,
        header: ContentHeader::basic(size, props.clone()),
    };
    let frames = vec![
        Frame::Heartbeat,
        Frame::Method {
            channel: 1,
            method: declare,
        },
        Frame::Method {
            channel: 2,
            method: deliver.clone(),
        },
        header(5000),
        Frame::Body {
            channel: 2,
            payload: Bytes::from(vec![b'x'; 4088]),
        },
        Frame::Body {
            channel: 2,
            payload: Bytes::from(vec![b'x'; 912]),
        },
        Frame::Method {
            channel: 2,
            method: deliver,
        },
        header(0),
        Frame::Method {
            channel: 1,
            method: close,
        },
    ];
    (wire, frames)
}

#[test]
fn a_stream_split_at_every_byte_decodes_the_same() {
    let (wire, expected) = sample_stream();
    let decoder = FrameDecoder::default();
    for cut in 0..=wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut frames = Vec::new();
        drain(&decoder, &mut buf, &mut frames);
        buf.extend_from_slice(&wire[cut..]);
        drain(&decoder, &mut buf, &mut frames);
        assert!(buf.is_empty(), "cut at {cut}: {} bytes left", buf.len());
        assert_eq!(frames, expected, "cut at {cut}");
    }
}

#[test]
fn a_stream_fed_one_byte_at_a_time_decodes_the_same() {
    let (wire, expected) = sample_stream();
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &b in &wire[..] {
        buf.put_u8(b);
        drain(&decoder, &mut buf, &mut frames);
    }
    assert!(buf.is_empty());
    assert_eq!(frames, expected);
}

#[test]
fn many_frames_in_one_buffer_decode_one_after_another() {
    let (mut buf, expected) = sample_stream();
    let decoder = FrameDecoder::default();
    for want in &expected {
        let len = decoder
            .check(&buf)
            .unwrap()
            .expect("a whole frame is there");
        let before = buf.len();
        let got = decoder.decode(&mut buf).unwrap().expect("a whole frame");
        assert_eq!(&got, want);
        assert_eq!(buf.len(), before - len, "decode takes exactly one frame");
    }
    assert!(buf.is_empty());
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn a_bad_frame_end_is_invalid_once_it_arrives() {
    let mut buf = raw_frame(FRAME_BODY, 9, b"abc");
    let last = buf.len() - 1;
    buf[last] = 0x00;
    let decoder = FrameDecoder::default();
    let mut partial = BytesMut::from(&buf[..last]);
    assert_eq!(decoder.decode(&mut partial), Ok(None));
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::BadFrameEnd {
            channel: 9,
            found: 0x00
        })
    );
    // A frame-end that is off by one (the payload is one byte longer than announced).
    let mut buf = raw_frame(FRAME_BODY, 9, b"abc");
    buf[6] = 2;
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::BadFrameEnd {
            channel: 9,
            found: b'c'
        })
    );
}

#[test]
fn an_unknown_frame_type_is_invalid_from_its_header() {
    let decoder = FrameDecoder::default();
    for frame_type in [0u8, 4, 5, 7, 9, b'B', 0xce, 0xff] {
        let full = raw_frame(frame_type, 1, b"payload");
        // The seven header bytes are enough to tell.
        let mut header = BytesMut::from(&full[..7]);
        assert_eq!(
            decoder.decode(&mut header),
            Err(DecodeError::UnknownFrameType {
                frame_type,
                channel: 1
            }),
            "type {frame_type}"
        );
        let mut full = full;
        assert!(matches!(
            decoder.decode(&mut full),
            Err(DecodeError::UnknownFrameType { .. })
        ));
    }
}

#[test]
fn heartbeats_must_be_empty_and_on_channel_zero() {
    let decoder = FrameDecoder::default();
    let mut ok = raw_frame(FRAME_HEARTBEAT, 0, b"");
    assert_eq!(decoder.decode(&mut ok), Ok(Some(Frame::Heartbeat)));
    assert!(ok.is_empty());

    let on_three = raw_frame(FRAME_HEARTBEAT, 3, b"");
    let with_payload = raw_frame(FRAME_HEARTBEAT, 0, b"hi");
    for (frame, channel, size) in [(on_three, 3, 0), (with_payload, 0, 2)] {
        let mut header = BytesMut::from(&frame[..7]);
        assert_eq!(
            decoder.decode(&mut header),
            Err(DecodeError::BadHeartbeat { channel, size })
        );
        let mut frame = frame;
        assert_eq!(
            decoder.decode(&mut frame),
            Err(DecodeError::BadHeartbeat { channel, size })
        );
    }
}

#[test]
fn a_peer_refusing_our_protocol_version_is_unsupported() {
    let decoder = FrameDecoder::default();
    let cases: [(&[u8; 8], [u8; 4]); 2] = [
        (b"AMQP\x00\x00\x09\x00", [0, 0, 9, 0]),
        (b"AMQP\x01\x01\x00\x0a", [1, 1, 0, 10]),
    ];
    for (answer, [protocol_id, major, minor, revision]) in cases {
        // Any strict prefix is "need more", and leaves the buffer untouched.
        for n in 1..answer.len() {
            let mut buf = BytesMut::from(&answer[..n]);
            assert_eq!(decoder.decode(&mut buf), Ok(None), "prefix of {n} bytes");
            assert_eq!(&buf[..], &answer[..n]);
        }
        let mut buf = BytesMut::from(&answer[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::UnsupportedProtocol {
                protocol_id,
                major,
                minor,
                revision
            })
        );
    }
    let mut amq = BytesMut::from(&b"AMQ"[..]);
    assert_eq!(decoder.decode(&mut amq), Ok(None));
    assert_eq!(&amq[..], b"AMQ");
    // Something that starts like a protocol header but is not one is no frame either.
    let mut other = BytesMut::from(&b"AMX"[..]);
    assert!(matches!(
        decoder.decode(&mut other),
        Err(DecodeError::UnknownFrameType {
            frame_type: b'A',
            ..
        })
    ));
}

#[test]
fn a_frame_over_frame_max_is_refused_from_its_header_alone() {
    let mut decoder = FrameDecoder::new(4096);
    for frame_type in [FRAME_METHOD, FRAME_HEADER, FRAME_BODY] {
        // 4088 payload bytes make a frame of exactly 4096: fine, waiting for the payload.
        let mut header = BytesMut::new();
        header.put_u8(frame_type);
        header.put_u16(5);
        header.put_u32(4088);
        assert_eq!(decoder.decode(&mut header), Ok(None));
        assert_eq!(header.len(), 7);

        // One more byte is refused before any of the payload is there.
        let mut header = BytesMut::new();
        header.put_u8(frame_type);
        header.put_u16(5);
        header.put_u32(4089);
        assert_eq!(
            decoder.decode(&mut header),
            Err(DecodeError::FrameTooLarge {
                channel: 5,
                size: 4097,
                frame_max: 4096
            })
        );
    }
    let mut huge = BytesMut::from(&[FRAME_BODY, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        decoder.decode(&mut huge),
        Err(DecodeError::FrameTooLarge {
            channel: 1,
            size: u64::from(u32::MAX) + 8,
            frame_max: 4096
        })
    );

    // A raised limit lets the same frame through.
    let big = raw_frame(FRAME_BODY, 5, &[7; 5000]);
    assert!(matches!(
        decoder.check(&big),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    decoder.set_frame_max(131_072);
    assert_eq!(decoder.check(&big), Ok(Some(big.len())));
    // Limits below the AMQP minimum are raised to it.
    assert_eq!(FrameDecoder::new(0).frame_max(), 4096);
}

#[test]
fn unknown_methods_name_their_ids() {
    for (class_id, method_id) in [(60, 999), (99, 10), (10, 12), (0, 0), (40, 41), (30, 10)] {
        assert_eq!(
            Method::decode(method_payload(class_id, method_id, &[])),
            Err(DecodeError::UnknownMethod {
                class_id,
                method_id
            })
        );
    }
    // The same through the frame decoder.
    let mut buf = raw_frame(FRAME_METHOD, 1, &method_payload(60, 999, b"args"));
    assert_eq!(
        FrameDecoder::default().decode(&mut buf),
        Err(DecodeError::UnknownMethod {
            class_id: 60,
            method_id: 999
        })
    );
}

#[test]
fn truncated_arguments_name_the_field() {
    fn truncated<T>(
        context: &'static str,
        needed: usize,
        available: usize,
    ) -> Result<T, DecodeError> {
        Err(DecodeError::Truncated {
            context,
            needed,
            available,
        })
    }
    assert_eq!(
        Method::decode(Bytes::from_static(&[0])),
        truncated("method frame class id", 2, 1)
    );
    assert_eq!(
        Method::decode(Bytes::from_static(&[0, 50, 0])),
        truncated("method frame method id", 2, 1)
    );
    // queue.declare: reserved short, then the queue name's length octet is missing ...
    assert_eq!(
        Method::decode(method_payload(50, 10, &[0, 0])),
        truncated("queue.declare.queue", 1, 0)
    );
    // ... or the name is shorter than announced ...
    assert_eq!(
        Method::decode(method_payload(50, 10, &[0, 0, 5, b'a', b'b'])),
        truncated("queue.declare.queue", 5, 2)
    );
    // ... or the bits are missing, or the arguments table is cut short.
    assert_eq!(
        Method::decode(method_payload(50, 10, &[0, 0, 1, b'q'])),
        truncated("queue.declare.passive", 1, 0)
    );
    assert_eq!(
        Method::decode(method_payload(
            50,
            10,
            &[0, 0, 1, b'q', 0, 0, 0, 0, 100, 1, 2, 3]
        )),
        truncated("queue.declare.arguments", 100, 3)
    );
    assert_eq!(
        Method::decode(method_payload(60, 80, &[0, 0, 0, 0])),
        truncated("basic.ack.delivery_tag", 8, 4)
    );
    // A value inside a table that runs past the table's end.
    let table = [0, 0, 0, 4, 1, b'k', b'I', 0];
    let mut args = vec![0, 0, 1, b'q', 0];
    args.extend_from_slice(&table);
    assert_eq!(
        Method::decode(method_payload(50, 10, &args)),
        truncated("queue.declare.arguments", 4, 1)
    );
    // Content headers name their fields too.
    assert_eq!(
        ContentHeader::decode(Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0])),
        truncated("content header body size", 8, 3)
    );
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0];
    header.extend_from_slice(&[9, b'a']);
    assert_eq!(
        ContentHeader::decode(Bytes::from(header)),
        truncated("basic properties.content_type", 9, 1)
    );
}

#[test]
fn bytes_after_the_last_field_are_trailing() {
    assert_eq!(
        Method::decode(method_payload(60, 11, &[0])),
        Err(DecodeError::TrailingBytes {
            context: "basic.qos-ok",
            extra: 1
        })
    );
    assert_eq!(
        Method::decode(method_payload(
            60,
            80,
            &[0, 0, 0, 0, 0, 0, 0, 1, 1, 0xaa, 0xbb]
        )),
        Err(DecodeError::TrailingBytes {
            context: "basic.ack",
            extra: 2
        })
    );
    let mut header = BytesMut::new();
    ContentHeader::basic(3, BasicProperties::default().with_priority(1))
        .encode(&mut header)
        .unwrap();
    header.put_slice(&[1, 2]);
    assert_eq!(
        ContentHeader::decode(header.freeze()),
        Err(DecodeError::TrailingBytes {
            context: "content header",
            extra: 2
        })
    );
}

#[test]
fn invalid_utf8_in_a_short_string_is_refused() {
    assert_eq!(
        Method::decode(method_payload(60, 21, &[2, 0xff, 0xfe])),
        Err(DecodeError::InvalidUtf8 {
            context: "basic.consume-ok.consumer_tag"
        })
    );
    // A table key.
    let args = [0, 0, 1, b'q', 0, 0, 0, 0, 3, 1, 0xc3, b'V'];
    assert_eq!(
        Method::decode(method_payload(50, 10, &args)),
        Err(DecodeError::InvalidUtf8 {
            context: "queue.declare.arguments"
        })
    );
    // A property.
    let header = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 1, 0x80];
    assert_eq!(
        ContentHeader::decode(Bytes::copy_from_slice(&header)),
        Err(DecodeError::InvalidUtf8 {
            context: "basic properties.content_type"
        })
    );
    // Long strings are bytes and need not be UTF-8.
    let secure = method_payload(10, 20, &[0, 0, 0, 2, 0xff, 0xfe]);
    assert!(Method::decode(secure).is_ok());
}

#[test]
fn an_unknown_field_type_tag_is_refused() {
    for tag in [b'Z', b'?', 0, 0xff, b'U', b'c'] {
        let args = [0, 0, 1, b'q', 0, 0, 0, 0, 3, 1, b'k', tag];
        assert_eq!(
            Method::decode(method_payload(50, 10, &args)),
            Err(DecodeError::UnknownFieldType {
                context: "queue.declare.arguments",
                tag
            }),
            "tag {tag:#04x}"
        );
    }
    // Inside an array inside the message headers: {"a": ['!' ...]}.
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
    header.extend_from_slice(&[0, 0, 0, 8, 1, b'a', b'A', 0, 0, 0, 1, b'!']);
    assert_eq!(
        ContentHeader::decode(Bytes::from(header)),
        Err(DecodeError::UnknownFieldType {
            context: "basic properties.headers",
            tag: b'!'
        })
    );
}

#[test]
fn property_flags_no_property_uses_are_refused() {
    let header = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0b10];
    assert_eq!(
        ContentHeader::decode(Bytes::copy_from_slice(&header)),
        Err(DecodeError::UnknownProperties { flags: 0b10 })
    );
}
