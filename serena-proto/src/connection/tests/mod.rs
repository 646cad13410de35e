//! The protocol rules of the state machine, without a socket: frames in, frames and waiter
//! notes out. The harness is here (the test [`Sinks`] `T`, [`machine`], [`open`], [`sent`],
//! [`methods`]), with the rules of channels' lives, confirms, returns and consumers; the rules
//! a hostile server breaks, and the reply code of each, are in [`rules`].

mod acks;
mod rules;

use std::sync::mpsc::{Receiver, Sender, channel};

use bytes::Bytes;

use super::*;
use crate::content::Content;
use crate::frame::{Frame, FrameDecoder};
use crate::method::{basic, channel as chm, connection as connm};
use crate::properties::{BasicProperties, ContentHeader};
use crate::table::{FieldTable, FieldValue};

/// What the test's waiters were told, in order, on one log per channel.
#[derive(Debug)]
enum Note {
    Reply(Result<Assembled, Failure>),
    Confirm(Result<(), Failure>),
    Delivery(Content),
    ConsumerEnded(Failure),
    ChannelEnded(Failure),
    Flow(bool),
}

struct T;

impl Sinks for T {
    type Error = Failure;
    type Call = Sender<Note>;
    type Confirm = Sender<Note>;
    type Consumer = Sender<Note>;
    type Channel = Sender<Note>;

    fn reply(call: Sender<Note>, reply: Result<Assembled, Failure>) -> bool {
        call.send(Note::Reply(reply)).is_ok()
    }
    fn confirm(confirm: Sender<Note>, outcome: Result<(), Failure>) {
        let _ = confirm.send(Note::Confirm(outcome));
    }
    fn deliver(consumer: &Sender<Note>, delivery: Content) -> bool {
        consumer.send(Note::Delivery(delivery)).is_ok()
    }
    fn end_consumer(consumer: Sender<Note>, reason: Failure) {
        let _ = consumer.send(Note::ConsumerEnded(reason));
    }
    fn channel_ended(channel: &Sender<Note>, reason: &Failure) {
        let _ = channel.send(Note::ChannelEnded(reason.clone()));
    }
    fn flow_changed(channel: &Sender<Note>, active: bool) {
        let _ = channel.send(Note::Flow(active));
    }
}

fn machine() -> Connection<T> {
    Connection::new(Tuning {
        channel_max: 0,
        frame_max: 131_072,
        heartbeat: 0,
    })
}

/// The frames the machine queued since the last look.
fn sent(m: &mut Connection<T>) -> Vec<Frame> {
    let mut buf = bytes::BytesMut::from(&m.transmit().take().concat()[..]);
    let decoder = FrameDecoder::new(131_072);
    let mut frames = Vec::new();
    while let Some(f) = decoder
        .decode(&mut buf)
        .expect("the machine sends valid frames")
    {
        frames.push(f);
    }
    frames
}

fn methods(m: &mut Connection<T>) -> Vec<Method> {
    sent(m)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Method { method, .. } => Some(method),
            _ => None,
        })
        .collect()
}

fn method(channel: u16, method: impl Into<Method>) -> Frame {
    Frame::Method {
        channel,
        method: method.into(),
    }
}

/// Feeds a method with its content header and body.
fn content(
    m: &mut Connection<T>,
    channel: u16,
    head: impl Into<Method>,
    properties: BasicProperties,
    body: &'static [u8],
) -> Result<(), Failure> {
    m.handle_frame(method(channel, head))?;
    m.handle_frame(Frame::Header {
        channel,
        header: ContentHeader::basic(body.len() as u64, properties),
    })?;
    if !body.is_empty() {
        m.handle_frame(Frame::Body {
            channel,
            payload: Bytes::from_static(body),
        })?;
    }
    Ok(())
}

fn deliver(
    m: &mut Connection<T>,
    channel: u16,
    tag: &str,
    delivery_tag: u64,
) -> Result<(), Failure> {
    content(
        m,
        channel,
        basic::Deliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        },
        BasicProperties::default(),
        b"hi",
    )
}

