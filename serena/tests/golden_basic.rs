//! Golden byte vectors for every method of the `basic`, `confirm` and `tx` classes (26 methods;
//! the other classes are in `golden_methods.rs`).
//!
//! Each vector is written by hand from the AMQP 0-9-1 spec (with RabbitMQ's extensions): class id,
//! method id, then the arguments in spec order. Bit fields that follow each other share one octet,
//! the first in the least significant bit. Deprecated "reserved" arguments are sent as zero or
//! empty. Every field holds a distinct, non-default value so a swapped or misordered field shows,
//! and every vector is checked both ways: encode(value) == bytes and decode(bytes) == value.

#[allow(dead_code)] // each golden test binary uses its own part of the helpers
mod golden;

use golden::{Case, case, cat, check_all, ids_on_wire, sstr, table};
use serena::proto::method::{basic, confirm, tx};
use serena::proto::{FieldTable, FieldValue};

fn basic_cases() -> Vec<Case> {
    vec![
        case(
            basic::Qos {
                prefetch_size: 65_536,
                prefetch_count: 250,
                global: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x0A], // basic.qos (60, 10)
                &[0x00, 0x01, 0x00, 0x00], // prefetch-size 65536
                &[0x00, 0xFA],             // prefetch-count 250
                &[0x01],                   // global
            ]),
        ),
        case(
            basic::QosOk {},
            vec![0x00, 0x3C, 0x00, 0x0B], // basic.qos-ok (60, 11)
        ),
        case(
            basic::Consume {
                queue: "golden.work".into(),
                consumer_tag: "ctag-1".into(),
                no_local: true,
                no_ack: true,
                exclusive: false,
                nowait: true,
                arguments: FieldTable::new().with("x-priority", FieldValue::I32(-3)),
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x14], // basic.consume (60, 20)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.work"),      // queue
                &sstr("ctag-1"),           // consumer-tag
                &[0b0000_1011],            // no-local=1 no-ack=1 exclusive=0 no-wait=1
                &table(&[&sstr("x-priority"), b"I", &[0xFF, 0xFF, 0xFF, 0xFD]]), // arguments: -3
            ]),
        ),
        case(
            basic::ConsumeOk {
                consumer_tag: "amq.ctag-xyz".into(),
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x15], // basic.consume-ok (60, 21)
                &sstr("amq.ctag-xyz"),     // consumer-tag
            ]),
        ),
        case(
            basic::Cancel {
                consumer_tag: "ctag-2".into(),
                nowait: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x1E], // basic.cancel (60, 30)
                &sstr("ctag-2"),           // consumer-tag
                &[0x01],                   // no-wait
            ]),
        ),
        case(
            basic::CancelOk {
                consumer_tag: "ctag-3".into(),
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x1F], // basic.cancel-ok (60, 31)
                &sstr("ctag-3"),           // consumer-tag
            ]),
        ),
        case(
            basic::Publish {
                exchange: "golden.pub".into(),
                routing_key: "orders.new".into(),
                mandatory: true,
                immediate: false,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x28], // basic.publish (60, 40)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.pub"),       // exchange
                &sstr("orders.new"),       // routing-key
                &[0b0000_0001],            // mandatory=1 immediate=0
            ]),
        ),
        case(
            basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "golden.ret".into(),
                routing_key: "nowhere".into(),
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x32], // basic.return (60, 50)
                &[0x01, 0x38],             // reply-code 312
                &sstr("NO_ROUTE"),         // reply-text
                &sstr("golden.ret"),       // exchange
                &sstr("nowhere"),          // routing-key
            ]),
        ),
        case(
            basic::Deliver {
                consumer_tag: "ctag-4".into(),
                delivery_tag: 0x0102_0304_0506_0708,
                redelivered: true,
                exchange: "golden.dlv".into(),
                routing_key: "rk.dlv".into(),
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x3C],                         // basic.deliver (60, 60)
                &sstr("ctag-4"),                                   // consumer-tag
                &[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08], // delivery-tag
                &[0x01],                                           // redelivered
                &sstr("golden.dlv"),                               // exchange
                &sstr("rk.dlv"),                                   // routing-key
            ]),
        ),
        case(
            basic::Get {
                queue: "golden.get".into(),
                no_ack: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x46], // basic.get (60, 70)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.get"),       // queue
                &[0x01],                   // no-ack
            ]),
        ),
        case(
            basic::GetOk {
                delivery_tag: 0x1122_3344_5566_7788,
                redelivered: true,
                exchange: "golden.getx".into(),
                routing_key: "rk.get".into(),
                message_count: 42,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x47],                         // basic.get-ok (60, 71)
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88], // delivery-tag
                &[0x01],                                           // redelivered
                &sstr("golden.getx"),                              // exchange
                &sstr("rk.get"),                                   // routing-key
                &[0x00, 0x00, 0x00, 0x2A],                         // message-count 42
            ]),
        ),
        case(
            basic::GetEmpty {},
            cat(&[
                &[0x00, 0x3C, 0x00, 0x48], // basic.get-empty (60, 72)
                &[0x00],                   // reserved-1 (cluster-id): empty shortstr
            ]),
        ),
        case(
            basic::Ack {
                delivery_tag: 4_294_967_298,
                multiple: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x50],                         // basic.ack (60, 80)
                &[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02], // delivery-tag 2^32 + 2
                &[0x01],                                           // multiple
            ]),
        ),
        case(
            basic::Reject {
                delivery_tag: 77,
                requeue: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x5A],                         // basic.reject (60, 90)
                &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4D], // delivery-tag 77
                &[0x01],                                           // requeue
            ]),
        ),
        case(
            basic::RecoverAsync { requeue: true },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x64], // basic.recover-async (60, 100)
                &[0x01],                   // requeue
            ]),
        ),
        case(
            basic::Recover { requeue: true },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x6E], // basic.recover (60, 110)
                &[0x01],                   // requeue
            ]),
        ),
        case(
            basic::RecoverOk {},
            vec![0x00, 0x3C, 0x00, 0x6F], // basic.recover-ok (60, 111)
        ),
        case(
            basic::Nack {
                delivery_tag: 0xFFFF_FFFF_FFFF_FFFE,
                multiple: false,
                requeue: true,
            },
            cat(&[
                &[0x00, 0x3C, 0x00, 0x78],                         // basic.nack (60, 120)
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE], // delivery-tag
                &[0b0000_0010],                                    // multiple=0 requeue=1
            ]),
        ),
    ]
}

