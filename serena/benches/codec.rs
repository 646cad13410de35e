//! Criterion benchmarks of the sans-IO codec, each encoded and decoded:
//!
//! - `deliver_64b`: a `basic.deliver`, its content header and a 64-byte body (3 frames);
//! - `header_table_20`: a content header frame whose `headers` table holds 20 mixed values;
//! - `body_1mib`: a 1 MiB body split into frames at `frame_max` 131072, and joined again.
//!
//! Throughput is given in frames and in wire bytes, so criterion prints frames/s (`elem/s`) and
//! MiB/s next to each time. Encoding appends to one reused buffer, cleared every iteration.
//! Decoding works on a fresh copy of the wire bytes made outside the timed part
//! (`iter_batched`), and the small message decodes [`DELIVER_BATCH`] messages per iteration.
//!
//! Run with `cargo bench -p serena --bench codec`; the group settings keep a whole run near two
//! minutes on a small machine.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serena::proto::content::encode_content;
use serena::proto::frame::encode_header;
use serena::proto::method::basic;
use serena::proto::{
    Assembled, BasicProperties, ContentAssembler, ContentHeader, Decimal, FieldTable, FieldValue,
    Frame, FrameDecoder, LongString, Method,
};

/// Channel every benchmark frame travels on.
const CHANNEL: u16 = 1;
/// RabbitMQ's default negotiated `frame_max`.
const FRAME_MAX: u32 = 131_072;
/// Messages decoded per iteration of the small-message decode benchmark.
const DELIVER_BATCH: usize = 256;

fn deliver() -> Method {
    basic::Deliver {
        consumer_tag: "amq.ctag-Zq3Qk9v2yYl1sJd7wA0b5g".into(),
        delivery_tag: 42_424_242,
        redelivered: false,
        exchange: "orders".into(),
        routing_key: "orders.created.eu-west".into(),
    }
    .into()
}

fn small_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json")
        .with_persistent(true)
        .with_message_id("9f1c2a7e-5b3d-4c8e-a1f0-6d2b7e9c4a10")
}