/// Opens a channel and answers its open-ok; the channel's log.
fn open(m: &mut Connection<T>) -> (ChannelRef, Receiver<Note>) {
    let (tx, rx) = channel();
    let r = m.open_channel(tx.clone(), tx).expect("an id");
    m.handle_frame(method(r.id, chm::OpenOk {}))
        .expect("open-ok");
    assert!(matches!(rx.try_recv(), Ok(Note::Reply(Ok(_)))));
    sent(m);
    (r, rx)
}

/// Opens a channel in confirm mode (`confirm.select` answered); the channel's log.
fn open_confirming(m: &mut Connection<T>) -> (ChannelRef, Receiver<Note>) {
    let (r, log) = open(m);
    let (tx, rx) = channel();
    m.call(
        r,
        &crate::method::confirm::Select { nowait: false }.into(),
        tx,
    )
    .expect("confirm.select");
    m.handle_frame(method(r.id, crate::method::confirm::SelectOk {}))
        .expect("select-ok");
    assert!(matches!(rx.try_recv(), Ok(Note::Reply(Ok(_)))));
    sent(m);
    (r, log)
}

fn server_close(code: u16) -> chm::Close {
    chm::Close {
        reply_code: code,
        reply_text: "NOT_FOUND - no queue 'x'".into(),
        class_id: 50,
        method_id: 10,
    }
}

fn consume(
    m: &mut Connection<T>,
    r: ChannelRef,
    no_ack: bool,
) -> (ShortString, Receiver<Note>, Receiver<Note>) {
    let (sink, deliveries) = channel();
    let (waiter, reply) = channel();
    let tag = m
        .consume(
            r,
            basic::Consume {
                queue: "q".into(),
                consumer_tag: ShortString::new(),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::new(),
            },
            sink,
            waiter,
        )
        .expect("consume sent");
    (tag, deliveries, reply)
}

/// The server's consume-ok for `tag`.
fn consume_ok(m: &mut Connection<T>, r: ChannelRef, tag: &ShortString) {
    m.handle_frame(method(
        r.id,
        basic::ConsumeOk {
            consumer_tag: tag.clone(),
        },
    ))
    .unwrap();
}

#[test]
fn late_deliveries_after_a_server_channel_close_are_dropped_not_fatal() {
    let mut m = machine();
    let (r, log) = open(&mut m);
    let (tag, deliveries, _reply) = consume(&mut m, r, false);
    consume_ok(&mut m, r, &tag);
    deliver(&mut m, r.id, &tag, 1).unwrap();
    assert!(matches!(deliveries.try_recv(), Ok(Note::Delivery(c)) if &c.body[..] == b"hi"));
    m.handle_frame(method(r.id, server_close(404))).unwrap();
    assert!(matches!(
        &methods(&mut m)[..],
        [_, Method::ChannelCloseOk(_)]
    ));
    // RabbitMQ keeps writing what it had queued.
    for t in 2..=201 {
        deliver(&mut m, r.id, &tag, t).expect("a late delivery is not a protocol error");
    }
    assert_eq!(
        m.stats().late_frames,
        600,
        "method, header and body of each"
    );
    assert!(
        sent(&mut m).is_empty(),
        "nothing is acked or rejected for them"
    );
    assert!(m.error().is_none());
    assert!(
        matches!(log.try_recv(), Ok(Note::ChannelEnded(Failure::ServerClosed(c))) if c.reply_code == 404)
    );
    // The consumer learned why it ended, after no delivery.
    assert!(matches!(
        deliveries.try_recv(),
        Ok(Note::ConsumerEnded(Failure::ServerClosed(_)))
    ));
}

