//! Golden byte vectors for whole frames, content headers, field tables and the short-string
//! limit, written by hand from the AMQP 0-9-1 spec and RabbitMQ's errata.
//!
//! Frames: type octet, channel (16 bits), payload size (32 bits), payload, frame-end 0xCE.
//! Content header payload: class id, weight 0, body size (64 bits), property flags (bit 15 is the
//! first property, `content-type`), then the present properties in order. Field tables: a 32-bit
//! byte length, then (short string key, type tag, value) entries. Every vector is checked both
//! ways: encode(value) == bytes and decode(bytes) == value.

#[allow(dead_code)] // each golden test binary uses its own part of the helpers
mod golden;

use bytes::{Bytes, BytesMut};
use golden::{case, cat, check_all, hex, lstr, sstr, table};
use serena::proto::frame::{self, encode_body, encode_header, encode_heartbeat, encode_method};
use serena::proto::method::{basic, connection, queue};
use serena::proto::{
    BasicProperties, ContentHeader, Decimal, EncodeError, FieldTable, FieldValue, Frame,
    FrameDecoder, Method,
};

/// Decodes every frame in `wire`, which must hold whole frames only.
fn decode_frames(wire: &[u8]) -> Vec<Frame> {
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    while !buf.is_empty() {
        match decoder.decode(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => panic!("decoder wants more bytes; {} left", buf.len()),
            Err(e) => panic!("decoder refused golden bytes: {e}"),
        }
    }
    frames
}

/// Checks a content header payload both ways, alone and inside a header frame on channel 9.
fn golden_header(header: ContentHeader, payload: &[u8]) {
    let mut buf = BytesMut::from(&[0xEE][..]);
    header.encode(&mut buf).expect("golden headers encode");
    assert_eq!(
        hex(&buf[1..]),
        hex(payload),
        "content header encode (got, expected)"
    );
    assert_eq!(buf[0], 0xEE, "encode overwrote what the buffer held");
    let decoded = ContentHeader::decode(Bytes::copy_from_slice(payload)).expect("golden decodes");
    assert_eq!(decoded, header);

    let size = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let wire = cat(&[&[0x02], &[0x00, 0x09], &size, payload, &[0xCE]]);
    let mut buf = BytesMut::new();
    encode_header(&mut buf, 9, &header).expect("golden headers encode");
    assert_eq!(hex(&buf), hex(&wire), "header frame encode (got, expected)");
    assert_eq!(decode_frames(&wire), [Frame::Header { channel: 9, header }]);
}

// ---------------------------------------------------------------------------------------------
// Frames

#[test]
fn heartbeat_frame() {
    let wire = [
        0x08, // frame type: heartbeat
        0x00, 0x00, // channel 0
        0x00, 0x00, 0x00, 0x00, // size 0
        0xCE, // frame-end
    ];
    let mut buf = BytesMut::new();
    encode_heartbeat(&mut buf);
    assert_eq!(&buf[..], &wire);
    let mut buf = BytesMut::new();
    Frame::Heartbeat.encode(&mut buf).unwrap();
    assert_eq!(&buf[..], &wire);
    assert_eq!(decode_frames(&wire), [Frame::Heartbeat]);
}

#[test]
fn method_frame_on_channel_zero() {
    let method = Method::from(connection::Tune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    });
    let wire = [
        0x01, // frame type: method
        0x00, 0x00, // channel 0
        0x00, 0x00, 0x00, 0x0C, // size 12
        0x00, 0x0A, 0x00, 0x1E, // connection.tune (10, 30)
        0x07, 0xFF, // channel-max 2047
        0x00, 0x02, 0x00, 0x00, // frame-max 131072
        0x00, 0x3C, // heartbeat 60
        0xCE, // frame-end
    ];
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 0, &method).unwrap();
    assert_eq!(hex(&buf), hex(&wire));
    assert_eq!(decode_frames(&wire), [Frame::Method { channel: 0, method }]);
}

