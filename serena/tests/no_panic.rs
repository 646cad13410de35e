//! Property tests: the decoders never panic. Arbitrary bytes, well-framed arbitrary payloads,
//! mutated valid encodings and arbitrary frame sequences all end in `Ok` or a typed `Err`.

#[allow(dead_code)] // each test binary uses its own part of the shared strategies
mod strategies;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serena::proto::frame::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use serena::proto::{
    Assembled, ContentAssembler, ContentHeader, DecodeError, Frame, FrameDecoder, Method,
};

use strategies::{any_method, content_header, content_method, properties};

/// An edit to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at this index (modulo the length).
    Set(usize, u8),
    /// Cut the bytes from this index (modulo the length + 1) on.
    Truncate(usize),
    /// Append these bytes.
    Extend(Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
    ];
    vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = *b;
            }
            Mutation::Set(..) => {}
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
        }
    }
    bytes
}

/// Method payloads worth trying: random bytes, a known method's ids followed by random bytes,
/// and a valid method's encoding with a few edits.
fn method_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (any_method(), vec(any::<u8>(), 0..64)).prop_map(|(m, rest)| {
            let mut p = Vec::new();
            p.extend_from_slice(&m.class_id().to_be_bytes());
            p.extend_from_slice(&m.method_id().to_be_bytes());
            p.extend_from_slice(&rest);
            p
        }),
        (any_method(), mutations()).prop_map(|(m, edits)| {
            let mut p = BytesMut::new();
            m.encode(&mut p).unwrap();
            mutate(p.to_vec(), &edits)
        }),
    ]
}

/// Content header payloads: random bytes, random bytes after a plausible class / weight /
/// size prefix, and a valid header's encoding with a few edits.
fn header_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (any::<u64>(), vec(any::<u8>(), 0..96)).prop_map(|(size, rest)| {
            let mut p = vec![0, 60, 0, 0];
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&rest);
            p
        }),
        (content_header(), mutations()).prop_map(|(h, edits)| {
            let mut p = BytesMut::new();
            h.encode(&mut p).unwrap();
            mutate(p.to_vec(), &edits)
        }),
    ]
}

/// Decodes until the decoder asks for more or refuses; "need more" must leave `buf` untouched.
fn drain(decoder: &FrameDecoder, buf: &mut BytesMut) -> Result<Vec<Frame>, DecodeError> {
    let mut frames = Vec::new();
    loop {
        let before = buf.clone();
        match decoder.decode(buf)? {
            Some(f) => frames.push(f),
            None => {
                assert_eq!(*buf, before, "Ok(None) changed the buffer");
                return Ok(frames);
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    /// Arbitrary bytes into the frame decoder.
    #[test]
    fn frame_decoder_survives_arbitrary_bytes(
        data in vec(any::<u8>(), 0..256),
        frame_max in prop_oneof![Just(0u32), 4096u32..70_000, Just(u32::MAX)],
    ) {
        let decoder = FrameDecoder::new(frame_max);
        let mut buf = BytesMut::from(&data[..]);
        let _ = drain(&decoder, &mut buf);
    }

    /// A well-formed frame header and frame-end around an arbitrary payload, so the method and
    /// content header parsers get the payload. A complete frame is never "need more".
    #[test]
    fn frame_decoder_survives_arbitrary_payloads(
        (frame_type, payload) in prop_oneof![
            method_payload().prop_map(|p| (FRAME_METHOD, p)),
            header_payload().prop_map(|p| (FRAME_HEADER, p)),
            vec(any::<u8>(), 0..64).prop_map(|p| (FRAME_BODY, p)),
            vec(any::<u8>(), 0..4).prop_map(|p| (FRAME_HEARTBEAT, p)),
        ],
        channel in prop_oneof![Just(0u16), any::<u16>()],
    ) {
        let mut buf = BytesMut::new();
        buf.put_u8(frame_type);
        buf.put_u16(channel);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(&payload);
        buf.put_u8(FRAME_END);
        let decoder = FrameDecoder::new(u32::MAX);
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => prop_assert!(buf.is_empty()),
            Ok(None) => prop_assert!(false, "a whole frame was taken for an incomplete one"),
            Err(_) => {}
        }
    }

    /// `Method::decode` on anything. What it accepts re-encodes, and decoding that gives a
    /// method that encodes to the same bytes (a fixpoint after one normalising pass: reserved
    /// fields and unused bits are dropped on decode).
    #[test]
    fn method_decode_survives_anything(payload in method_payload()) {
        if let Ok(m) = Method::decode(Bytes::from(payload)) {
            let mut once = BytesMut::new();
            m.encode(&mut once).expect("a decoded method re-encodes");
            let again = Method::decode(once.clone().freeze()).expect("and decodes again");
            let mut twice = BytesMut::new();
            again.encode(&mut twice).unwrap();
            prop_assert_eq!(once, twice);
        }
    }

    /// `ContentHeader::decode` on anything, with the same fixpoint check as for methods.
    #[test]
    fn content_header_decode_survives_anything(payload in header_payload()) {
        if let Ok(h) = ContentHeader::decode(Bytes::from(payload)) {
            let mut once = BytesMut::new();
            h.encode(&mut once).expect("a decoded header re-encodes");
            let again = ContentHeader::decode(once.clone().freeze()).expect("and decodes again");
            let mut twice = BytesMut::new();
            again.encode(&mut twice).unwrap();
            prop_assert_eq!(once, twice);
        }
    }
}

/// Frames as a channel could see them: mostly content methods, small announced sizes, small
/// bodies, so that both valid and invalid sequences are common.
fn channel_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => content_method().prop_map(|method| Frame::Method { channel: 1, method }),
        1 => any_method().prop_map(|method| Frame::Method { channel: 1, method }),
        3 => (prop_oneof![0u64..48, any::<u64>()], properties()).prop_map(|(body_size, properties)| {
            Frame::Header { channel: 1, header: ContentHeader::basic(body_size, properties) }
        }),
        4 => strategies::bytes(24).prop_map(|payload| Frame::Body { channel: 1, payload }),
        1 => Just(Frame::Heartbeat),
    ]
}

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    /// Arbitrary frame sequences into the assembler: no panic, and every message it hands on
    /// has the body size its header announced.
    #[test]
    fn assembler_survives_any_frame_sequence(
        frames in vec(channel_frame(), 0..24),
        max_body in prop_oneof![Just(u64::MAX), 0u64..64],
    ) {
        let mut assembler = ContentAssembler::with_max_body(1, max_body);
        let mut announced = None;
        for f in frames {
            let size = match &f {
                Frame::Header { header, .. } => Some(header.body_size),
                _ => None,
            };
            let result = assembler.handle_frame(f);
            if result.is_ok() && size.is_some() {
                announced = size;
            }
            match result {
                Ok(Some(Assembled::Content(c))) => {
                    prop_assert_eq!(Some(c.body.len() as u64), announced);
                    prop_assert!(c.body.len() as u64 <= max_body);
                    prop_assert!(assembler.is_idle());
                }
                Ok(Some(Assembled::Method(m))) => {
                    prop_assert!(!m.has_content());
                    prop_assert!(assembler.is_idle());
                }
                Ok(None) => prop_assert!(!assembler.is_idle()),
                Err(_) => {}
            }
        }
    }
}