#[test]
fn a_new_channel_never_gets_the_old_ids_late_frames() {
    let mut m = machine();
    let (old, _log) = open(&mut m);
    m.handle_frame(method(old.id, server_close(404))).unwrap();
    let (tx, new_log) = channel();
    let new = m.open_channel(tx.clone(), tx).unwrap();
    assert_ne!(new.id, old.id, "ids are handed out round-robin");
    // Even when the id comes back (a table of two ids), frames before its open-ok are the
    // previous life's.
    let mut small = Connection::<T>::new(Tuning {
        channel_max: 1,
        frame_max: 131_072,
        heartbeat: 0,
    });
    let (first, _l) = open(&mut small);
    let (tag, _d, _r) = consume(&mut small, first, false);
    small
        .handle_frame(method(first.id, server_close(404)))
        .unwrap();
    let (tx, again_log) = channel();
    let again = small.open_channel(tx.clone(), tx).unwrap();
    assert_eq!(again.id, first.id);
    sent(&mut small);
    deliver(&mut small, first.id, &tag, 7).unwrap();
    small
        .handle_frame(method(again.id, chm::OpenOk {}))
        .unwrap();
    assert!(matches!(again_log.try_recv(), Ok(Note::Reply(Ok(_)))));
    assert!(
        again_log.try_recv().is_err(),
        "no delivery reached the new life"
    );
    assert!(
        sent(&mut small).is_empty(),
        "and nothing was rejected on it"
    );
    // A handle of the old life cannot act on the new one.
    assert!(
        small
            .settle(
                first,
                &basic::Ack {
                    delivery_tag: 7,
                    multiple: false
                }
                .into()
            )
            .is_err()
    );
    assert!(sent(&mut small).is_empty());
    drop(new_log);
}

#[test]
fn a_delivery_for_a_consumer_tag_this_channel_never_had_is_dropped_unanswered() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    deliver(&mut m, r.id, "serena.9.9", 1).unwrap();
    assert!(
        sent(&mut m).is_empty(),
        "rejecting it would be a 406 unknown delivery tag"
    );
    assert_eq!(m.stats().late_frames, 1);
}

fn publish(
    m: &mut Connection<T>,
    r: ChannelRef,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Receiver<Note> {
    let (tx, rx) = channel();
    let table: FieldTable = headers
        .iter()
        .map(|(k, v)| (*k, FieldValue::from(*v)))
        .collect();
    let properties = BasicProperties {
        headers: Some(table),
        ..Default::default()
    };
    m.publish(
        r,
        &Publish {
            exchange: "by-header",
            routing_key: "same",
            mandatory: true,
            immediate: false,
            properties: (&properties).into(),
            body: Body::Borrowed(body),
        },
        tx,
    )
    .unwrap();
    rx
}

fn return_of(m: &mut Connection<T>, r: ChannelRef, headers: &[(&str, &str)], body: &'static [u8]) {
    let table: FieldTable = headers
        .iter()
        .map(|(k, v)| (*k, FieldValue::from(*v)))
        .collect();
    content(
        m,
        r.id,
        basic::Return {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "by-header".into(),
            routing_key: "same".into(),
        },
        BasicProperties {
            headers: Some(table),
            ..Default::default()
        },
        body,
    )
    .unwrap();
}

fn ack(m: &mut Connection<T>, r: ChannelRef, tag: u64, multiple: bool) {
    m.handle_frame(method(
        r.id,
        basic::Ack {
            delivery_tag: tag,
            multiple,
        },
    ))
    .unwrap();
}

fn outcome(rx: &Receiver<Note>) -> Result<(), Failure> {
    match rx.try_recv() {
        Ok(Note::Confirm(r)) => r,
        other => panic!("no confirm: {other:?}"),
    }
}

#[test]
fn a_return_fails_the_publish_it_belongs_to_when_the_key_does_not_decide() {
    // A routable (k=v) and B unroutable (k=other), same exchange and key: RabbitMQ returns
    // B, acks B, and acks A later when its queue confirmed it.
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let a = publish(&mut m, r, &[("k", "v")], b"A");
    let b = publish(&mut m, r, &[("k", "other")], b"B");
    return_of(&mut m, r, &[("k", "other")], b"B");
    ack(&mut m, r, 2, false);
    ack(&mut m, r, 1, false);
    assert!(outcome(&a).is_ok(), "A was routed");
    match outcome(&b) {
        Err(Failure::Returned(ret)) => assert_eq!(&ret.body[..], b"B"),
        other => panic!("B: {other:?}"),
    }
}

#[test]
fn a_return_covered_by_a_multiple_ack_finds_its_publish_by_content() {
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let a = publish(&mut m, r, &[("k", "v")], b"A");
    let b = publish(&mut m, r, &[("k", "other")], b"B");
    let c = publish(&mut m, r, &[("k", "v")], b"C");
    return_of(&mut m, r, &[("k", "other")], b"B");
    ack(&mut m, r, 3, true);
    assert!(outcome(&a).is_ok());
    assert!(matches!(outcome(&b), Err(Failure::Returned(ret)) if &ret.body[..] == b"B"));
    assert!(outcome(&c).is_ok());
}

#[test]
fn a_return_never_reaches_an_earlier_publish_its_ack_does_not_cover() {
    // B returned and acked alone while A waits: even with identical content the return is
    // B's, because it came before B's ack.
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let a = publish(&mut m, r, &[], b"same");
    let b = publish(&mut m, r, &[], b"same");
    return_of(&mut m, r, &[], b"same");
    ack(&mut m, r, 2, false);
    assert!(matches!(outcome(&b), Err(Failure::Returned(_))));
    assert!(a.try_recv().is_err(), "A is still unconfirmed");
    ack(&mut m, r, 1, false);
    assert!(outcome(&a).is_ok());
}

#[test]
fn a_consume_dropped_before_consume_ok_is_cancelled_and_its_deliveries_given_back() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tag, deliveries, reply) = consume(&mut m, r, false);
    sent(&mut m);
    drop((deliveries, reply));
    consume_ok(&mut m, r, &tag);
    assert!(
        matches!(&methods(&mut m)[..], [Method::BasicCancel(c)] if c.consumer_tag == tag),
        "cancelled on the broker"
    );
    deliver(&mut m, r.id, &tag, 5).unwrap();
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::BasicReject(j)] if j.delivery_tag == 5 && j.requeue
    ));
    m.handle_frame(method(
        r.id,
        basic::CancelOk {
            consumer_tag: tag.clone(),
        },
    ))
    .unwrap();
    deliver(&mut m, r.id, &tag, 6).unwrap();
    assert!(
        sent(&mut m).is_empty(),
        "after cancel-ok the tag means nothing"
    );
}

