//! Golden byte vectors for every method of the `connection`, `channel`, `exchange` and `queue`
//! classes (38 methods; `basic`, `confirm` and `tx` are in `golden_basic.rs`).
//!
//! Each vector is written by hand from the AMQP 0-9-1 spec (with RabbitMQ's extensions): class id,
//! method id, then the arguments in spec order. Bit fields that follow each other share one octet,
//! the first in the least significant bit. Deprecated "reserved" arguments are sent as zero or
//! empty. Every field holds a distinct, non-default value so a swapped or misordered field shows,
//! and every vector is checked both ways: encode(value) == bytes and decode(bytes) == value.

#[allow(dead_code)] // each golden test binary uses its own part of the helpers
mod golden;

use golden::{Case, case, cat, check_all, ids_on_wire, lstr, sstr, table};
use serena::proto::method::{channel, connection, exchange, queue};
use serena::proto::{FieldTable, FieldValue, LongString};

fn connection_cases() -> Vec<Case> {
    vec![
        case(
            connection::Start {
                version_major: 1,
                version_minor: 9,
                server_properties: FieldTable::new().with("product", "RabbitMQ").with(
                    "capabilities",
                    FieldTable::new().with("publisher_confirms", true),
                ),
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x0A], // connection.start (10, 10)
                &[0x01],                   // version-major
                &[0x09],                   // version-minor
                &table(&[
                    // server-properties
                    &sstr("product"),
                    b"S",
                    &lstr(b"RabbitMQ"),
                    &sstr("capabilities"),
                    b"F",
                    &table(&[&sstr("publisher_confirms"), b"t", &[0x01]]),
                ]),
                &lstr(b"PLAIN AMQPLAIN"), // mechanisms
                &lstr(b"en_US"),          // locales
            ]),
        ),
        case(
            connection::StartOk {
                client_properties: FieldTable::new().with("connection_name", "golden"),
                mechanism: "PLAIN".into(),
                response: "\0guest\0secret".into(),
                locale: "en_GB".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x0B], // connection.start-ok (10, 11)
                &table(&[&sstr("connection_name"), b"S", &lstr(b"golden")]), // client-properties
                &sstr("PLAIN"),            // mechanism
                &lstr(b"\x00guest\x00secret"), // response
                &sstr("en_GB"),            // locale
            ]),
        ),
        case(
            connection::Secure {
                challenge: LongString::from(&b"challenge\x01\xFF"[..]),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x14],   // connection.secure (10, 20)
                &lstr(b"challenge\x01\xFF"), // challenge (not UTF-8)
            ]),
        ),
        case(
            connection::SecureOk {
                response: "answer".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x15], // connection.secure-ok (10, 21)
                &lstr(b"answer"),          // response
            ]),
        ),
        case(
            connection::Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x1E], // connection.tune (10, 30)
                &[0x07, 0xFF],             // channel-max 2047
                &[0x00, 0x02, 0x00, 0x00], // frame-max 131072
                &[0x00, 0x3C],             // heartbeat 60
            ]),
        ),
        case(
            connection::TuneOk {
                channel_max: 1000,
                frame_max: 0x0001_2345,
                heartbeat: 30,
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x1F], // connection.tune-ok (10, 31)
                &[0x03, 0xE8],             // channel-max 1000
                &[0x00, 0x01, 0x23, 0x45], // frame-max 0x12345
                &[0x00, 0x1E],             // heartbeat 30
            ]),
        ),
        case(
            connection::Open {
                virtual_host: "/golden".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x28], // connection.open (10, 40)
                &sstr("/golden"),          // virtual-host
                &[0x00],                   // reserved-1 (capabilities): empty shortstr
                &[0x00],                   // reserved-2 (insist): bit 0
            ]),
        ),
        case(
            connection::OpenOk {},
            cat(&[
                &[0x00, 0x0A, 0x00, 0x29], // connection.open-ok (10, 41)
                &[0x00],                   // reserved-1 (known-hosts): empty shortstr
            ]),
        ),
        case(
            connection::Close {
                reply_code: 320,
                reply_text: "CONNECTION_FORCED - bye".into(),
                class_id: 50,
                method_id: 10,
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x32],        // connection.close (10, 50)
                &[0x01, 0x40],                    // reply-code 320
                &sstr("CONNECTION_FORCED - bye"), // reply-text
                &[0x00, 0x32],                    // class-id 50
                &[0x00, 0x0A],                    // method-id 10
            ]),
        ),
        case(
            connection::CloseOk {},
            vec![0x00, 0x0A, 0x00, 0x33], // connection.close-ok (10, 51)
        ),
        case(
            connection::Blocked {
                reason: "low on memory".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x3C], // connection.blocked (10, 60)
                &sstr("low on memory"),    // reason
            ]),
        ),
        case(
            connection::Unblocked {},
            vec![0x00, 0x0A, 0x00, 0x3D], // connection.unblocked (10, 61)
        ),
        case(
            connection::UpdateSecret {
                new_secret: "token-2".into(),
                reason: "refresh".into(),
            },
            cat(&[
                &[0x00, 0x0A, 0x00, 0x46], // connection.update-secret (10, 70)
                &lstr(b"token-2"),         // new-secret
                &sstr("refresh"),          // reason
            ]),
        ),
        case(
            connection::UpdateSecretOk {},
            vec![0x00, 0x0A, 0x00, 0x47], // connection.update-secret-ok (10, 71)
        ),
    ]
}

