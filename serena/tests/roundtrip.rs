//! Property tests: every protocol unit survives encode-then-decode unchanged, and
//! decode-then-encode gives back the same bytes.
//!
//! Covered: every method the codec defines (64), the content header with every subset of the 14 basic properties,
//! field tables with every value type nested, single frames and frame sequences, and whole
//! messages split by `frame_max` and reassembled.

#[allow(dead_code)] // each test binary uses its own part of the shared strategies
mod strategies;

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serena::proto::frame::FRAME_OVERHEAD;
use serena::proto::method::queue;
use serena::proto::{
    Assembled, BasicProperties, ContentAssembler, ContentHeader, DecodeError, FieldTable, Frame,
    FrameDecoder, Method, content,
};

use strategies::{Floats, content_header, content_method, field_table, frame, properties};

/// Encodes `m`, checks the payload starts with its ids, decodes it back and re-encodes the result.
fn method_round_trip(m: &Method) -> Result<(), TestCaseError> {
    let mut wire = BytesMut::new();
    m.encode(&mut wire)
        .expect("generated methods are encodable");
    prop_assert_eq!(&wire[..2], &m.class_id().to_be_bytes()[..]);
    prop_assert_eq!(&wire[2..4], &m.method_id().to_be_bytes()[..]);
    let wire = wire.freeze();
    let back = Method::decode(wire.clone()).expect("an encoded method decodes");
    prop_assert_eq!(&back, m);
    let mut again = BytesMut::new();
    back.encode(&mut again)
        .expect("a decoded method re-encodes");
    prop_assert_eq!(&again[..], &wire[..]);
    Ok(())
}

/// The methods `serena::proto::Method` defines: connection 14, channel 6, exchange 8, queue 10,
/// basic 18, confirm 2, tx 6. (The deprecated `access` class is not among them.)
const METHOD_COUNT: usize = 64;

/// Runs the round trip on every method separately, so each gets the same number of cases, and
/// checks the strategies cover exactly the methods the decoder knows.
#[test]
fn every_method_round_trips() {
    let mut covered = BTreeSet::new();
    for strategy in strategies::method_strategies() {
        let mut runner = TestRunner::new(Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        });
        let sample = strategy.new_tree(&mut runner).unwrap().current();
        assert!(
            covered.insert((sample.class_id(), sample.method_id())),
            "{} listed twice",
            sample.name()
        );
        if let Err(e) = runner.run(&strategy, |m| method_round_trip(&m)) {
            panic!("{}: {e}", sample.name());
        }
    }
    assert_eq!(covered.len(), METHOD_COUNT);

    // Every (class, method) pair the decoder accepts has a strategy, and no other.
    let mut known = BTreeSet::new();
    for class_id in 0..=255u16 {
        for method_id in 0..=255u16 {
            let mut payload = Vec::with_capacity(4);
            payload.extend_from_slice(&class_id.to_be_bytes());
            payload.extend_from_slice(&method_id.to_be_bytes());
            match Method::decode(Bytes::from(payload)) {
                Err(DecodeError::UnknownMethod { .. }) => {}
                _ => {
                    known.insert((class_id, method_id));
                }
            }
        }
    }
    assert_eq!(known, covered);
}

/// Every one of the 2^14 subsets of the basic properties: the flags word names exactly the
/// properties present, and the header comes back as it went.
#[test]
fn every_property_subset_round_trips() {
    let mut wire = BytesMut::new();
    for mask in 0u16..(1 << 14) {
        let on = |i: u16| mask & (1 << i) != 0;
        let text = |i: u16| on(i).then(|| format!("p{i}").into());
        let props = BasicProperties {
            content_type: text(0),
            content_encoding: text(1),
            headers: on(2).then(|| FieldTable::new().with("k", 1i32)),
            delivery_mode: on(3).then_some(2),
            priority: on(4).then_some(0),
            correlation_id: text(5),
            reply_to: text(6),
            expiration: text(7),
            message_id: text(8),
            timestamp: on(9).then_some(1_700_000_000),
            kind: text(10),
            user_id: text(11),
            app_id: text(12),
            cluster_id: text(13),
        };
        let header = ContentHeader::basic(u64::from(mask), props);
        wire.clear();
        header.encode(&mut wire).unwrap();
        // Property i is flag bit 15 - i.
        let expected_flags = (0..14)
            .filter(|&i| on(i))
            .fold(0u16, |f, i| f | 1 << (15 - i));
        assert_eq!(
            &wire[12..14],
            &expected_flags.to_be_bytes()[..],
            "mask {mask:#x}"
        );
        let back = ContentHeader::decode(wire.clone().freeze()).unwrap();
        assert_eq!(back, header, "mask {mask:#x}");
    }
}

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    /// Content headers with arbitrary properties (each one an arbitrary `Option`).
    #[test]
    fn content_header_round_trips(header in content_header()) {
        let mut wire = BytesMut::new();
        header.encode(&mut wire).unwrap();
        let wire = wire.freeze();
        let back = ContentHeader::decode(wire.clone()).unwrap();
        prop_assert_eq!(&back, &header);
        let mut again = BytesMut::new();
        back.encode(&mut again).unwrap();
        prop_assert_eq!(&again[..], &wire[..]);
    }

    /// Field tables with every value type, floats as arbitrary bit patterns (NaNs included),
    /// carried as `queue.declare` arguments and as message headers.
    #[test]
    fn field_table_round_trips(table in field_table(Floats::AnyBits)) {
        let declare = Method::from(queue::Declare {
            queue: "q".into(),
            arguments: table.clone(),
            ..Default::default()
        });
        let mut wire = BytesMut::new();
        declare.encode(&mut wire).unwrap();
        let wire = wire.freeze();
        let Method::QueueDeclare(back) = Method::decode(wire.clone()).unwrap() else {
            panic!("decoded another method");
        };
        prop_assert!(strategies::same_table(&back.arguments, &table), "{:?}", back.arguments);
        let mut again = BytesMut::new();
        Method::from(back).encode(&mut again).unwrap();
        prop_assert_eq!(&again[..], &wire[..]);

        let header = ContentHeader::basic(0, BasicProperties::default().with_headers(table.clone()));
        let mut wire = BytesMut::new();
        header.encode(&mut wire).unwrap();
        let back = ContentHeader::decode(wire.freeze()).unwrap();
        let headers = back.properties.headers.expect("headers were set");
        prop_assert!(strategies::same_table(&headers, &table), "{:?}", headers);
    }

    /// One frame of any kind: `Frame::encode` then `FrameDecoder::decode`.
    #[test]
    fn frame_round_trips(f in frame()) {
        let decoder = FrameDecoder::new(u32::MAX);
        let mut wire = BytesMut::new();
        f.encode(&mut wire).unwrap();
        let encoded = wire.clone();
        prop_assert_eq!(decoder.check(&wire).unwrap(), Some(encoded.len()));
        let back = decoder.decode(&mut wire).unwrap().expect("a whole frame");
        prop_assert!(wire.is_empty());
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(back.channel(), f.channel());
        let mut again = BytesMut::new();
        back.encode(&mut again).unwrap();
        prop_assert_eq!(again, encoded);
    }

    /// Several frames in one buffer decode one after another, and then the buffer is empty.
    #[test]
    fn frame_sequences_round_trip(frames in proptest::collection::vec(frame(), 0..8)) {
        let decoder = FrameDecoder::new(u32::MAX);
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        let mut back = Vec::new();
        while let Some(f) = decoder.decode(&mut wire).unwrap() {
            back.push(f);
        }
        prop_assert!(wire.is_empty());
        prop_assert_eq!(back, frames);
    }
}