#[test]
fn a_no_ack_consumer_that_is_gone_is_cancelled_without_rejects() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tag, deliveries, _reply) = consume(&mut m, r, true);
    consume_ok(&mut m, r, &tag);
    sent(&mut m);
    drop(deliveries);
    for t in 1..=3 {
        deliver(&mut m, r.id, &tag, t).unwrap();
    }
    let out = methods(&mut m);
    assert!(
        matches!(&out[..], [Method::BasicCancel(_)]),
        "one cancel and no reject (RabbitMQ answers a reject of a no-ack delivery with 406): {out:?}"
    );
}

#[test]
fn a_get_dropped_before_get_ok_gives_its_message_back() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tx, rx) = channel();
    m.call(
        r,
        &basic::Get {
            queue: "q".into(),
            no_ack: false,
        }
        .into(),
        tx,
    )
    .unwrap();
    sent(&mut m);
    drop(rx);
    content(
        &mut m,
        r.id,
        basic::GetOk {
            delivery_tag: 9,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
            message_count: 0,
        },
        BasicProperties::default(),
        b"x",
    )
    .unwrap();
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::BasicReject(j)] if j.delivery_tag == 9 && j.requeue
    ));
}

#[test]
fn nothing_is_settled_or_cancelled_on_a_channel_that_is_not_open() {
    let ack: Method = basic::Ack {
        delivery_tag: 1,
        multiple: false,
    }
    .into();
    // After our close (the handle dropped while a delivery lives on).
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tag, _d, _reply) = consume(&mut m, r, false);
    m.close_channel(r, None).unwrap();
    sent(&mut m);
    assert!(matches!(m.settle(r, &ack), Err(Failure::Closed("channel"))));
    assert!(m.cancel(r, &tag, None).is_err());
    assert!(
        sent(&mut m).is_empty(),
        "RabbitMQ would close the connection with 504"
    );
    // After the server's close.
    let (r2, _log2) = open(&mut m);
    m.handle_frame(method(r2.id, server_close(406))).unwrap();
    sent(&mut m);
    assert!(m.settle(r2, &ack).is_err());
    assert!(sent(&mut m).is_empty());
}

