//! The codec's hard limits: field tables and arrays nest at most `MAX_NESTING` deep (on decode
//! and on encode, without deep recursion even for hostile input), and short strings hold at
//! most 255 bytes, refused on encode with the output buffer left exactly as it was.

use bytes::{BufMut, Bytes, BytesMut};
use serena::proto::frame::{FRAME_HEADER, FRAME_METHOD, encode_header, encode_heartbeat};
use serena::proto::method::{basic, queue};
use serena::proto::table::MAX_NESTING;
use serena::proto::{
    BasicProperties, ContentHeader, DecodeError, EncodeError, FieldTable, FieldValue, Frame,
    FrameDecoder, Method, ShortString, content, frame,
};

/// What each level below the top table is.
#[derive(Clone, Copy, Debug)]
enum Nesting {
    Tables,
    Arrays,
    Alternating,
}

impl Nesting {
    fn is_array(self, level: usize) -> bool {
        match self {
            Nesting::Tables => false,
            Nesting::Arrays => level > 0,
            Nesting::Alternating => level % 2 == 1,
        }
    }
}

/// The wire form (32-bit length, then entries) of a table with `levels` containers nested in
/// one another, the table itself counting as the first; the innermost is empty. Built without
/// recursion, so it can be any depth.
fn nested_wire(levels: usize, nesting: Nesting) -> Vec<u8> {
    // Bytes before a child's length: a key when the parent is a table, then the type tag.
    let entry_prefix = |level: usize| if nesting.is_array(level) { 1 } else { 3 };
    let mut sizes = vec![0u32; levels];
    for level in (0..levels - 1).rev() {
        sizes[level] = entry_prefix(level) + 4 + sizes[level + 1];
    }
    let mut wire = Vec::with_capacity(4 + sizes[0] as usize);
    wire.extend_from_slice(&sizes[0].to_be_bytes());
    for level in 0..levels - 1 {
        if !nesting.is_array(level) {
            wire.extend_from_slice(&[1, b'k']);
        }
        wire.push(if nesting.is_array(level + 1) {
            b'A'
        } else {
            b'F'
        });
        wire.extend_from_slice(&sizes[level + 1].to_be_bytes());
    }
    wire
}

/// The same nesting as a value, the top table included, built without recursion.
fn nested_table(levels: usize, nesting: Nesting) -> FieldTable {
    let mut inner = if nesting.is_array(levels - 1) {
        FieldValue::Array(Vec::new())
    } else {
        FieldValue::Table(FieldTable::new())
    };
    for level in (1..levels - 1).rev() {
        inner = if nesting.is_array(level) {
            FieldValue::Array(vec![inner])
        } else {
            FieldValue::Table(FieldTable::new().with("k", inner))
        };
    }
    if levels == 1 {
        FieldTable::new()
    } else {
        FieldTable::new().with("k", inner)
    }
}

