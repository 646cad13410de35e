//! A tour of serena's sans-IO codec: encode a message the way a publisher would, cut the byte
//! stream into arbitrary reads the way a socket would, decode and reassemble it, and check that
//! what comes out is what went in.
//!
//! Run it with `cargo run --example codec_tour`.

#[path = "shared/logs.rs"]
mod logs;

use bytes::BytesMut;
use serena::proto::{
    Assembled, BasicProperties, ContentAssembler, Decimal, FieldTable, FieldValue, Frame,
    FrameDecoder, Method, content, frame, method,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let frame_max = 4096;
    let channel = 1;

    // A delivery as RabbitMQ would send it, with headers of several field types.
    let headers = FieldTable::new()
        .with("x-retries", 3i32)
        .with("x-ratio", 0.25f64)
        .with(
            "x-price",
            Decimal {
                scale: 2,
                value: 1999,
            },
        )
        .with(
            "x-tags",
            vec![FieldValue::from("a"), FieldValue::from(true)],
        )
        .with("x-trace", FieldTable::new().with("span", 42u64));
    let properties = BasicProperties::default()
        .with_content_type("application/json")
        .with_headers(headers)
        .with_priority(0)
        .with_persistent(true);
    let deliver: Method = method::basic::Deliver {
        consumer_tag: "ctag-1".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "orders".into(),
        routing_key: "order.created".into(),
    }
    .into();
    let body = br#"{"order":1234,"items":["tea","cake"]}"#.repeat(300);

    let mut wire = BytesMut::new();
    frame::encode_heartbeat(&mut wire);
    content::encode_content(&mut wire, channel, &deliver, &properties, &body, frame_max)?;
    println!(
        "encoded a heartbeat and a {}-byte message into {} bytes (frame_max {frame_max})",
        body.len(),
        wire.len()
    );

    // Feed the bytes to the decoder in uneven reads, as a socket would deliver them.
    let decoder = FrameDecoder::new(frame_max);
    let mut assembler = ContentAssembler::new(channel);
    let mut read_buf = BytesMut::new();
    let mut frames = 0;
    let mut delivered = None;
    for (i, chunk) in wire.chunks(997).enumerate() {
        read_buf.extend_from_slice(chunk);
        while let Some(f) = decoder.decode(&mut read_buf)? {
            frames += 1;
            match f {
                Frame::Heartbeat => println!("read {i}: heartbeat"),
                Frame::Method { ref method, .. } => println!("read {i}: method {}", method.name()),
                Frame::Header { ref header, .. } => {
                    println!(
                        "read {i}: content header, body of {} bytes",
                        header.body_size
                    )
                }
                Frame::Body { ref payload, .. } => {
                    println!("read {i}: body frame of {}", payload.len())
                }
            }
            if !matches!(f, Frame::Heartbeat)
                && let Some(Assembled::Content(c)) = assembler.handle_frame(f)?
            {
                delivered = Some(c);
            }
        }
    }

    let message = delivered.ok_or("the message was not reassembled")?;
    assert_eq!(message.method, deliver);
    assert_eq!(*message.properties, properties);
    assert_eq!(&message.body[..], &body[..]);
    println!(
        "decoded {frames} frames; the message came back identical: {} with {} body bytes",
        message.method.name(),
        message.body.len()
    );
    Ok(())
}
