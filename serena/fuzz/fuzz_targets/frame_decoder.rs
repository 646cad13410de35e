//! Arbitrary bytes through the frame decoder and the content assembler: no input may panic.
//!
//! The first input byte picks a point where the rest is cut in two, as if it came in two socket
//! reads. Checked on every input:
//!
//! - decoding in two reads gives the same frames and the same error as decoding in one, and
//!   `Ok(None)` ("need more bytes") never consumes anything;
//! - every decoded frame re-encodes with `Frame::encode`, decodes back to an equal frame, and
//!   encodes to the same bytes the second time (decoding normalises only a few things: a `t`
//!   boolean octet other than 0 or 1, reserved fields, extra property-flag words);
//! - frames fed to a per-channel `ContentAssembler` come out as methods without content, or as
//!   messages whose body has exactly the size their content header announced.

#![no_main]

use std::collections::HashMap;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serena::proto::{
    Assembled, ContentAssembler, DecodeError, FRAME_MIN_SIZE, Frame, FrameDecoder,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(selector) * input.len() / usize::from(u8::MAX);
    // The limit before tuning: small enough for the fuzzer to reach `FrameTooLarge`.
    let decoder = FrameDecoder::new(FRAME_MIN_SIZE);

    let whole = decode_reads(&decoder, &[input]);
    let pieces = decode_reads(&decoder, &[&input[..split], &input[split..]]);
    assert_eq!(
        whole.frames.len(),
        pieces.frames.len(),
        "frame count depends on read size"
    );
    for (a, b) in whole.frames.iter().zip(&pieces.frames) {
        assert_same_frame(a, b);
    }
    assert_eq!(whole.error, pieces.error, "error depends on read size");
    if whole.error.is_none() {
        assert_eq!(
            whole.leftover, pieces.leftover,
            "leftover depends on read size"
        );
    }

    let mut channels = Channels::default();
    for frame in whole.frames {
        check_round_trip(&decoder, &frame);
        channels.handle(frame);
    }
});

/// What decoding a stream of reads gave.
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    /// Bytes still buffered at the end (an incomplete frame).
    leftover: usize,
}

/// Appends each read to one buffer and decodes frames until more bytes are needed or one fails.
fn decode_reads(decoder: &FrameDecoder, reads: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame consumed no bytes");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "`Ok(None)` consumed bytes");
                    break;
                }
                Err(error) => {
                    return Outcome {
                        frames,
                        error: Some(error),
                        leftover: buf.len(),
                    };
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
        leftover: buf.len(),
    }
}

/// Equal, or unequal only because a float is NaN (NaN != NaN). Debug output tells those apart
/// from every other difference: it names each field and value, and prints every NaN as `NaN`.
/// That NaN bits survive is checked by comparing encoded bytes.
fn assert_same_frame(a: &Frame, b: &Frame) {
    if a != b {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "frames differ");
    }
}

/// Encode, decode, compare, and encode again.
fn check_round_trip(decoder: &FrameDecoder, frame: &Frame) {
    let mut wire = BytesMut::new();
    if let Err(e) = frame.encode(&mut wire) {
        panic!("decoded frame does not re-encode: {e}\nframe: {frame:?}");
    }
    let first = wire.clone();
    let again = match decoder.decode(&mut wire) {
        Ok(Some(again)) => again,
        Ok(None) => panic!("re-encoded frame is incomplete: {first:?}"),
        Err(e) => panic!("re-encoded frame does not decode: {e}\nframe: {frame:?}"),
    };
    assert!(
        wire.is_empty(),
        "re-encoded frame left {} bytes",
        wire.len()
    );
    assert_same_frame(frame, &again);
    let mut second = BytesMut::new();
    again.encode(&mut second).expect("encodes a second time");
    assert_eq!(first, second, "second encoding differs from the first");
}

/// A channel's assembler and the body size its last content header announced.
struct Channel {
    assembler: ContentAssembler,
    announced: Option<u64>,
}

/// One assembler per channel, as the connection keeps them.
#[derive(Default)]
struct Channels {
    map: HashMap<u16, Channel>,
}

impl Channels {
    fn handle(&mut self, frame: Frame) {
        let number = frame.channel();
        if let Frame::Heartbeat = frame {
            // Heartbeats belong to the connection, never to a channel's assembler.
            return;
        }
        let channel = self.map.entry(number).or_insert_with(|| Channel {
            assembler: ContentAssembler::new(number),
            announced: None,
        });
        let header_size = match &frame {
            Frame::Header { header, .. } => Some(header.body_size),
            _ => None,
        };
        let content_method = match &frame {
            Frame::Method { method, .. } => Some(method.has_content()),
            _ => None,
        };
        match channel.assembler.handle_frame(frame) {
            Ok(None) => {
                if let Some(size) = header_size {
                    assert!(
                        size > 0,
                        "a header announcing no body completes the message"
                    );
                    channel.announced = Some(size);
                }
                if let Some(has_content) = content_method {
                    assert!(has_content, "a method without content was held back");
                }
            }
            Ok(Some(Assembled::Method(method))) => {
                assert!(
                    !method.has_content(),
                    "a content method came out without content"
                );
                assert!(channel.assembler.is_idle());
            }
            Ok(Some(Assembled::Content(content))) => {
                let expected = header_size.or(channel.announced).unwrap_or_else(|| {
                    panic!("message completed with no content header seen: {content:?}")
                });
                assert_eq!(
                    content.body.len() as u64,
                    expected,
                    "body size differs from header"
                );
                assert!(content.method.has_content());
                assert!(channel.assembler.is_idle());
                channel.announced = None;
            }
            Err(_) => {
                // The connection would be closed; start the channel afresh to keep going.
                *channel = Channel {
                    assembler: ContentAssembler::new(number),
                    announced: None,
                };
            }
        }
    }
}