/// A whole published message: method, content header and body frames on channel 261.
#[test]
fn publish_method_header_and_body_frames() {
    let method = Method::from(basic::Publish {
        exchange: "x".into(),
        routing_key: "rk".into(),
        mandatory: true,
        immediate: false,
    });
    let header = ContentHeader::basic(
        5,
        BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            ..Default::default()
        },
    );
    let method_frame = cat(&[
        &[0x01],                   // frame type: method
        &[0x01, 0x05],             // channel 261
        &[0x00, 0x00, 0x00, 0x0C], // size 12
        &[0x00, 0x3C, 0x00, 0x28], // basic.publish (60, 40)
        &[0x00, 0x00],             // reserved-1 (ticket)
        &[0x01, b'x'],             // exchange "x"
        &[0x02, b'r', b'k'],       // routing-key "rk"
        &[0x01],                   // mandatory=1 immediate=0
        &[0xCE],                   // frame-end
    ]);
    let header_frame = cat(&[
        &[0x02],                                           // frame type: content header
        &[0x01, 0x05],                                     // channel 261
        &[0x00, 0x00, 0x00, 0x1A],                         // size 26
        &[0x00, 0x3C],                                     // class 60 (basic)
        &[0x00, 0x00],                                     // weight 0
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05], // body size 5
        &[0x90, 0x00], // flags: content-type (bit 15), delivery-mode (bit 12)
        &[0x0A],       // content-type: length 10
        b"text/plain",
        &[0x02], // delivery-mode 2 (persistent)
        &[0xCE], // frame-end
    ]);
    let body_frame = cat(&[
        &[0x03],                   // frame type: body
        &[0x01, 0x05],             // channel 261
        &[0x00, 0x00, 0x00, 0x05], // size 5
        b"hello",                  // payload
        &[0xCE],                   // frame-end
    ]);
    let wire = cat(&[&method_frame, &header_frame, &body_frame]);

    let mut buf = BytesMut::new();
    encode_method(&mut buf, 261, &method).unwrap();
    encode_header(&mut buf, 261, &header).unwrap();
    encode_body(&mut buf, 261, b"hello").unwrap();
    assert_eq!(hex(&buf), hex(&wire));

    let frames = [
        Frame::Method {
            channel: 261,
            method,
        },
        Frame::Header {
            channel: 261,
            header,
        },
        Frame::Body {
            channel: 261,
            payload: Bytes::from_static(b"hello"),
        },
    ];
    let mut buf = BytesMut::new();
    for f in &frames {
        f.encode(&mut buf).unwrap();
    }
    assert_eq!(hex(&buf), hex(&wire), "Frame::encode");
    assert_eq!(decode_frames(&wire), frames);

    // One byte short of the method frame: more bytes needed, and the buffer is left alone.
    let mut partial = BytesMut::from(&method_frame[..method_frame.len() - 1]);
    assert_eq!(FrameDecoder::default().decode(&mut partial), Ok(None));
    assert_eq!(&partial[..], &method_frame[..method_frame.len() - 1]);
}

// ---------------------------------------------------------------------------------------------
// Content headers

#[test]
fn content_header_with_all_fourteen_properties() {
    let header = ContentHeader {
        class_id: 60,
        body_size: 123_456,
        properties: Box::new(BasicProperties {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(
                FieldTable::new()
                    .with("trace", "abc")
                    .with("x-attempt", FieldValue::I64(-2)),
            ),
            delivery_mode: Some(2),
            priority: Some(7),
            correlation_id: Some("corr-1".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("msg-42".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order.created".into()),
            user_id: Some("guest".into()),
            app_id: Some("golden-app".into()),
            cluster_id: Some("cluster-9".into()),
        }),
    };
    let payload = cat(&[
        &[0x00, 0x3C],                                     // class 60
        &[0x00, 0x00],                                     // weight 0
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xE2, 0x40], // body size 123456
        &[0xFF, 0xFC],                                     // flags: bits 15..2 all set
        &sstr("application/json"),                         // content-type
        &sstr("gzip"),                                     // content-encoding
        &table(&[
            // headers
            &sstr("trace"),
            b"S",
            &lstr(b"abc"),
            &sstr("x-attempt"),
            b"l",
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE], // -2
        ]),
        &[0x02],                                           // delivery-mode
        &[0x07],                                           // priority
        &sstr("corr-1"),                                   // correlation-id
        &sstr("amq.rabbitmq.reply-to"),                    // reply-to
        &sstr("60000"),                                    // expiration
        &sstr("msg-42"),                                   // message-id
        &[0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xF1, 0x00], // timestamp 1700000000
        &sstr("order.created"),                            // type
        &sstr("guest"),                                    // user-id
        &sstr("golden-app"),                               // app-id
        &sstr("cluster-9"), // cluster-id (reserved in 0-9-1, still carried)
    ]);
    golden_header(header, &payload);
}

