//! `ContentAssembler` behaviour: messages with empty, single-frame and multi-frame bodies,
//! frames out of order, bodies longer than announced or larger than allowed, and single-frame
//! bodies handed on as slices of the read buffer, without copying.

use bytes::{Bytes, BytesMut};
use serena::proto::content::DEFAULT_MAX_BODY;
use serena::proto::method::{basic, channel, queue};
use serena::proto::{
    Assembled, BasicProperties, Content, ContentAssembler, ContentHeader, DecodeError, Frame,
    FrameDecoder, Method, content,
};

const CH: u16 = 4;

fn deliver() -> Method {
    basic::Deliver {
        consumer_tag: "ctag".into(),
        delivery_tag: 42,
        redelivered: false,
        exchange: "ex".into(),
        routing_key: "rk".into(),
    }
    .into()
}

fn props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/octet-stream")
        .with_message_id("m-1")
}

fn method(method: Method) -> Frame {
    Frame::Method {
        channel: CH,
        method,
    }
}

fn header(body_size: u64) -> Frame {
    Frame::Header {
        channel: CH,
        header: ContentHeader::basic(body_size, props()),
    }
}

fn body(payload: &'static [u8]) -> Frame {
    Frame::Body {
        channel: CH,
        payload: Bytes::from_static(payload),
    }
}

fn unexpected(found: &'static str, state: &'static str) -> DecodeError {
    DecodeError::UnexpectedFrame {
        channel: CH,
        found,
        state,
    }
}

#[test]
fn methods_without_content_pass_straight_through() {
    let mut a = ContentAssembler::new(CH);
    let ack: Method = basic::Ack {
        delivery_tag: 1,
        multiple: true,
    }
    .into();
    assert_eq!(
        a.handle_frame(method(ack.clone())),
        Ok(Some(Assembled::Method(ack)))
    );
    assert!(a.is_idle());
}

#[test]
fn an_empty_body_completes_the_message_at_the_header() {
    let mut a = ContentAssembler::new(CH);
    assert_eq!(a.handle_frame(method(deliver())), Ok(None));
    assert!(!a.is_idle());
    assert_eq!(
        a.handle_frame(header(0)),
        Ok(Some(Assembled::Content(Content {
            method: deliver(),
            properties: Box::new(props()),
            body: Bytes::new(),
        })))
    );
    assert!(a.is_idle());
    // No body frame is expected after it.
    assert_eq!(
        a.handle_frame(body(b"x")),
        Err(unexpected("body", "expecting a method"))
    );
}

#[test]
fn a_body_in_several_frames_is_joined() {
    let mut a = ContentAssembler::new(CH);
    assert_eq!(a.handle_frame(method(deliver())), Ok(None));
    assert_eq!(a.handle_frame(header(11)), Ok(None));
    assert_eq!(a.handle_frame(body(b"hello")), Ok(None));
    assert_eq!(a.handle_frame(body(b"")), Ok(None));
    assert_eq!(a.handle_frame(body(b" ")), Ok(None));
    let Ok(Some(Assembled::Content(c))) = a.handle_frame(body(b"world")) else {
        panic!("the message was not completed");
    };
    assert_eq!(c.method, deliver());
    assert_eq!(*c.properties, props());
    assert_eq!(&c.body[..], b"hello world");
    assert!(a.is_idle());
    // Ready for the next message.
    assert_eq!(a.handle_frame(method(deliver())), Ok(None));
}

#[test]
fn frames_out_of_order_are_unexpected() {
    // A body or a header with no method before it.
    let mut a = ContentAssembler::new(CH);
    assert_eq!(
        a.handle_frame(body(b"abc")),
        Err(unexpected("body", "expecting a method"))
    );
    let mut a = ContentAssembler::new(CH);
    assert_eq!(
        a.handle_frame(header(3)),
        Err(unexpected("content header", "expecting a method"))
    );
    // A header after a method that carries no content.
    let mut a = ContentAssembler::new(CH);
    let purge: Method = queue::PurgeOk { message_count: 0 }.into();
    assert!(matches!(
        a.handle_frame(method(purge)),
        Ok(Some(Assembled::Method(_)))
    ));
    assert_eq!(
        a.handle_frame(header(0)),
        Err(unexpected("content header", "expecting a method"))
    );

    // While waiting for the header: a body, or another method.
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    assert_eq!(
        a.handle_frame(body(b"abc")),
        Err(unexpected("body", "expecting a content header"))
    );
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    assert_eq!(
        a.handle_frame(method(deliver())),
        Err(unexpected("method", "expecting a content header"))
    );

    // While waiting for the body: a method (content-bearing or not), or a second header.
    for interloper in [deliver(), channel::CloseOk {}.into()] {
        let mut a = ContentAssembler::new(CH);
        a.handle_frame(method(deliver())).unwrap();
        a.handle_frame(header(10)).unwrap();
        a.handle_frame(body(b"12345")).unwrap();
        assert_eq!(
            a.handle_frame(method(interloper)),
            Err(unexpected("method", "expecting a body frame"))
        );
    }
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    a.handle_frame(header(10)).unwrap();
    assert_eq!(
        a.handle_frame(header(10)),
        Err(unexpected("content header", "expecting a body frame"))
    );

    // Heartbeats belong to the connection, never to a channel.
    let mut a = ContentAssembler::new(CH);
    assert_eq!(
        a.handle_frame(Frame::Heartbeat),
        Err(unexpected("heartbeat", "expecting a method"))
    );
}