#[test]
fn a_channel_records_its_end_before_any_waiter_is_told() {
    let mut m = machine();
    // The channel's watch and the call's waiter share one log, so the order shows.
    let (tx, log) = channel();
    let r = m.open_channel(tx.clone(), tx.clone()).unwrap();
    m.handle_frame(method(r.id, chm::OpenOk {})).unwrap();
    assert!(matches!(log.try_recv(), Ok(Note::Reply(Ok(_)))));
    let purge = crate::method::queue::Purge {
        queue: "q".into(),
        nowait: false,
    };
    m.call(r, &purge.into(), tx).unwrap();
    m.handle_frame(method(r.id, server_close(404))).unwrap();
    assert!(
        matches!(log.try_recv(), Ok(Note::ChannelEnded(_))),
        "first the channel's end"
    );
    assert!(
        matches!(
            log.try_recv(),
            Ok(Note::Reply(Err(Failure::ServerClosed(_))))
        ),
        "then the call"
    );
    assert!(!m.channel_is_open(r));
}

#[test]
fn closes_that_cross_keep_the_id_until_our_close_ok() {
    let mut m = machine();
    let (r, log) = open(&mut m);
    let (tx, rx) = channel();
    m.close_channel(r, Some(tx)).unwrap();
    m.handle_frame(method(r.id, server_close(406))).unwrap();
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::ChannelClose(_), Method::ChannelCloseOk(_)]
    ));
    assert_eq!(m.open_channels(), 1, "still closing");
    m.handle_frame(method(r.id, chm::CloseOk {})).unwrap();
    assert_eq!(m.open_channels(), 0);
    assert!(
        matches!(rx.try_recv(), Ok(Note::Reply(Ok(_)))),
        "close() completes"
    );
    assert!(matches!(
        log.try_recv(),
        Ok(Note::ChannelEnded(Failure::Closed("channel")))
    ));
    assert!(m.error().is_none());
}

#[test]
fn after_our_close_confirms_still_count_and_deliveries_are_discarded() {
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let (tag, deliveries, _reply) = consume(&mut m, r, false);
    consume_ok(&mut m, r, &tag);
    let p = publish(&mut m, r, &[], b"x");
    m.close_channel(r, None).unwrap();
    sent(&mut m);
    deliver(&mut m, r.id, &tag, 1).unwrap();
    m.handle_frame(method(r.id, chm::Flow { active: false }))
        .unwrap();
    ack(&mut m, r, 1, false);
    assert!(outcome(&p).is_ok(), "the broker took it before our close");
    assert!(sent(&mut m).is_empty(), "no reject, no flow-ok");
    assert!(!matches!(deliveries.try_recv(), Ok(Note::Delivery(_))));
}

#[test]
fn the_servers_rule_breaks_close_the_connection_with_their_reply_code() {
    let cases: Vec<(Frame, u16)> = vec![
        (method(3, chm::OpenOk {}), CHANNEL_ERROR),
        (method(1, connm::CloseOk {}), COMMAND_INVALID),
        (
            Frame::Body {
                channel: 0,
                payload: Bytes::from_static(b"x"),
            },
            CHANNEL_ERROR,
        ),
        (method(0, chm::OpenOk {}), CHANNEL_ERROR),
        (method(0, connm::OpenOk {}), COMMAND_INVALID),
    ];
    for (frame, code) in cases {
        let mut m = machine();
        let (_r, _log) = open(&mut m);
        let err = m.handle_frame(frame.clone()).expect_err("a violation");
        assert!(
            matches!(err, Failure::UnexpectedMethod(_)),
            "{frame:?}: {err:?}"
        );
        match &methods(&mut m)[..] {
            [Method::ConnectionClose(c)] => assert_eq!(c.reply_code, code, "{frame:?}"),
            other => panic!("{frame:?}: sent {other:?}"),
        }
        assert!(
            m.open_channel(channel().0, channel().0).is_err(),
            "the connection is over"
        );
    }
}

#[test]
fn content_a_client_never_receives_is_an_invalid_command() {
    let mut m = machine();
    let (r, log) = open(&mut m);
    let err = content(
        &mut m,
        r.id,
        basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        },
        BasicProperties::default(),
        b"x",
    )
    .expect_err("basic.publish from the server");
    assert!(matches!(err, Failure::UnexpectedMethod(_)));
    assert!(
        matches!(&methods(&mut m)[..], [Method::ConnectionClose(c)] if c.reply_code == COMMAND_INVALID)
    );
    assert!(matches!(
        log.try_recv(),
        Ok(Note::ChannelEnded(Failure::UnexpectedMethod(_)))
    ));
}