/// Each property alone sets exactly its own flag bit, in spec order from bit 15 down.
#[test]
fn each_property_alone_sets_its_own_flag() {
    let none = BasicProperties::default();
    let cases: Vec<(BasicProperties, [u8; 2], Vec<u8>)> = vec![
        (
            BasicProperties {
                content_type: Some("a".into()),
                ..none.clone()
            },
            [0x80, 0x00],
            sstr("a"),
        ),
        (
            BasicProperties {
                content_encoding: Some("b".into()),
                ..none.clone()
            },
            [0x40, 0x00],
            sstr("b"),
        ),
        (
            BasicProperties {
                headers: Some(FieldTable::new()),
                ..none.clone()
            },
            [0x20, 0x00],
            vec![0x00, 0x00, 0x00, 0x00],
        ),
        (
            BasicProperties {
                delivery_mode: Some(1),
                ..none.clone()
            },
            [0x10, 0x00],
            vec![0x01],
        ),
        (
            BasicProperties {
                priority: Some(9),
                ..none.clone()
            },
            [0x08, 0x00],
            vec![0x09],
        ),
        (
            BasicProperties {
                correlation_id: Some("c".into()),
                ..none.clone()
            },
            [0x04, 0x00],
            sstr("c"),
        ),
        (
            BasicProperties {
                reply_to: Some("d".into()),
                ..none.clone()
            },
            [0x02, 0x00],
            sstr("d"),
        ),
        (
            BasicProperties {
                expiration: Some("e".into()),
                ..none.clone()
            },
            [0x01, 0x00],
            sstr("e"),
        ),
        (
            BasicProperties {
                message_id: Some("f".into()),
                ..none.clone()
            },
            [0x00, 0x80],
            sstr("f"),
        ),
        (
            BasicProperties {
                timestamp: Some(0x0102_0304_0506_0708),
                ..none.clone()
            },
            [0x00, 0x40],
            vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        ),
        (
            BasicProperties {
                kind: Some("g".into()),
                ..none.clone()
            },
            [0x00, 0x20],
            sstr("g"),
        ),
        (
            BasicProperties {
                user_id: Some("h".into()),
                ..none.clone()
            },
            [0x00, 0x10],
            sstr("h"),
        ),
        (
            BasicProperties {
                app_id: Some("i".into()),
                ..none.clone()
            },
            [0x00, 0x08],
            sstr("i"),
        ),
        (
            BasicProperties {
                cluster_id: Some("j".into()),
                ..none
            },
            [0x00, 0x04],
            sstr("j"),
        ),
    ];
    assert_eq!(cases.len(), 14);
    for (properties, flags, value) in cases {
        let payload = cat(&[
            &[0x00, 0x3C],                                     // class 60
            &[0x00, 0x00],                                     // weight 0
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03], // body size 3
            &flags,                                            // one flag bit
            &value,                                            // that property
        ]);
        golden_header(ContentHeader::basic(3, properties), &payload);
    }
}

/// Present-but-zero and present-but-empty properties are sent and come back as set.
#[test]
fn content_header_with_zero_and_empty_properties_present() {
    let header = ContentHeader::basic(
        0,
        BasicProperties {
            content_type: Some("".into()),
            headers: Some(FieldTable::new()),
            priority: Some(0),
            ..Default::default()
        },
    );
    let payload = cat(&[
        &[0x00, 0x3C],                                     // class 60
        &[0x00, 0x00],                                     // weight 0
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // body size 0
        &[0xA8, 0x00], // flags: content-type (15), headers (13), priority (11)
        &[0x00],       // content-type ""
        &[0x00, 0x00, 0x00, 0x00], // headers: empty table
        &[0x00],       // priority 0
    ]);
    golden_header(header, &payload);
}