/// A `headers` table of 20 entries covering every value type, as a real message might carry.
fn headers_table() -> FieldTable {
    FieldTable::new()
        .with("x-retry", true)
        .with("x-priority-hint", -3i8)
        .with("x-shard", 7u8)
        .with("x-region-code", -1200i16)
        .with("x-port", 5672u16)
        .with("x-attempts", -5i32)
        .with("x-size", 1_048_576u32)
        .with("x-offset", -9_000_000_000i64)
        .with("x-sequence", 18_000_000_000u64)
        .with("x-ratio", 0.75f32)
        .with("x-score", 1234.5678f64)
        .with(
            "x-amount",
            Decimal {
                scale: 2,
                value: 1999,
            },
        )
        .with("x-tenant", "acme-corporation")
        .with(
            "x-trace-id",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with(
            "x-signature",
            FieldValue::ByteArray(Bytes::from_static(&[0xA5; 32])),
        )
        .with(
            "x-tags",
            vec![
                FieldValue::from("urgent"),
                FieldValue::from(3i32),
                FieldValue::from(false),
            ],
        )
        .with("x-created", FieldValue::Timestamp(1_700_000_000))
        .with(
            "x-origin",
            FieldTable::new()
                .with("host", "worker-17")
                .with("pid", 31_337i32),
        )
        .with("x-reserved", FieldValue::Void)
        .with(
            "x-raw",
            FieldValue::LongString(LongString::from(&b"\x00\x01binary\xff"[..])),
        )
}

/// Counts the frames in `wire`, checking that it decodes cleanly.
fn count_frames(wire: &[u8]) -> u64 {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut buf = BytesMut::from(wire);
    let mut frames = 0;
    while let Some(_frame) = decoder.decode(&mut buf).expect("benchmark input decodes") {
        frames += 1;
    }
    assert!(buf.is_empty(), "benchmark input ends on a frame boundary");
    frames
}

/// Decodes every frame in `buf` and reassembles the messages; returns how many came out.
fn decode_messages(decoder: &FrameDecoder, mut buf: BytesMut) -> usize {
    let mut assembler = ContentAssembler::new(CHANNEL);
    let mut messages = 0;
    while let Some(frame) = decoder.decode(&mut buf).expect("benchmark input decodes") {
        if let Some(assembled) = assembler
            .handle_frame(frame)
            .expect("benchmark frames arrive in order")
        {
            black_box(&assembled);
            messages += 1;
        }
    }
    messages
}

/// Encodes one message into a buffer that is then frozen.
fn encode_message(method: &Method, properties: &BasicProperties, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    encode_content(&mut buf, CHANNEL, method, properties, body, FRAME_MAX)
        .expect("benchmark message encodes");
    buf.freeze()
}

fn bench_deliver(c: &mut Criterion) {
    let method = deliver();
    let properties = small_properties();
    let body = [0x5Au8; 64];
    let one = encode_message(&method, &properties, &body);
    let frames_per_message = count_frames(&one);
    assert_eq!(frames_per_message, 3);

    let mut group = c.benchmark_group("deliver_64b");
    group.throughput(Throughput::ElementsAndBytes {
        elements: frames_per_message,
        bytes: one.len() as u64,
    });
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(one.len());
        b.iter(|| {
            buf.clear();
            encode_content(
                &mut buf,
                CHANNEL,
                black_box(&method),
                black_box(&properties),
                black_box(&body),
                FRAME_MAX,
            )
            .expect("encodes");
            black_box(&buf);
        });
    });

    let wire: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * DELIVER_BATCH)
        .collect();
    let decoder = FrameDecoder::new(FRAME_MAX);
    assert_eq!(
        decode_messages(&decoder, BytesMut::from(&wire[..])),
        DELIVER_BATCH
    );
    group.throughput(Throughput::ElementsAndBytes {
        elements: frames_per_message * DELIVER_BATCH as u64,
        bytes: wire.len() as u64,
    });
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| decode_messages(&decoder, buf),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn bench_header_table(c: &mut Criterion) {
    let header = ContentHeader::basic(
        512,
        small_properties()
            .with_correlation_id("req-7781")
            .with_headers(headers_table()),
    );
    let mut wire = BytesMut::new();
    encode_header(&mut wire, CHANNEL, &header).expect("header encodes");
    let wire = wire.freeze();
    assert_eq!(count_frames(&wire), 1);

    let mut group = c.benchmark_group("header_table_20");
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: wire.len() as u64,
    });
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            encode_header(&mut buf, CHANNEL, black_box(&header)).expect("encodes");
            black_box(&buf);
        });
    });

    let decoder = FrameDecoder::new(FRAME_MAX);
    let Some(Frame::Header {
        header: decoded, ..
    }) = decoder
        .decode(&mut BytesMut::from(&wire[..]))
        .expect("header decodes")
    else {
        panic!("a content header frame");
    };
    assert_eq!(decoded, header);
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let frame = decoder.decode(&mut buf).expect("decodes");
                black_box(frame)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn bench_large_body(c: &mut Criterion) {
    let method = deliver();
    let properties = small_properties();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let wire = encode_message(&method, &properties, &body);
    let frames = count_frames(&wire);

    let mut group = c.benchmark_group("body_1mib");
    group.throughput(Throughput::ElementsAndBytes {
        elements: frames,
        bytes: wire.len() as u64,
    });
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            encode_content(
                &mut buf,
                CHANNEL,
                black_box(&method),
                black_box(&properties),
                black_box(&body),
                FRAME_MAX,
            )
            .expect("encodes");
            black_box(&buf);
        });
    });

    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut check = BytesMut::from(&wire[..]);
    let mut assembler = ContentAssembler::new(CHANNEL);
    let mut whole = None;
    while let Some(frame) = decoder.decode(&mut check).expect("decodes") {
        whole = assembler.handle_frame(frame).expect("in order");
    }
    let Some(Assembled::Content(content)) = whole else {
        panic!("the last frame completes the message");
    };
    assert_eq!(content.body, body);
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| decode_messages(&decoder, buf),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// A 1 MiB delivery in one body frame (a `frame_max` above the body size): decoding hands the
/// body on as a slice of the read buffer, so it should cost about what slicing costs, shown
/// beside it.
fn bench_large_body_one_frame(c: &mut Criterion) {
    const BIG_FRAME_MAX: u32 = 1024 * 1024 + 4096;
    let method = deliver();
    let properties = small_properties();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut wire = BytesMut::new();
    encode_content(
        &mut wire,
        CHANNEL,
        &method,
        &properties,
        &body,
        BIG_FRAME_MAX,
    )
    .expect("encodes");
    let wire = wire.freeze();
    let decoder = FrameDecoder::new(BIG_FRAME_MAX);
    {
        let mut check = BytesMut::from(&wire[..]);
        let start = check.as_ptr() as usize;
        let end = start + check.len();
        let mut assembler = ContentAssembler::new(CHANNEL);
        let mut whole = None;
        while let Some(frame) = decoder.decode(&mut check).expect("decodes") {
            whole = assembler.handle_frame(frame).expect("in order");
        }
        let Some(Assembled::Content(content)) = whole else {
            panic!("the body frame completes the message");
        };
        assert_eq!(content.body, body);
        let at = content.body.as_ptr() as usize;
        assert!(
            at >= start && at < end,
            "the body is a slice of the read buffer"
        );
    }

    let mut group = c.benchmark_group("body_1mib_one_frame");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| decode_messages(&decoder, buf),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("slice_only", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let frozen = buf.split().freeze();
                black_box(frozen.slice(64..frozen.len() - 1))
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// Short runs: six benchmarks at about 8 s each, warm-up and analysis included.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_deliver, bench_header_table, bench_large_body, bench_large_body_one_frame
}
criterion_main!(benches);