fn channel_cases() -> Vec<Case> {
    vec![
        case(
            channel::Open {},
            cat(&[
                &[0x00, 0x14, 0x00, 0x0A], // channel.open (20, 10)
                &[0x00],                   // reserved-1 (out-of-band): empty shortstr
            ]),
        ),
        case(
            channel::OpenOk {},
            cat(&[
                &[0x00, 0x14, 0x00, 0x0B], // channel.open-ok (20, 11)
                &[0x00, 0x00, 0x00, 0x00], // reserved-1 (channel-id): empty longstr
            ]),
        ),
        case(
            channel::Flow { active: true },
            cat(&[
                &[0x00, 0x14, 0x00, 0x14], // channel.flow (20, 20)
                &[0x01],                   // active
            ]),
        ),
        case(
            channel::Flow { active: false },
            cat(&[
                &[0x00, 0x14, 0x00, 0x14], // channel.flow (20, 20)
                &[0x00],                   // active = false
            ]),
        ),
        case(
            channel::FlowOk { active: true },
            cat(&[
                &[0x00, 0x14, 0x00, 0x15], // channel.flow-ok (20, 21)
                &[0x01],                   // active
            ]),
        ),
        case(
            channel::Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - golden".into(),
                class_id: 40,
                method_id: 11,
            },
            cat(&[
                &[0x00, 0x14, 0x00, 0x28],             // channel.close (20, 40)
                &[0x01, 0x96],                         // reply-code 406
                &sstr("PRECONDITION_FAILED - golden"), // reply-text
                &[0x00, 0x28],                         // class-id 40
                &[0x00, 0x0B],                         // method-id 11
            ]),
        ),
        case(
            channel::CloseOk {},
            vec![0x00, 0x14, 0x00, 0x29], // channel.close-ok (20, 41)
        ),
    ]
}