fn confirm_cases() -> Vec<Case> {
    vec![
        case(
            confirm::Select { nowait: true },
            cat(&[
                &[0x00, 0x55, 0x00, 0x0A], // confirm.select (85, 10)
                &[0x01],                   // nowait
            ]),
        ),
        case(
            confirm::SelectOk {},
            vec![0x00, 0x55, 0x00, 0x0B], // confirm.select-ok (85, 11)
        ),
    ]
}

fn tx_cases() -> Vec<Case> {
    vec![
        case(tx::Select {}, vec![0x00, 0x5A, 0x00, 0x0A]), // tx.select (90, 10)
        case(tx::SelectOk {}, vec![0x00, 0x5A, 0x00, 0x0B]), // tx.select-ok (90, 11)
        case(tx::Commit {}, vec![0x00, 0x5A, 0x00, 0x14]), // tx.commit (90, 20)
        case(tx::CommitOk {}, vec![0x00, 0x5A, 0x00, 0x15]), // tx.commit-ok (90, 21)
        case(tx::Rollback {}, vec![0x00, 0x5A, 0x00, 0x1E]), // tx.rollback (90, 30)
        case(tx::RollbackOk {}, vec![0x00, 0x5A, 0x00, 0x1F]), // tx.rollback-ok (90, 31)
    ]
}

#[test]
fn basic_methods() {
    check_all(&basic_cases());
}

#[test]
fn confirm_methods() {
    check_all(&confirm_cases());
}

#[test]
fn tx_methods() {
    check_all(&tx_cases());
}