#[test]
fn content_header_without_properties() {
    let header = ContentHeader::basic(0x0000_0001_0000_0000, BasicProperties::default());
    let payload = [
        0x00, 0x3C, // class 60
        0x00, 0x00, // weight 0
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // body size 4 GiB
        0x00, 0x00, // flags: none
    ];
    golden_header(header, &payload);
}

// ---------------------------------------------------------------------------------------------
// Field tables

/// A table with every field type of RabbitMQ's errata, a table inside an array inside the
/// table, and a table inside the table.
fn every_type_table() -> FieldTable {
    FieldTable::new()
        .with("bool", FieldValue::Bool(true))
        .with("off", FieldValue::Bool(false))
        .with("i8", FieldValue::I8(-2))
        .with("u8", FieldValue::U8(200))
        .with("i16", FieldValue::I16(-300))
        .with("u16", FieldValue::U16(40_000))
        .with("i32", FieldValue::I32(-70_000))
        .with("u32", FieldValue::U32(3_000_000_000))
        .with("i64", FieldValue::I64(-5_000_000_000))
        .with("u64", FieldValue::U64(0xF000_0000_0000_0001))
        .with("f32", FieldValue::F32(-1.5))
        .with("f64", FieldValue::F64(0.1))
        .with(
            "dec",
            FieldValue::Decimal(Decimal {
                scale: 2,
                value: 12_345,
            }),
        )
        .with("str", FieldValue::LongString("héllo".into()))
        .with(
            "bytes",
            FieldValue::ByteArray(Bytes::from_static(&[0x00, 0xFF, 0x10])),
        )
        .with("ts", FieldValue::Timestamp(1_700_000_000))
        .with("void", FieldValue::Void)
        .with(
            "arr",
            FieldValue::Array(vec![
                FieldValue::I32(1),
                FieldValue::LongString("x".into()),
                FieldValue::Table(
                    FieldTable::new()
                        .with("deep", FieldValue::Bool(false))
                        .with("n", FieldValue::I16(-1)),
                ),
                FieldValue::Array(vec![]),
            ]),
        )
        .with(
            "tbl",
            FieldValue::Table(FieldTable::new().with("inner", FieldValue::LongString("v".into()))),
        )
}