fn exchange_cases() -> Vec<Case> {
    vec![
        case(
            exchange::Declare {
                exchange: "golden.x".into(),
                kind: "topic".into(),
                passive: true,
                durable: false,
                auto_delete: true,
                internal: true,
                nowait: false,
                arguments: FieldTable::new().with("alternate-exchange", "golden.ae"),
            },
            cat(&[
                &[0x00, 0x28, 0x00, 0x0A], // exchange.declare (40, 10)
                &[0x00, 0x00],             // reserved-1 (ticket): short 0
                &sstr("golden.x"),         // exchange
                &sstr("topic"),            // type
                &[0b0000_1101],            // passive=1 durable=0 auto-delete=1 internal=1 no-wait=0
                &table(&[&sstr("alternate-exchange"), b"S", &lstr(b"golden.ae")]), // arguments
            ]),
        ),
        case(
            exchange::DeclareOk {},
            vec![0x00, 0x28, 0x00, 0x0B], // exchange.declare-ok (40, 11)
        ),
        case(
            exchange::Delete {
                exchange: "golden.old".into(),
                if_unused: false,
                nowait: true,
            },
            cat(&[
                &[0x00, 0x28, 0x00, 0x14], // exchange.delete (40, 20)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.old"),       // exchange
                &[0b0000_0010],            // if-unused=0 no-wait=1
            ]),
        ),
        case(
            exchange::DeleteOk {},
            vec![0x00, 0x28, 0x00, 0x15], // exchange.delete-ok (40, 21)
        ),
        case(
            exchange::Bind {
                destination: "golden.dst".into(),
                source: "golden.src".into(),
                routing_key: "a.*.c".into(),
                nowait: true,
                arguments: FieldTable::new().with("x-match", "all"),
            },
            cat(&[
                &[0x00, 0x28, 0x00, 0x1E],                        // exchange.bind (40, 30)
                &[0x00, 0x00],                                    // reserved-1 (ticket)
                &sstr("golden.dst"),                              // destination
                &sstr("golden.src"),                              // source
                &sstr("a.*.c"),                                   // routing-key
                &[0x01],                                          // no-wait
                &table(&[&sstr("x-match"), b"S", &lstr(b"all")]), // arguments
            ]),
        ),
        case(
            exchange::BindOk {},
            vec![0x00, 0x28, 0x00, 0x1F], // exchange.bind-ok (40, 31)
        ),
        case(
            exchange::Unbind {
                destination: "golden.dst2".into(),
                source: "golden.src2".into(),
                routing_key: "#.z".into(),
                nowait: true,
                arguments: FieldTable::new().with("x-match", "any"),
            },
            cat(&[
                &[0x00, 0x28, 0x00, 0x28], // exchange.unbind (40, 40)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.dst2"),      // destination
                &sstr("golden.src2"),      // source
                &sstr("#.z"),              // routing-key
                &[0x01],                   // no-wait
                &table(&[&sstr("x-match"), b"S", &lstr(b"any")]), // arguments
            ]),
        ),
        case(
            exchange::UnbindOk {},
            vec![0x00, 0x28, 0x00, 0x33], // exchange.unbind-ok (40, 51): RabbitMQ's id, not 41
        ),
    ]
}