/// Drops a value of any depth without the recursion of its `Drop`.
fn drop_flat(table: FieldTable) {
    let mut stack: Vec<FieldValue> = table.into_iter().map(|(_, v)| v).collect();
    while let Some(v) = stack.pop() {
        match v {
            FieldValue::Array(items) => stack.extend(items),
            FieldValue::Table(t) => stack.extend(t.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// `queue.declare` with the given wire bytes as its arguments table.
fn declare_with_arguments(arguments: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_slice(&[0, 50, 0, 10, 0, 0, 1, b'q', 0]);
    p.put_slice(arguments);
    p.freeze()
}

/// A content header with only `headers` set, to the given wire bytes.
fn header_with_headers(table: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0]);
    p.put_slice(table);
    p.freeze()
}

fn declare(arguments: FieldTable) -> Method {
    queue::Declare {
        queue: "q".into(),
        arguments,
        ..Default::default()
    }
    .into()
}

const ALL_NESTINGS: [Nesting; 3] = [Nesting::Tables, Nesting::Arrays, Nesting::Alternating];

#[test]
fn nesting_up_to_the_limit_round_trips() {
    for nesting in ALL_NESTINGS {
        let table = nested_table(MAX_NESTING, nesting);
        let method = declare(table.clone());
        let mut wire = BytesMut::new();
        method.encode(&mut wire).unwrap();
        // The hand-built wire form and the encoder agree.
        assert_eq!(
            &wire[9..],
            &nested_wire(MAX_NESTING, nesting)[..],
            "{nesting:?}"
        );
        assert_eq!(Method::decode(wire.freeze()), Ok(method), "{nesting:?}");
    }
}

#[test]
fn nesting_past_the_limit_is_refused_on_decode() {
    for nesting in ALL_NESTINGS {
        let wire = nested_wire(MAX_NESTING + 1, nesting);
        assert_eq!(
            Method::decode(declare_with_arguments(&wire)),
            Err(DecodeError::TooDeep {
                context: "queue.declare.arguments",
                max: MAX_NESTING
            }),
            "{nesting:?}"
        );
        assert_eq!(
            ContentHeader::decode(header_with_headers(&wire)),
            Err(DecodeError::TooDeep {
                context: "basic properties.headers",
                max: MAX_NESTING
            }),
            "{nesting:?}"
        );
    }
}

#[test]
fn hostile_deep_nesting_is_refused_without_deep_recursion() {
    for nesting in ALL_NESTINGS {
        let wire = nested_wire(100_000, nesting);
        let too_deep = |context| DecodeError::TooDeep {
            context,
            max: MAX_NESTING,
        };
        assert_eq!(
            Method::decode(declare_with_arguments(&wire)),
            Err(too_deep("queue.declare.arguments"))
        );
        assert_eq!(
            ContentHeader::decode(header_with_headers(&wire)),
            Err(too_deep("basic properties.headers"))
        );
        // And through the frame decoder, as it would arrive from a socket.
        let payload = declare_with_arguments(&wire);
        let mut buf = BytesMut::new();
        buf.put_u8(FRAME_METHOD);
        buf.put_u16(1);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(&payload);
        buf.put_u8(0xce);
        assert_eq!(
            FrameDecoder::new(u32::MAX).decode(&mut buf),
            Err(too_deep("queue.declare.arguments"))
        );
        let payload = header_with_headers(&wire);
        let mut buf = BytesMut::new();
        buf.put_u8(FRAME_HEADER);
        buf.put_u16(1);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(&payload);
        buf.put_u8(0xce);
        assert_eq!(
            FrameDecoder::new(u32::MAX).decode(&mut buf),
            Err(too_deep("basic properties.headers"))
        );
    }
}

#[test]
fn nesting_past_the_limit_is_refused_on_encode() {
    for levels in [MAX_NESTING + 1, 100_000] {
        for nesting in ALL_NESTINGS {
            let mut buf = BytesMut::new();
            encode_heartbeat(&mut buf);
            let before = buf.clone();

            let mut method = declare(nested_table(levels, nesting));
            assert_eq!(
                method.encode(&mut buf),
                Err(EncodeError::TooDeep {
                    context: "queue.declare.arguments",
                    max: MAX_NESTING
                }),
                "{levels} {nesting:?}"
            );
            assert_eq!(buf, before);
            let Method::QueueDeclare(declare) = &mut method else {
                unreachable!()
            };
            let table = std::mem::take(&mut declare.arguments);

            let props = BasicProperties::default().with_headers(table);
            let header_frame = Frame::Header {
                channel: 1,
                header: ContentHeader::basic(0, props),
            };
            assert_eq!(
                header_frame.encode(&mut buf),
                Err(EncodeError::TooDeep {
                    context: "basic properties.headers",
                    max: MAX_NESTING
                })
            );
            assert_eq!(buf, before);
            let Frame::Header { header, .. } = header_frame else {
                unreachable!()
            };
            drop_flat(header.properties.headers.unwrap());
        }
    }
}

/// A buffer already holding frames, to check failed encodes leave it exactly as it was.
fn busy_buffer() -> BytesMut {
    let mut buf = BytesMut::with_capacity(16);
    encode_heartbeat(&mut buf);
    frame::encode_method(&mut buf, 3, &basic::QosOk {}.into()).unwrap();
    buf
}

/// Runs `encode` on an empty buffer and on a busy one: each time it must fail with
/// `ShortStringTooLong { context, len: 256 }` and leave the buffer unchanged.
fn assert_refused(context: &str, mut encode: impl FnMut(&mut BytesMut) -> Result<(), EncodeError>) {
    for mut buf in [BytesMut::new(), busy_buffer()] {
        let before = buf.to_vec();
        let err = encode(&mut buf).expect_err("a 256-byte short string must be refused");
        assert!(
            matches!(err, EncodeError::ShortStringTooLong { context: c, len: 256 } if c == context),
            "{context}: {err:?}"
        );
        assert_eq!(buf.len(), before.len(), "{context}: length changed");
        assert_eq!(&buf[..], &before[..], "{context}: contents changed");
    }
}

fn long_ascii() -> ShortString {
    "a".repeat(256).into()
}

/// 256 bytes, 128 characters: the limit is in bytes.
fn long_multibyte() -> ShortString {
    "é".repeat(128).into()
}

#[test]
fn a_255_byte_short_string_is_fine() {
    let m: Method = queue::Declare {
        queue: "a".repeat(255).into(),
        arguments: FieldTable::new().with("k".repeat(255), "v"),
        ..Default::default()
    }
    .into();
    let mut buf = BytesMut::new();
    m.encode(&mut buf).unwrap();
    assert_eq!(Method::decode(buf.freeze()), Ok(m));
}

#[test]
fn a_256_byte_method_field_is_refused() {
    for name in [long_ascii(), long_multibyte()] {
        let m: Method = queue::Declare {
            queue: name.clone(),
            arguments: FieldTable::new().with("x-max-length", 5i32),
            ..Default::default()
        }
        .into();
        assert_refused("queue.declare.queue", |buf| m.encode(buf));
        assert_refused("queue.declare.queue", |buf| {
            frame::encode_method(buf, 1, &m)
        });
        assert_refused("queue.declare.queue", |buf| {
            Frame::Method {
                channel: 1,
                method: m.clone(),
            }
            .encode(buf)
        });
        // A field after several others (routing_key follows exchange and the reserved short).
        let publish: Method = basic::Publish {
            exchange: "ex".into(),
            routing_key: name,
            mandatory: true,
            immediate: false,
        }
        .into();
        assert_refused("basic.publish.routing_key", |buf| {
            content::encode_content(
                buf,
                1,
                &publish,
                &BasicProperties::default(),
                &[1; 10_000],
                4096,
            )
        });
    }
}

#[test]
fn a_256_byte_table_key_is_refused() {
    for key in [long_ascii(), long_multibyte()] {
        let top = FieldTable::new().with("first", 1i32).with(key.clone(), "v");
        let nested = FieldTable::new().with(
            "outer",
            vec![FieldValue::Table(FieldTable::new().with(key.clone(), 1u8))],
        );
        for arguments in [top, nested] {
            let m = declare(arguments.clone());
            assert_refused("queue.declare.arguments", |buf| m.encode(buf));
            let header =
                ContentHeader::basic(1, BasicProperties::default().with_headers(arguments));
            assert_refused("basic properties.headers", |buf| header.encode(buf));
            assert_refused("basic properties.headers", |buf| {
                encode_header(buf, 1, &header)
            });
        }
    }
}

#[test]
fn a_256_byte_property_is_refused() {
    let full = BasicProperties {
        content_type: Some("text/plain".into()),
        content_encoding: Some("gzip".into()),
        headers: Some(FieldTable::new().with("a", 1i32)),
        delivery_mode: Some(2),
        priority: Some(1),
        correlation_id: Some("c".into()),
        reply_to: Some("r".into()),
        expiration: Some("1000".into()),
        message_id: Some("m".into()),
        timestamp: Some(1),
        kind: Some("k".into()),
        user_id: Some("u".into()),
        app_id: Some("a".into()),
        cluster_id: Some("x".into()),
    };
    type Set = fn(&mut BasicProperties, ShortString);
    let cases: [(&str, Set); 3] = [
        ("basic properties.content_type", |p, s| {
            p.content_type = Some(s)
        }),
        ("basic properties.reply_to", |p, s| p.reply_to = Some(s)),
        ("basic properties.cluster_id", |p, s| p.cluster_id = Some(s)),
    ];
    for (context, set) in cases {
        for value in [long_ascii(), long_multibyte()] {
            let mut props = full.clone();
            set(&mut props, value);
            let header = ContentHeader::basic(4, props.clone());
            assert_refused(context, |buf| header.encode(buf));
            assert_refused(context, |buf| encode_header(buf, 2, &header));
            assert_refused(context, |buf| {
                Frame::Header {
                    channel: 2,
                    header: header.clone(),
                }
                .encode(buf)
            });
            let deliver: Method = basic::Deliver::default().into();
            assert_refused(context, |buf| {
                content::encode_content(buf, 2, &deliver, &props, b"body", 4096)
            });
        }
    }
}