/// [`every_type_table`] on the wire, every length counted by hand.
fn every_type_table_bytes() -> Vec<u8> {
    cat(&[
        &[0x00, 0x00, 0x00, 0xDF], // table length 223
        // "bool": t true (7 bytes)
        &[0x04],
        b"bool",
        b"t",
        &[0x01],
        // "off": t false (6)
        &[0x03],
        b"off",
        b"t",
        &[0x00],
        // "i8": b -2 (5)
        &[0x02],
        b"i8",
        b"b",
        &[0xFE],
        // "u8": B 200 (5)
        &[0x02],
        b"u8",
        b"B",
        &[0xC8],
        // "i16": s -300 (7)
        &[0x03],
        b"i16",
        b"s",
        &[0xFE, 0xD4],
        // "u16": u 40000 (7)
        &[0x03],
        b"u16",
        b"u",
        &[0x9C, 0x40],
        // "i32": I -70000 (9)
        &[0x03],
        b"i32",
        b"I",
        &[0xFF, 0xFE, 0xEE, 0x90],
        // "u32": i 3000000000 (9)
        &[0x03],
        b"u32",
        b"i",
        &[0xB2, 0xD0, 0x5E, 0x00],
        // "i64": l -5000000000 (13)
        &[0x03],
        b"i64",
        b"l",
        &[0xFF, 0xFF, 0xFF, 0xFE, 0xD5, 0xFA, 0x0E, 0x00],
        // "u64": L 0xF000000000000001 (13)
        &[0x03],
        b"u64",
        b"L",
        &[0xF0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
        // "f32": f -1.5 (9)
        &[0x03],
        b"f32",
        b"f",
        &[0xBF, 0xC0, 0x00, 0x00],
        // "f64": d 0.1 (13)
        &[0x03],
        b"f64",
        b"d",
        &[0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A],
        // "dec": D scale 2, value 12345 = 123.45 (10)
        &[0x03],
        b"dec",
        b"D",
        &[0x02],
        &[0x00, 0x00, 0x30, 0x39],
        // "str": S "héllo", 6 bytes of UTF-8 (15)
        &[0x03],
        b"str",
        b"S",
        &[0x00, 0x00, 0x00, 0x06],
        &[0x68, 0xC3, 0xA9, 0x6C, 0x6C, 0x6F],
        // "bytes": x 00 ff 10 (14)
        &[0x05],
        b"bytes",
        b"x",
        &[0x00, 0x00, 0x00, 0x03],
        &[0x00, 0xFF, 0x10],
        // "ts": T 1700000000 (12)
        &[0x02],
        b"ts",
        b"T",
        &[0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xF1, 0x00],
        // "void": V, no value (6)
        &[0x04],
        b"void",
        b"V",
        // "arr": A of 33 bytes (42)
        &[0x03],
        b"arr",
        b"A",
        &[0x00, 0x00, 0x00, 0x21],
        b"I", // I 1 (5)
        &[0x00, 0x00, 0x00, 0x01],
        b"S", // S "x" (6)
        &[0x00, 0x00, 0x00, 0x01],
        b"x",
        b"F", // F of 12 bytes (17)
        &[0x00, 0x00, 0x00, 0x0C],
        &[0x04], // "deep": t false (7)
        b"deep",
        b"t",
        &[0x00],
        &[0x01], // "n": s -1 (5)
        b"n",
        b"s",
        &[0xFF, 0xFF],
        b"A", // A, empty (5)
        &[0x00, 0x00, 0x00, 0x00],
        // "tbl": F of 12 bytes (21)
        &[0x03],
        b"tbl",
        b"F",
        &[0x00, 0x00, 0x00, 0x0C],
        &[0x05], // "inner": S "v" (12)
        b"inner",
        b"S",
        &[0x00, 0x00, 0x00, 0x01],
        b"v",
    ])
}

#[test]
fn field_table_with_every_type_in_queue_declare() {
    let table_bytes = every_type_table_bytes();
    assert_eq!(table_bytes.len(), 4 + 223, "hand-counted table length");
    check_all(&[case(
        queue::Declare {
            queue: "golden.args".into(),
            durable: true,
            arguments: every_type_table(),
            ..Default::default()
        },
        cat(&[
            &[0x00, 0x32, 0x00, 0x0A], // queue.declare (50, 10)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("golden.args"),      // queue
            &[0b0000_0010],            // durable only
            &table_bytes,              // arguments
        ]),
    )]);
}

#[test]
fn field_table_with_every_type_in_message_headers() {
    let table_bytes = every_type_table_bytes();
    let payload = cat(&[
        &[0x00, 0x3C],                                     // class 60
        &[0x00, 0x00],                                     // weight 0
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02], // body size 2
        &[0x20, 0x00],                                     // flags: headers (bit 13)
        &table_bytes,                                      // headers
    ]);
    golden_header(
        ContentHeader::basic(
            2,
            BasicProperties::default().with_headers(every_type_table()),
        ),
        &payload,
    );
}

/// A decimal's value is signed (AMQP 0-9-1 section 4.2.5.5; the Java client and pika write it
/// so): pika sends `Decimal("-0.5")` as scale 1, value -5.
#[test]
fn decimal_minus_one_half_as_pika_sends_it() {
    let headers = table(&[&sstr("delta"), b"D", &[0x01], &[0xFF, 0xFF, 0xFF, 0xFB]]);
    let payload = cat(&[
        &[0x00, 0x3C],                                     // class 60
        &[0x00, 0x00],                                     // weight 0
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // body size 0
        &[0x20, 0x00],                                     // flags: headers (bit 13)
        &headers,
    ]);
    let header = ContentHeader::decode(Bytes::copy_from_slice(&payload)).expect("decodes");
    let delta = header
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get("delta"));
    let Some(FieldValue::Decimal(d)) = delta else {
        panic!("no decimal: {header:?}");
    };
    assert_eq!((d.scale, i64::from(d.value)), (1, -5));
    assert_eq!(d.to_string(), "-0.5");
    // Both ways: the value encodes to pika's bytes, and they decode to it.
    let minus_one_half = Decimal {
        scale: 1,
        value: -5,
    };
    golden_header(
        ContentHeader::basic(
            0,
            BasicProperties::default()
                .with_headers(FieldTable::new().with("delta", minus_one_half)),
        ),
        &payload,
    );
}

// ---------------------------------------------------------------------------------------------
// Short strings: at most 255 bytes