#[test]
fn after_our_connection_close_only_close_and_close_ok_are_read() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    m.close(200, "bye").unwrap();
    sent(&mut m);
    deliver(&mut m, r.id, "t", 1).unwrap();
    m.handle_frame(method(9, chm::OpenOk {}))
        .expect("not even a frame on a bad channel counts");
    m.handle_frame(method(0, connm::CloseOk {})).unwrap();
    assert_eq!(m.poll_event(), Some(Event::Closed));
    assert!(matches!(m.error(), Some(Failure::Closed("connection"))));
}

#[test]
fn flow_pauses_publishing_and_is_acknowledged() {
    let mut m = machine();
    let (r, log) = open(&mut m);
    m.handle_frame(method(r.id, chm::Flow { active: false }))
        .unwrap();
    assert!(m.publish_paused(r).unwrap());
    assert!(matches!(log.try_recv(), Ok(Note::Flow(false))));
    assert!(matches!(&methods(&mut m)[..], [Method::ChannelFlowOk(f)] if !f.active));
    m.handle_frame(method(r.id, chm::Flow { active: true }))
        .unwrap();
    assert!(!m.publish_paused(r).unwrap());
}

fn with_heartbeat(secs: u16) -> (Connection<T>, std::time::Instant) {
    let mut m = Connection::new(Tuning {
        channel_max: 0,
        frame_max: 131_072,
        heartbeat: secs,
    });
    let start = std::time::Instant::now();
    m.handle_received(start);
    m.handle_sent(start);
    (m, start)
}

#[test]
fn a_heartbeat_goes_out_after_half_an_interval_of_quiet_and_not_before() {
    let (mut m, start) = with_heartbeat(10);
    let s = std::time::Duration::from_secs;
    assert_eq!(m.poll_timeout(), Some(start + s(5)));
    m.handle_timeout(start + s(4)).unwrap();
    assert!(sent(&mut m).is_empty(), "too early");
    m.handle_timeout(start + s(5)).unwrap();
    assert!(matches!(&sent(&mut m)[..], [Frame::Heartbeat]));
    assert_eq!(m.stats().heartbeats_sent, 1);
    // Traffic of our own postpones the next one.
    m.handle_sent(start + s(8));
    assert_eq!(m.poll_timeout(), Some(start + s(13)));
    m.handle_timeout(start + s(12)).unwrap();
    assert!(sent(&mut m).is_empty());
}

#[test]
fn two_intervals_without_a_byte_from_the_server_end_the_connection() {
    let (mut m, start) = with_heartbeat(1);
    let (r, log) = open(&mut m);
    let ms = std::time::Duration::from_millis;
    m.handle_received(start + ms(1500));
    m.handle_sent(start + ms(3400));
    m.handle_timeout(start + ms(3400))
        .expect("1.9 s of silence is fine");
    let err = m
        .handle_timeout(start + ms(3500))
        .expect_err("2 s of silence is not");
    assert!(matches!(err, Failure::HeartbeatTimeout(d) if d == ms(2000)));
    assert!(matches!(
        log.try_recv(),
        Ok(Note::ChannelEnded(Failure::HeartbeatTimeout(_)))
    ));
    assert!(
        m.call(r, &chm::Flow { active: true }.into(), channel().0)
            .is_err()
    );
}