fn queue_cases() -> Vec<Case> {
    vec![
        case(
            queue::Declare {
                queue: "golden.q".into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: true,
                nowait: true,
                arguments: FieldTable::new()
                    .with("x-queue-type", "quorum")
                    .with("x-message-ttl", FieldValue::I32(60_000)),
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x0A], // queue.declare (50, 10)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.q"),         // queue
                &[0b0001_1010], // passive=0 durable=1 exclusive=0 auto-delete=1 no-wait=1
                &table(&[
                    // arguments
                    &sstr("x-queue-type"),
                    b"S",
                    &lstr(b"quorum"),
                    &sstr("x-message-ttl"),
                    b"I",
                    &[0x00, 0x00, 0xEA, 0x60], // 60000
                ]),
            ]),
        ),
        case(
            queue::DeclareOk {
                queue: "amq.gen-XYZ".into(),
                message_count: 1234,
                consumer_count: 7,
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x0B], // queue.declare-ok (50, 11)
                &sstr("amq.gen-XYZ"),      // queue
                &[0x00, 0x00, 0x04, 0xD2], // message-count 1234
                &[0x00, 0x00, 0x00, 0x07], // consumer-count 7
            ]),
        ),
        case(
            queue::Bind {
                queue: "golden.q1".into(),
                exchange: "golden.x1".into(),
                routing_key: "rk.1".into(),
                nowait: true,
                arguments: FieldTable::new().with("format", "pdf"),
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x14],                       // queue.bind (50, 20)
                &[0x00, 0x00],                                   // reserved-1 (ticket)
                &sstr("golden.q1"),                              // queue
                &sstr("golden.x1"),                              // exchange
                &sstr("rk.1"),                                   // routing-key
                &[0x01],                                         // no-wait
                &table(&[&sstr("format"), b"S", &lstr(b"pdf")]), // arguments
            ]),
        ),
        case(
            queue::BindOk {},
            vec![0x00, 0x32, 0x00, 0x15], // queue.bind-ok (50, 21)
        ),
        case(
            queue::Purge {
                queue: "golden.purge".into(),
                nowait: true,
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x1E], // queue.purge (50, 30)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.purge"),     // queue
                &[0x01],                   // no-wait
            ]),
        ),
        case(
            queue::PurgeOk { message_count: 99 },
            cat(&[
                &[0x00, 0x32, 0x00, 0x1F], // queue.purge-ok (50, 31)
                &[0x00, 0x00, 0x00, 0x63], // message-count 99
            ]),
        ),
        case(
            queue::Delete {
                queue: "golden.del".into(),
                if_unused: false,
                if_empty: true,
                nowait: true,
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x28], // queue.delete (50, 40)
                &[0x00, 0x00],             // reserved-1 (ticket)
                &sstr("golden.del"),       // queue
                &[0b0000_0110],            // if-unused=0 if-empty=1 no-wait=1
            ]),
        ),
        case(
            queue::DeleteOk {
                message_count: 12_345_678,
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x29], // queue.delete-ok (50, 41)
                &[0x00, 0xBC, 0x61, 0x4E], // message-count 12345678
            ]),
        ),
        case(
            queue::Unbind {
                queue: "golden.q2".into(),
                exchange: "golden.x2".into(),
                routing_key: "rk.2".into(),
                arguments: FieldTable::new().with("format", "txt"),
            },
            cat(&[
                &[0x00, 0x32, 0x00, 0x32],                       // queue.unbind (50, 50)
                &[0x00, 0x00],                                   // reserved-1 (ticket)
                &sstr("golden.q2"),                              // queue
                &sstr("golden.x2"),                              // exchange
                &sstr("rk.2"), // routing-key (no no-wait bit in unbind)
                &table(&[&sstr("format"), b"S", &lstr(b"txt")]), // arguments
            ]),
        ),
        case(
            queue::UnbindOk {},
            vec![0x00, 0x32, 0x00, 0x33], // queue.unbind-ok (50, 51)
        ),
    ]
}

#[test]
fn connection_methods() {
    check_all(&connection_cases());
}

#[test]
fn channel_methods() {
    check_all(&channel_cases());
}

#[test]
fn exchange_methods() {
    check_all(&exchange_cases());
}

#[test]
fn queue_methods() {
    check_all(&queue_cases());
}

/// The vectors above cover exactly the methods the spec (and RabbitMQ) define for these classes.
#[test]
fn every_method_of_these_classes_has_a_vector() {
    let spec: &[(u16, u16)] = &[
        // connection
        (10, 10),
        (10, 11),
        (10, 20),
        (10, 21),
        (10, 30),
        (10, 31),
        (10, 40),
        (10, 41),
        (10, 50),
        (10, 51),
        (10, 60),
        (10, 61),
        (10, 70),
        (10, 71),
        // channel
        (20, 10),
        (20, 11),
        (20, 20),
        (20, 21),
        (20, 40),
        (20, 41),
        // exchange
        (40, 10),
        (40, 11),
        (40, 20),
        (40, 21),
        (40, 30),
        (40, 31),
        (40, 40),
        (40, 51),
        // queue
        (50, 10),
        (50, 11),
        (50, 20),
        (50, 21),
        (50, 30),
        (50, 31),
        (50, 40),
        (50, 41),
        (50, 50),
        (50, 51),
    ];
    assert_eq!(spec.len(), 38);
    let cases: Vec<Case> = [
        connection_cases(),
        channel_cases(),
        exchange_cases(),
        queue_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        ids_on_wire(&cases),
        spec.iter().copied().collect(),
        "golden vectors and the spec's method list differ"
    );
    for c in &cases {
        let ids = (c.method.class_id(), c.method.method_id());
        assert!(
            ids_on_wire(std::slice::from_ref(c)).contains(&ids),
            "{} has ids {ids:?}",
            c.method.name()
        );
    }
}