/// Encodes `method` into a buffer that already holds bytes; the error must name `context` and the
/// buffer must be left as it was, also when encoded as a frame.
fn refused(method: impl Into<Method>, context: &'static str, len: usize) {
    let method = method.into();
    let before = b"earlier frame bytes";
    let mut buf = BytesMut::from(&before[..]);
    assert_eq!(
        method.encode(&mut buf),
        Err(EncodeError::ShortStringTooLong { context, len })
    );
    assert_eq!(&buf[..], before, "buffer changed by a failed encode");
    assert_eq!(
        encode_method(&mut buf, 1, &method),
        Err(EncodeError::ShortStringTooLong { context, len })
    );
    assert_eq!(&buf[..], before, "buffer changed by a failed frame encode");
}

#[test]
fn short_string_over_255_bytes_is_refused_naming_the_field() {
    refused(
        queue::Declare {
            queue: "q".repeat(256).into(),
            ..Default::default()
        },
        "queue.declare.queue",
        256,
    );
    // 128 two-byte characters: 256 bytes, though only 128 chars.
    refused(
        queue::Declare {
            queue: "é".repeat(128).into(),
            ..Default::default()
        },
        "queue.declare.queue",
        256,
    );
    // A later field: the earlier ones were written already and must be taken back.
    refused(
        basic::Publish {
            exchange: "golden.pub".into(),
            routing_key: "k".repeat(300).into(),
            ..Default::default()
        },
        "basic.publish.routing_key",
        300,
    );
    // A table key.
    refused(
        queue::Declare {
            queue: "q".into(),
            arguments: FieldTable::new().with("a".repeat(256), 1_i32),
            ..Default::default()
        },
        "queue.declare.arguments",
        256,
    );
}

#[test]
fn short_string_over_255_bytes_in_a_property_is_refused() {
    let header = ContentHeader::basic(
        1,
        BasicProperties {
            content_type: Some("text/plain".into()),
            reply_to: Some("r".repeat(256).into()),
            ..Default::default()
        },
    );
    let before = b"earlier frame bytes";
    let mut buf = BytesMut::from(&before[..]);
    let err = EncodeError::ShortStringTooLong {
        context: "basic properties.reply_to",
        len: 256,
    };
    assert_eq!(header.encode(&mut buf), Err(err.clone()));
    assert_eq!(&buf[..], before);
    assert_eq!(frame::encode_header(&mut buf, 1, &header), Err(err));
    assert_eq!(&buf[..], before);
}

#[test]
fn short_string_of_exactly_255_bytes_is_fine() {
    let name = "q".repeat(255);
    check_all(&[case(
        queue::Declare {
            queue: name.as_str().into(),
            ..Default::default()
        },
        cat(&[
            &[0x00, 0x32, 0x00, 0x0A], // queue.declare (50, 10)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &[0xFF],                   // queue: length 255
            name.as_bytes(),           // ... 255 bytes of "q"
            &[0x00],                   // no bits set
            &[0x00, 0x00, 0x00, 0x00], // arguments: empty table
        ]),
    )]);
    // 127 two-byte characters and one one-byte character: 255 bytes.
    let name = format!("{}a", "é".repeat(127));
    assert_eq!(name.len(), 255);
    check_all(&[case(
        basic::ConsumeOk {
            consumer_tag: name.as_str().into(),
        },
        cat(&[
            &[0x00, 0x3C, 0x00, 0x15], // basic.consume-ok (60, 21)
            &[0xFF],                   // consumer-tag: length 255
            name.as_bytes(),
        ]),
    )]);
    // A 255-byte table key.
    let key = "k".repeat(255);
    check_all(&[case(
        queue::Declare {
            queue: "q".into(),
            arguments: FieldTable::new().with(key.as_str(), FieldValue::Void),
            ..Default::default()
        },
        cat(&[
            &[0x00, 0x32, 0x00, 0x0A], // queue.declare (50, 10)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &[0x01, b'q'],             // queue "q"
            &[0x00],                   // no bits set
            &[0x00, 0x00, 0x01, 0x01], // arguments: 257 bytes
            &[0xFF],                   // key: length 255
            key.as_bytes(),
            b"V", // void
        ]),
    )]);
}