#[test]
fn a_body_longer_than_announced_is_refused() {
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    a.handle_frame(header(5)).unwrap();
    assert_eq!(
        a.handle_frame(body(b"123456")),
        Err(DecodeError::BodyTooLong {
            channel: CH,
            expected: 5
        })
    );
    // Over the size only with the second frame.
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    a.handle_frame(header(5)).unwrap();
    assert_eq!(a.handle_frame(body(b"123")), Ok(None));
    assert_eq!(
        a.handle_frame(body(b"456")),
        Err(DecodeError::BodyTooLong {
            channel: CH,
            expected: 5
        })
    );
}

#[test]
fn a_header_announcing_more_than_max_body_is_refused() {
    let mut a = ContentAssembler::with_max_body(CH, 100);
    a.handle_frame(method(deliver())).unwrap();
    assert_eq!(
        a.handle_frame(header(101)),
        Err(DecodeError::BodyTooLarge {
            channel: CH,
            size: 101,
            max: 100
        })
    );
    // Exactly the limit is fine.
    let mut a = ContentAssembler::with_max_body(CH, 100);
    a.handle_frame(method(deliver())).unwrap();
    assert_eq!(a.handle_frame(header(100)), Ok(None));

    // The default limit, against a header announcing the largest size there is.
    let mut a = ContentAssembler::new(CH);
    a.handle_frame(method(deliver())).unwrap();
    assert_eq!(
        a.handle_frame(header(u64::MAX)),
        Err(DecodeError::BodyTooLarge {
            channel: CH,
            size: u64::MAX,
            max: DEFAULT_MAX_BODY
        })
    );
}

/// Decodes every frame in `read_buf` and feeds it to a fresh assembler; returns the message.
fn receive(read_buf: &mut BytesMut, frame_max: u32) -> Content {
    let decoder = FrameDecoder::new(frame_max);
    let mut a = ContentAssembler::new(CH);
    let mut message = None;
    while let Some(f) = decoder.decode(read_buf).unwrap() {
        if let Some(Assembled::Content(c)) = a.handle_frame(f).unwrap() {
            message = Some(c);
        }
    }
    assert!(read_buf.is_empty());
    message.expect("a whole message")
}

#[test]
fn a_single_frame_body_is_not_copied() {
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut read_buf = BytesMut::new();
    content::encode_content(&mut read_buf, CH, &deliver(), &props(), &body, 4096).unwrap();
    // The body frame is last: its payload ends just before the frame-end octet.
    let start = read_buf.as_ptr() as usize;
    let body_at = start + read_buf.len() - 1 - body.len();

    let message = receive(&mut read_buf, 4096);
    assert_eq!(&message.body[..], &body[..]);
    assert_eq!(
        message.body.as_ptr() as usize,
        body_at,
        "the body must be the read buffer's own bytes"
    );
}

#[test]
fn a_body_of_several_frames_arrives_whole() {
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let mut read_buf = BytesMut::new();
    content::encode_content(&mut read_buf, CH, &deliver(), &props(), &body, 4096).unwrap();
    let message = receive(&mut read_buf, 4096);
    assert_eq!(message.method, deliver());
    assert_eq!(*message.properties, props());
    assert_eq!(&message.body[..], &body[..]);
}

#[test]
fn header_of_another_class_than_its_method_is_refused() {
    use serena::proto::{ContentAssembler, ContentHeader, DecodeError, method};
    let mut asm = ContentAssembler::new(9);
    let deliver = method::basic::Deliver::default();
    assert!(asm.handle_method(deliver.into()).unwrap().is_none());
    let mut header = ContentHeader::basic(3, Default::default());
    header.class_id = 50;
    assert_eq!(
        asm.handle_header(header),
        Err(DecodeError::ContentClassMismatch {
            channel: 9,
            method_class: 60,
            header_class: 50
        })
    );
}

#[test]
fn header_frame_over_frame_max_is_an_encode_error_and_writes_nothing() {
    use bytes::BytesMut;
    use serena::proto::{BasicProperties, EncodeError, FieldTable, content, method};
    let big: FieldTable = (0..200)
        .map(|i| (format!("header-{i:03}"), "x".repeat(40)))
        .collect();
    let props = BasicProperties::default().with_headers(big);
    let mut buf = BytesMut::from(&b"earlier frames"[..]);
    let err = content::encode_content(
        &mut buf,
        1,
        &method::basic::Publish::default().into(),
        &props,
        b"body",
        4096,
    )
    .unwrap_err();
    assert!(
        matches!(err, EncodeError::FrameTooLarge { context: "content header frame", frame_max: 4096, size } if size > 4096),
        "{err:?}"
    );
    assert_eq!(&buf[..], b"earlier frames");
}