/// A `frame_max` of at least 4096, and a body length that is arbitrary or lands on, just
/// before or just after a multiple of the room a body frame has.
fn frame_max_and_body_len() -> impl Strategy<Value = (u32, usize)> {
    (4096u32..=20_000).prop_flat_map(|frame_max| {
        let room = frame_max as usize - FRAME_OVERHEAD;
        let near_edge = (0usize..4, 0usize..3)
            .prop_map(move |(frames, delta)| (frames * room + delta).saturating_sub(1));
        (
            Just(frame_max),
            prop_oneof![0usize..60_000, near_edge, Just(0usize)],
        )
    })
}

proptest! {
    #![proptest_config(Config { cases: 128, failure_persistence: None, ..Config::default() })]

    /// A whole message: `content::encode_content`, read back in arbitrary slices, decoded and
    /// reassembled by `ContentAssembler`. Body frames never exceed `frame_max`, and every body
    /// frame but the last is full.
    #[test]
    fn message_round_trips(
        method in content_method(),
        props in properties(),
        (frame_max, body_len) in frame_max_and_body_len(),
        seed in any::<u8>(),
        channel in 1u16..,
        read_size in 1usize..6000,
    ) {
        let body: Vec<u8> = (0..body_len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let mut wire = BytesMut::new();
        match content::encode_content(&mut wire, channel, &method, &props, &body, frame_max) {
            Ok(()) => {}
            // Arbitrary properties can make a header frame larger than frame_max: refused,
            // with its size, and nothing written.
            Err(serena::proto::EncodeError::FrameTooLarge { context: "content header frame", size, frame_max: limit }) => {
                prop_assert!(size > limit as usize && limit == frame_max);
                prop_assert!(wire.is_empty());
                return Ok(());
            }
            Err(e) => panic!("{e:?}"),
        }

        // The method and header frames fit frame_max (checked by the encoder); only body
        // frames are checked below.
        let decoder = FrameDecoder::new(u32::MAX);
        let mut assembler = ContentAssembler::new(channel);
        let room = frame_max as usize - FRAME_OVERHEAD;
        let mut read_buf = BytesMut::new();
        let mut body_frames = Vec::new();
        let mut message = None;
        for piece in wire.chunks(read_size) {
            read_buf.extend_from_slice(piece);
            while let Some(f) = decoder.decode(&mut read_buf).unwrap() {
                prop_assert_eq!(f.channel(), channel);
                prop_assert!(message.is_none(), "a frame after the message was complete");
                if let Frame::Body { payload, .. } = &f {
                    prop_assert!(payload.len() + FRAME_OVERHEAD <= frame_max as usize);
                    body_frames.push(payload.len());
                }
                if let Some(done) = assembler.handle_frame(f).unwrap() {
                    message = Some(done);
                }
            }
        }
        prop_assert!(read_buf.is_empty());
        prop_assert!(assembler.is_idle());
        prop_assert_eq!(body_frames.len(), body_len.div_ceil(room));
        if let Some((last, full)) = body_frames.split_last() {
            prop_assert!(full.iter().all(|&n| n == room));
            prop_assert!(*last > 0 && *last <= room);
        }
        let Some(Assembled::Content(message)) = message else {
            panic!("no message assembled");
        };
        prop_assert_eq!(message.method, method);
        prop_assert_eq!(*message.properties, props);
        prop_assert_eq!(&message.body[..], &body[..]);
    }
}