/// Each bit of `exchange.declare` alone lands in its own position of the shared octet.
#[test]
fn exchange_declare_bits_one_at_a_time() {
    let base = exchange::Declare {
        exchange: "e".into(),
        kind: "direct".into(),
        ..Default::default()
    };
    let bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x28, 0x00, 0x0A], // exchange.declare (40, 10)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("e"),                // exchange
            &sstr("direct"),           // type
            &[bits],                   // passive durable auto-delete internal no-wait
            &[0x00, 0x00, 0x00, 0x00], // arguments: empty table
        ])
    };
    check_all(&[
        case(base.clone(), bytes(0b0000_0000)),
        case(
            exchange::Declare {
                passive: true,
                ..base.clone()
            },
            bytes(0b0000_0001),
        ),
        case(
            exchange::Declare {
                durable: true,
                ..base.clone()
            },
            bytes(0b0000_0010),
        ),
        case(
            exchange::Declare {
                auto_delete: true,
                ..base.clone()
            },
            bytes(0b0000_0100),
        ),
        case(
            exchange::Declare {
                internal: true,
                ..base.clone()
            },
            bytes(0b0000_1000),
        ),
        case(
            exchange::Declare {
                nowait: true,
                ..base.clone()
            },
            bytes(0b0001_0000),
        ),
        case(
            exchange::Declare {
                passive: true,
                durable: true,
                auto_delete: true,
                internal: true,
                nowait: true,
                ..base
            },
            bytes(0b0001_1111),
        ),
    ]);
}

/// Each bit of `exchange.delete` alone.
#[test]
fn exchange_delete_bits_one_at_a_time() {
    let bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x28, 0x00, 0x14], // exchange.delete (40, 20)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("e"),                // exchange
            &[bits],                   // if-unused no-wait
        ])
    };
    let delete = |if_unused, nowait| exchange::Delete {
        exchange: "e".into(),
        if_unused,
        nowait,
    };
    check_all(&[
        case(delete(true, false), bytes(0b01)),
        case(delete(false, true), bytes(0b10)),
        case(delete(true, true), bytes(0b11)),
    ]);
}

/// Each bit of `queue.declare` alone.
#[test]
fn queue_declare_bits_one_at_a_time() {
    let base = queue::Declare {
        queue: "q".into(),
        ..Default::default()
    };
    let bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x32, 0x00, 0x0A], // queue.declare (50, 10)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("q"),                // queue
            &[bits],                   // passive durable exclusive auto-delete no-wait
            &[0x00, 0x00, 0x00, 0x00], // arguments: empty table
        ])
    };
    check_all(&[
        case(base.clone(), bytes(0b0000_0000)),
        case(
            queue::Declare {
                passive: true,
                ..base.clone()
            },
            bytes(0b0000_0001),
        ),
        case(
            queue::Declare {
                durable: true,
                ..base.clone()
            },
            bytes(0b0000_0010),
        ),
        case(
            queue::Declare {
                exclusive: true,
                ..base.clone()
            },
            bytes(0b0000_0100),
        ),
        case(
            queue::Declare {
                auto_delete: true,
                ..base.clone()
            },
            bytes(0b0000_1000),
        ),
        case(
            queue::Declare {
                nowait: true,
                ..base
            },
            bytes(0b0001_0000),
        ),
    ]);
}

/// Each bit of `queue.delete` alone.
#[test]
fn queue_delete_bits_one_at_a_time() {
    let bytes = |bits: u8| {
        cat(&[
            &[0x00, 0x32, 0x00, 0x28], // queue.delete (50, 40)
            &[0x00, 0x00],             // reserved-1 (ticket)
            &sstr("q"),                // queue
            &[bits],                   // if-unused if-empty no-wait
        ])
    };
    let delete = |if_unused, if_empty, nowait| queue::Delete {
        queue: "q".into(),
        if_unused,
        if_empty,
        nowait,
    };
    check_all(&[
        case(delete(true, false, false), bytes(0b001)),
        case(delete(false, true, false), bytes(0b010)),
        case(delete(false, false, true), bytes(0b100)),
        case(delete(true, true, true), bytes(0b111)),
    ]);
}