#[test]
fn without_heartbeats_there_is_no_timer() {
    let mut m = machine();
    m.handle_received(std::time::Instant::now());
    m.handle_sent(std::time::Instant::now());
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_return_survives_an_ack_of_another_publish_that_came_between() {
    // Seen against RabbitMQ with hundreds in flight: B's return, then A's ack (its queue
    // confirmed it), then B's ack. The return is B's by its content.
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let a = publish(&mut m, r, &[("k", "v")], b"routable-1");
    let b = publish(&mut m, r, &[("k", "other")], b"unroutable-1");
    return_of(&mut m, r, &[("k", "other")], b"unroutable-1");
    ack(&mut m, r, 1, false);
    assert!(outcome(&a).is_ok());
    ack(&mut m, r, 2, false);
    assert!(matches!(outcome(&b), Err(Failure::Returned(ret)) if &ret.body[..] == b"unroutable-1"));
}

#[test]
fn a_cancel_ok_that_comes_after_a_later_calls_reply_reaches_the_cancel() {
    // RabbitMQ 3.10.8 answers basic.cancel then queue.declare with declare-ok first.
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tag, _deliveries, reply) = consume(&mut m, r, false);
    consume_ok(&mut m, r, &tag);
    assert!(matches!(reply.try_recv(), Ok(Note::Reply(Ok(_)))));
    let (cancel_tx, cancelled) = channel();
    assert!(m.cancel(r, &tag, Some(cancel_tx)).unwrap());
    let (purge_tx, purged) = channel();
    let purge = crate::method::queue::Purge {
        queue: "q".into(),
        nowait: false,
    };
    m.call(r, &purge.into(), purge_tx).unwrap();
    m.handle_frame(method(
        r.id,
        crate::method::queue::PurgeOk { message_count: 3 },
    ))
    .unwrap();
    m.handle_frame(method(r.id, basic::CancelOk { consumer_tag: tag }))
        .unwrap();
    assert!(matches!(
        purged.try_recv(),
        Ok(Note::Reply(Ok(Assembled::Method(Method::QueuePurgeOk(_)))))
    ));
    assert!(matches!(
        cancelled.try_recv(),
        Ok(Note::Reply(Ok(Assembled::Method(Method::BasicCancelOk(_)))))
    ));
}

fn plain_publish(mandatory: bool) -> Publish<'static> {
    static PROPERTIES: std::sync::LazyLock<BasicProperties> =
        std::sync::LazyLock::new(BasicProperties::default);
    Publish {
        exchange: "",
        routing_key: "q",
        mandatory,
        immediate: false,
        properties: (&*PROPERTIES).into(),
        body: Body::Borrowed(b"telemetry"),
    }
}

#[test]
fn a_channel_without_confirm_mode_refuses_a_publish_that_waits_for_a_confirm() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    let (tx, rx) = channel();
    let refused = m.publish(r, &plain_publish(false), tx);
    assert!(matches!(refused, Err(Failure::Misuse(_))), "{refused:?}");
    assert!(sent(&mut m).is_empty(), "nothing sent");
    assert_eq!(m.unconfirmed(r), 0);
    assert!(rx.try_recv().is_err(), "no confirm promised");
}

#[test]
fn fire_and_forget_publishes_go_out_and_take_no_sequence_number() {
    let mut m = machine();
    let (r, _log) = open(&mut m);
    for _ in 0..3 {
        m.publish_unconfirmed(r, &plain_publish(false)).unwrap();
    }
    let frames = sent(&mut m);
    let publishes = frames
        .iter()
        .filter(
            |f| matches!(f, Frame::Method { method: Method::BasicPublish(p), .. } if !p.mandatory),
        )
        .count();
    assert_eq!(publishes, 3);
    assert_eq!(frames.len(), 9, "method, header and body for each");
    assert_eq!(m.unconfirmed(r), 0, "nothing waits for a confirm");
}

#[test]
fn a_channel_in_confirm_mode_refuses_a_fire_and_forget_publish() {
    // It would take a sequence number nobody waits for and shift every later confirm.
    let mut m = machine();
    let (r, _log) = open_confirming(&mut m);
    let refused = m.publish_unconfirmed(r, &plain_publish(false));
    assert!(matches!(refused, Err(Failure::Misuse(_))), "{refused:?}");
    assert!(sent(&mut m).is_empty());
    let p = publish(&mut m, r, &[], b"x");
    ack(&mut m, r, 1, false);
    assert!(outcome(&p).is_ok(), "sequence numbers still line up");
}

#[test]
fn a_mandatory_publish_needs_confirm_mode_and_a_stray_return_is_dropped() {
    let mut m = machine();
    let (r, log) = open(&mut m);
    let refused = m.publish_unconfirmed(r, &plain_publish(true));
    assert!(matches!(refused, Err(Failure::Misuse(_))), "{refused:?}");
    assert!(sent(&mut m).is_empty());
    // A return nothing can wait for (no publish is pending) is dropped, not kept.
    return_of(&mut m, r, &[], b"telemetry");
    assert!(m.error().is_none());
    assert!(log.try_recv().is_err());
    assert!(m.channel_is_open(r));
}
