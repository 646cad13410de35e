//! Acks fold: an ack of the oldest unsettled delivery rewrites the channel's last ack, while
//! that still waits in the write buffer, into `ack(tag, multiple)`. The property test runs
//! every frame the machine sent through a model of RabbitMQ's own bookkeeping (its channel
//! keeps the unacknowledged deliveries in order; a multiple ack takes every one up to its
//! tag, and an ack or nack whose own tag is not outstanding is a 406 "unknown delivery tag")
//! and requires that the broker settles each message exactly as the user did.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// A channel with an acking consumer `a` and a `no_ack` consumer `n`, both confirmed.
fn consuming() -> (
    Connection<T>,
    ChannelRef,
    ShortString,
    ShortString,
    [Receiver<Note>; 5],
) {
    let mut m = machine();
    let (r, log) = open(&mut m);
    let (acking, a_deliveries, a_reply) = consume(&mut m, r, false);
    consume_ok(&mut m, r, &acking);
    let (no_ack, n_deliveries, n_reply) = consume(&mut m, r, true);
    consume_ok(&mut m, r, &no_ack);
    sent(&mut m);
    (
        m,
        r,
        acking,
        no_ack,
        [log, a_deliveries, a_reply, n_deliveries, n_reply],
    )
}

fn ack_one(m: &mut Connection<T>, r: ChannelRef, tag: u64) {
    m.settle(
        r,
        &basic::Ack {
            delivery_tag: tag,
            multiple: false,
        }
        .into(),
    )
    .expect("ack queued");
}

#[test]
fn acks_in_delivery_order_fold_into_one_multiple_ack() {
    let (mut m, r, acking, _, _logs) = consuming();
    for tag in 1..=5 {
        deliver(&mut m, r.id, &acking, tag).unwrap();
    }
    for tag in 1..=5 {
        ack_one(&mut m, r, tag);
    }
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::BasicAck(a)] if a.delivery_tag == 5 && a.multiple
    ));
    assert_eq!(m.stats().acks_folded, 4);
}

#[test]
fn an_ack_behind_an_unsettled_delivery_is_sent_alone_and_folds_nothing_it_must_not() {
    let (mut m, r, acking, _, _logs) = consuming();
    for tag in 1..=3 {
        deliver(&mut m, r.id, &acking, tag).unwrap();
    }
    ack_one(&mut m, r, 2);
    ack_one(&mut m, r, 1);
    ack_one(&mut m, r, 3);
    let acks: Vec<_> = methods(&mut m)
        .into_iter()
        .map(|method| match method {
            Method::BasicAck(a) => (a.delivery_tag, a.multiple),
            other => panic!("{other:?}"),
        })
        .collect();
    // 2 alone; 1 after it (folding 1 into 2's frame would lose 2); 3 folds into 1's frame,
    // which then covers 1 and 3.
    assert_eq!(acks, [(2, false), (3, true)]);
}

#[test]
fn a_nack_between_two_acks_keeps_them_apart() {
    let (mut m, r, acking, _, _logs) = consuming();
    for tag in 1..=3 {
        deliver(&mut m, r.id, &acking, tag).unwrap();
    }
    ack_one(&mut m, r, 1);
    m.settle(
        r,
        &basic::Nack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        }
        .into(),
    )
    .unwrap();
    ack_one(&mut m, r, 3);
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::BasicAck(a), Method::BasicNack(n), Method::BasicAck(b)]
            if (a.delivery_tag, a.multiple) == (1, false)
                && n.delivery_tag == 2
                && (b.delivery_tag, b.multiple) == (3, false)
    ));
}

#[test]
fn an_ack_the_writer_took_is_never_rewritten() {
    let (mut m, r, acking, _, _logs) = consuming();
    for tag in 1..=2 {
        deliver(&mut m, r.id, &acking, tag).unwrap();
    }
    ack_one(&mut m, r, 1);
    let first = m.transmit().take().concat();
    ack_one(&mut m, r, 2);
    assert!(matches!(
        &methods(&mut m)[..],
        [Method::BasicAck(a)] if (a.delivery_tag, a.multiple) == (2, false)
    ));
    let mut buf = bytes::BytesMut::from(&first[..]);
    let frame = FrameDecoder::new(131_072).decode(&mut buf).unwrap();
    assert!(matches!(
        frame,
        Some(Frame::Method { method: Method::BasicAck(a), .. }) if (a.delivery_tag, a.multiple) == (1, false)
    ));
}