/// The vectors above cover exactly the methods the spec (and RabbitMQ) define for these classes.
#[test]
fn every_method_of_these_classes_has_a_vector() {
    let spec: &[(u16, u16)] = &[
        // basic
        (60, 10),
        (60, 11),
        (60, 20),
        (60, 21),
        (60, 30),
        (60, 31),
        (60, 40),
        (60, 50),
        (60, 60),
        (60, 70),
        (60, 71),
        (60, 72),
        (60, 80),
        (60, 90),
        (60, 100),
        (60, 110),
        (60, 111),
        (60, 120),
        // confirm
        (85, 10),
        (85, 11),
        // tx
        (90, 10),
        (90, 11),
        (90, 20),
        (90, 21),
        (90, 30),
        (90, 31),
    ];
    assert_eq!(spec.len(), 26);
    let cases: Vec<Case> = [basic_cases(), confirm_cases(), tx_cases()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        ids_on_wire(&cases),
        spec.iter().copied().collect(),
        "golden vectors and the spec's method list differ"
    );
}

/// Each bit of `basic.consume` alone lands in its own position of the shared octet.
#[test]
fn basic_consume_bits_one_at_a_time() {
    let base = basic::Consume {
        queue: "q".into(),
        consumer_tag: "c".into(),
        ..Default::default()
    };
    let bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x3C, 0x00, 0x14], // basic.consume (60, 20)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("q"),                // queue
            &sstr("c"),                // consumer-tag
            &[bits],                   // no-local no-ack exclusive no-wait
            &[0x00, 0x00, 0x00, 0x00], // arguments: empty table
        ])
    };
    check_all(&[
        case(base.clone(), bytes(0b0000)),
        case(
            basic::Consume {
                no_local: true,
                ..base.clone()
            },
            bytes(0b0001),
        ),
        case(
            basic::Consume {
                no_ack: true,
                ..base.clone()
            },
            bytes(0b0010),
        ),
        case(
            basic::Consume {
                exclusive: true,
                ..base.clone()
            },
            bytes(0b0100),
        ),
        case(
            basic::Consume {
                nowait: true,
                ..base
            },
            bytes(0b1000),
        ),
    ]);
}

/// Each bit of `basic.publish` and `basic.nack` alone.
#[test]
fn publish_and_nack_bits_one_at_a_time() {
    let publish = |mandatory, immediate| basic::Publish {
        exchange: "x".into(),
        routing_key: "k".into(),
        mandatory,
        immediate,
    };
    let publish_bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x3C, 0x00, 0x28], // basic.publish (60, 40)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("x"),                // exchange
            &sstr("k"),                // routing-key
            &[bits],                   // mandatory immediate
        ])
    };
    let nack = |multiple, requeue| basic::Nack {
        delivery_tag: 1,
        multiple,
        requeue,
    };
    let nack_bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x3C, 0x00, 0x78],                         // basic.nack (60, 120)
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01], // delivery-tag 1
            &[bits],                                           // multiple requeue
        ])
    };
    check_all(&[
        case(publish(true, false), publish_bytes(0b01)),
        case(publish(false, true), publish_bytes(0b10)),
        case(publish(true, true), publish_bytes(0b11)),
        case(nack(true, false), nack_bytes(0b01)),
        case(nack(false, true), nack_bytes(0b10)),
        case(nack(true, true), nack_bytes(0b11)),
    ]);
}

/// `basic.publish` with the default exchange: an empty exchange name is one zero octet.
#[test]
fn publish_to_the_default_exchange() {
    check_all(&[case(
        basic::Publish {
            exchange: "".into(),
            routing_key: "golden.direct".into(),
            mandatory: false,
            immediate: false,
        },
        cat(&[
            &[0x00, 0x3C, 0x00, 0x28], // basic.publish (60, 40)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &[0x00],                   // exchange: "" (default exchange)
            &sstr("golden.direct"),    // routing-key
            &[0x00],                   // mandatory=0 immediate=0
        ]),
    )]);
}