#[test]
fn a_partly_written_buffer_is_never_rewritten() {
    let (mut m, r, acking, _, _logs) = consuming();
    for tag in 1..=2 {
        deliver(&mut m, r.id, &acking, tag).unwrap();
    }
    ack_one(&mut m, r, 1);
    // The driver wrote three bytes of the ack frame inline.
    m.transmit().advance(3);
    ack_one(&mut m, r, 2);
    assert_eq!(m.stats().acks_folded, 0);
    let mut wire = bytes::BytesMut::from(&[crate::frame::FRAME_METHOD, 0, r.id as u8][..]);
    wire.extend_from_slice(&m.transmit().take().concat());
    let decoder = FrameDecoder::new(131_072);
    let mut acks = Vec::new();
    while let Some(Frame::Method {
        method: Method::BasicAck(a),
        ..
    }) = decoder.decode(&mut wire).unwrap()
    {
        acks.push((a.delivery_tag, a.multiple));
    }
    assert_eq!(
        acks,
        [(1, false), (2, false)],
        "the first frame's rest as it was, then the second"
    );
}

/// One step of a consumer's life, for the property test.
#[derive(Debug, Clone)]
enum Op {
    /// A delivery to the acking consumer (`false`) or the no-ack one (`true`).
    Deliver { no_ack: bool },
    /// Settle the `pick`-th unsettled delivery (modulo how many there are).
    Settle { pick: usize, how: How },
    /// The writer takes what is queued.
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Ack,
    Nack,
    Reject,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Deliver { no_ack: false }),
        1 => Just(Op::Deliver { no_ack: true }),
        5 => (any::<usize>(), prop_oneof![6 => Just(How::Ack), 1 => Just(How::Nack), 1 => Just(How::Reject)])
            .prop_map(|(pick, how)| Op::Settle { pick, how }),
        1 => Just(Op::Write),
    ]
}

/// RabbitMQ's side: its unacknowledged deliveries in order, and how each was settled.
#[derive(Default)]
struct Broker {
    outstanding: Vec<u64>,
    settled: BTreeMap<u64, How>,
}

impl Broker {
    fn settle(&mut self, tag: u64, multiple: bool, how: How) -> Result<(), String> {
        let Some(at) = self.outstanding.iter().position(|&t| t == tag) else {
            return Err(format!("406 unknown delivery tag {tag}"));
        };
        let taken: Vec<u64> = if multiple {
            self.outstanding.drain(..=at).collect()
        } else {
            vec![self.outstanding.remove(at)]
        };
        for t in taken {
            self.settled.insert(t, how);
        }
        Ok(())
    }

    fn receive(&mut self, frames: Vec<Frame>) -> Result<(), String> {
        for frame in frames {
            match frame {
                Frame::Method {
                    method: Method::BasicAck(a),
                    ..
                } => self.settle(a.delivery_tag, a.multiple, How::Ack)?,
                Frame::Method {
                    method: Method::BasicNack(n),
                    ..
                } => self.settle(n.delivery_tag, n.multiple, How::Nack)?,
                Frame::Method {
                    method: Method::BasicReject(j),
                    ..
                } => self.settle(j.delivery_tag, false, How::Reject)?,
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn the_broker_settles_every_message_as_the_user_did(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut m, r, acking, no_ack, _logs) = consuming();
        let mut broker = Broker::default();
        let mut next_tag = 1;
        let mut unsettled: Vec<u64> = Vec::new();
        let mut intended = BTreeMap::new();
        for op in ops {
            match op {
                Op::Deliver { no_ack: quiet } => {
                    let tag = next_tag;
                    next_tag += 1;
                    deliver(&mut m, r.id, if quiet { &no_ack } else { &acking }, tag).unwrap();
                    if !quiet {
                        broker.outstanding.push(tag);
                        unsettled.push(tag);
                    }
                }
                Op::Settle { pick, how } if !unsettled.is_empty() => {
                    let tag = unsettled.remove(pick % unsettled.len());
                    intended.insert(tag, how);
                    let method: Method = match how {
                        How::Ack => basic::Ack { delivery_tag: tag, multiple: false }.into(),
                        How::Nack => basic::Nack { delivery_tag: tag, multiple: false, requeue: true }.into(),
                        How::Reject => basic::Reject { delivery_tag: tag, requeue: false }.into(),
                    };
                    m.settle(r, &method).unwrap();
                }
                Op::Settle { .. } => {}
                Op::Write => broker.receive(sent(&mut m)).map_err(TestCaseError::fail)?,
            }
        }
        broker.receive(sent(&mut m)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&broker.settled, &intended);
        prop_assert_eq!(broker.outstanding, unsettled);
    }
}
