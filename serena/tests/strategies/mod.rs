//! Proptest strategies for the codec's values, shared by `roundtrip.rs` and `no_panic.rs`.
//!
//! Every method gets its strategy from [`method`], written once per struct as a list of its
//! fields and their AMQP kinds, the same way the codec's own `method!` macro declares them.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use serena::proto::method::{basic, channel, confirm, connection, exchange, queue, tx};
use serena::proto::{
    BasicProperties, ContentHeader, Decimal, FieldTable, FieldValue, Frame, LongString, Method,
    ShortString,
};

/// How floats in field tables are generated.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Floats {
    /// Any value but NaN, so `PartialEq` can compare decoded values.
    Comparable,
    /// Any bit pattern, NaNs (quiet and signalling) included: compare with [`same_value`].
    AnyBits,
}

/// Text that fits a short string: at most 255 bytes of UTF-8, cut at a char boundary.
fn fit(chars: impl IntoIterator<Item = char>) -> ShortString {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > ShortString::MAX_LEN {
            break;
        }
        s.push(c);
    }
    ShortString::from(s)
}

/// Short strings: mostly names, some arbitrary Unicode, some at or near the 255-byte limit.
pub(crate) fn shortstr() -> BoxedStrategy<ShortString> {
    prop_oneof![
        4 => "[a-z0-9._-]{0,12}".prop_map(ShortString::from),
        3 => vec(any::<char>(), 0..=40).prop_map(fit),
        1 => "[a-z]{255}".prop_map(ShortString::from),
        1 => vec(any::<char>(), 100..=255).prop_map(fit),
    ]
    .boxed()
}

/// Arbitrary bytes, not necessarily UTF-8.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Long strings: arbitrary bytes.
pub(crate) fn longstr() -> BoxedStrategy<LongString> {
    bytes(300).prop_map(LongString::from).boxed()
}

fn f32s(floats: Floats) -> BoxedStrategy<f32> {
    use proptest::num::f32 as f;
    match floats {
        Floats::Comparable => {
            (f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE).boxed()
        }
        Floats::AnyBits => prop_oneof![
            any::<u32>().prop_map(f32::from_bits),
            Just(f32::NAN),
            Just(f32::from_bits(0x7f80_0001)),
            Just(f32::from_bits(0xffc0_1234)),
        ]
        .boxed(),
    }
}

fn f64s(floats: Floats) -> BoxedStrategy<f64> {
    use proptest::num::f64 as f;
    match floats {
        Floats::Comparable => {
            (f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE).boxed()
        }
        Floats::AnyBits => prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_0000_0001)),
            Just(f64::from_bits(0xfff8_0000_dead_beef)),
        ]
        .boxed(),
    }
}

/// Every field value type, nested tables and arrays included (bounded well below the
/// codec's nesting limit).
pub(crate) fn field_value(floats: Floats) -> BoxedStrategy<FieldValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<u64>().prop_map(FieldValue::U64),
        f32s(floats).prop_map(FieldValue::F32),
        f64s(floats).prop_map(FieldValue::F64),
        (any::<u8>(), any::<i32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        longstr().prop_map(FieldValue::LongString),
        bytes(64).prop_map(FieldValue::ByteArray),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
            vec((shortstr(), inner), 0..6)
                .prop_map(|entries| FieldValue::Table(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Field tables of arbitrary values. Keys are unique, as [`FieldTable::insert`] keeps them.
pub(crate) fn field_table(floats: Floats) -> BoxedStrategy<FieldTable> {
    vec((shortstr(), field_value(floats)), 0..6)
        .prop_map(|entries| entries.into_iter().collect())
        .boxed()
}

/// Compares two values with floats compared by bit pattern, so NaNs match themselves.
pub(crate) fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::F32(x), FieldValue::F32(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::F64(x), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (FieldValue::Table(x), FieldValue::Table(y)) => same_table(x, y),
        _ => a == b,
    }
}

/// [`same_value`] for whole tables: same keys, in the same order, with the same values.
pub(crate) fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

/// The strategy for one AMQP field kind, named as in the spec (and in `method!`).
macro_rules! kind {
    (bit) => {
        any::<bool>()
    };
    (octet) => {
        any::<u8>()
    };
    (short) => {
        any::<u16>()
    };
    (long) => {
        any::<u32>()
    };
    (longlong) => {
        any::<u64>()
    };
    (timestamp) => {
        any::<u64>()
    };
    (shortstr) => {
        shortstr()
    };
    (longstr) => {
        longstr()
    };
    (table) => {
        field_table(Floats::Comparable)
    };
}

/// A boxed strategy for one method struct, built from its fields' kinds.
macro_rules! method_strategy {
    ($variant:ident($($path:ident)::+) {}) => {
        Just(Method::$variant($($path)::+ {})).boxed()
    };
    ($variant:ident($($path:ident)::+) { $($field:ident : $kind:ident),+ $(,)? }) => {
        ($(kind!($kind),)+)
            .prop_map(|($($field,)+)| Method::$variant($($path)::+ { $($field),+ }))
            .boxed()
    };
}

/// One strategy per method: every method of AMQP 0-9-1 and RabbitMQ's extensions that
/// [`Method`] defines.
pub(crate) fn method_strategies() -> Vec<BoxedStrategy<Method>> {
    vec![
        method_strategy!(ConnectionStart(connection::Start) {
            version_major: octet, version_minor: octet, server_properties: table,
            mechanisms: longstr, locales: longstr,
        }),
        method_strategy!(ConnectionStartOk(connection::StartOk) {
            client_properties: table, mechanism: shortstr, response: longstr, locale: shortstr,
        }),
        method_strategy!(ConnectionSecure(connection::Secure) { challenge: longstr }),
        method_strategy!(ConnectionSecureOk(connection::SecureOk) { response: longstr }),
        method_strategy!(ConnectionTune(connection::Tune) {
            channel_max: short, frame_max: long, heartbeat: short,
        }),
        method_strategy!(ConnectionTuneOk(connection::TuneOk) {
            channel_max: short, frame_max: long, heartbeat: short,
        }),
        method_strategy!(ConnectionOpen(connection::Open) { virtual_host: shortstr }),
        method_strategy!(ConnectionOpenOk(connection::OpenOk) {}),
        method_strategy!(ConnectionClose(connection::Close) {
            reply_code: short, reply_text: shortstr, class_id: short, method_id: short,
        }),
        method_strategy!(ConnectionCloseOk(connection::CloseOk) {}),
        method_strategy!(ConnectionBlocked(connection::Blocked) { reason: shortstr }),
        method_strategy!(ConnectionUnblocked(connection::Unblocked) {}),
        method_strategy!(ConnectionUpdateSecret(connection::UpdateSecret) {
            new_secret: longstr, reason: shortstr,
        }),
        method_strategy!(ConnectionUpdateSecretOk(connection::UpdateSecretOk) {}),
        method_strategy!(ChannelOpen(channel::Open) {}),
        method_strategy!(ChannelOpenOk(channel::OpenOk) {}),
        method_strategy!(ChannelFlow(channel::Flow) { active: bit }),
        method_strategy!(ChannelFlowOk(channel::FlowOk) { active: bit }),
        method_strategy!(ChannelClose(channel::Close) {
            reply_code: short, reply_text: shortstr, class_id: short, method_id: short,
        }),
        method_strategy!(ChannelCloseOk(channel::CloseOk) {}),
        method_strategy!(ExchangeDeclare(exchange::Declare) {
            exchange: shortstr, kind: shortstr, passive: bit, durable: bit, auto_delete: bit,
            internal: bit, nowait: bit, arguments: table,
        }),
        method_strategy!(ExchangeDeclareOk(exchange::DeclareOk) {}),
        method_strategy!(ExchangeDelete(exchange::Delete) {
            exchange: shortstr, if_unused: bit, nowait: bit,
        }),
        method_strategy!(ExchangeDeleteOk(exchange::DeleteOk) {}),
        method_strategy!(ExchangeBind(exchange::Bind) {
            destination: shortstr, source: shortstr, routing_key: shortstr, nowait: bit,
            arguments: table,
        }),
        method_strategy!(ExchangeBindOk(exchange::BindOk) {}),
        method_strategy!(ExchangeUnbind(exchange::Unbind) {
            destination: shortstr, source: shortstr, routing_key: shortstr, nowait: bit,
            arguments: table,
        }),
        method_strategy!(ExchangeUnbindOk(exchange::UnbindOk) {}),
        method_strategy!(QueueDeclare(queue::Declare) {
            queue: shortstr, passive: bit, durable: bit, exclusive: bit, auto_delete: bit,
            nowait: bit, arguments: table,
        }),
        method_strategy!(QueueDeclareOk(queue::DeclareOk) {
            queue: shortstr, message_count: long, consumer_count: long,
        }),
        method_strategy!(QueueBind(queue::Bind) {
            queue: shortstr, exchange: shortstr, routing_key: shortstr, nowait: bit,
            arguments: table,
        }),
        method_strategy!(QueueBindOk(queue::BindOk) {}),
        method_strategy!(QueuePurge(queue::Purge) { queue: shortstr, nowait: bit }),
        method_strategy!(QueuePurgeOk(queue::PurgeOk) { message_count: long }),
        method_strategy!(QueueDelete(queue::Delete) {
            queue: shortstr, if_unused: bit, if_empty: bit, nowait: bit,
        }),
        method_strategy!(QueueDeleteOk(queue::DeleteOk) { message_count: long }),
        method_strategy!(QueueUnbind(queue::Unbind) {
            queue: shortstr, exchange: shortstr, routing_key: shortstr, arguments: table,
        }),
        method_strategy!(QueueUnbindOk(queue::UnbindOk) {}),
        method_strategy!(BasicQos(basic::Qos) {
            prefetch_size: long, prefetch_count: short, global: bit,
        }),
        method_strategy!(BasicQosOk(basic::QosOk) {}),
        method_strategy!(BasicConsume(basic::Consume) {
            queue: shortstr, consumer_tag: shortstr, no_local: bit, no_ack: bit, exclusive: bit,
            nowait: bit, arguments: table,
        }),
        method_strategy!(BasicConsumeOk(basic::ConsumeOk) { consumer_tag: shortstr }),
        method_strategy!(BasicCancel(basic::Cancel) { consumer_tag: shortstr, nowait: bit }),
        method_strategy!(BasicCancelOk(basic::CancelOk) { consumer_tag: shortstr }),
        method_strategy!(BasicPublish(basic::Publish) {
            exchange: shortstr, routing_key: shortstr, mandatory: bit, immediate: bit,
        }),
        method_strategy!(BasicReturn(basic::Return) {
            reply_code: short, reply_text: shortstr, exchange: shortstr, routing_key: shortstr,
        }),
        method_strategy!(BasicDeliver(basic::Deliver) {
            consumer_tag: shortstr, delivery_tag: longlong, redelivered: bit, exchange: shortstr,
            routing_key: shortstr,
        }),
        method_strategy!(BasicGet(basic::Get) { queue: shortstr, no_ack: bit }),
        method_strategy!(BasicGetOk(basic::GetOk) {
            delivery_tag: longlong, redelivered: bit, exchange: shortstr, routing_key: shortstr,
            message_count: long,
        }),
        method_strategy!(BasicGetEmpty(basic::GetEmpty) {}),
        method_strategy!(BasicAck(basic::Ack) { delivery_tag: longlong, multiple: bit }),
        method_strategy!(BasicReject(basic::Reject) { delivery_tag: longlong, requeue: bit }),
        method_strategy!(BasicRecoverAsync(basic::RecoverAsync) { requeue: bit }),
        method_strategy!(BasicRecover(basic::Recover) { requeue: bit }),
        method_strategy!(BasicRecoverOk(basic::RecoverOk) {}),
        method_strategy!(BasicNack(basic::Nack) {
            delivery_tag: longlong, multiple: bit, requeue: bit,
        }),
        method_strategy!(ConfirmSelect(confirm::Select) { nowait: bit }),
        method_strategy!(ConfirmSelectOk(confirm::SelectOk) {}),
        method_strategy!(TxSelect(tx::Select) {}),
        method_strategy!(TxSelectOk(tx::SelectOk) {}),
        method_strategy!(TxCommit(tx::Commit) {}),
        method_strategy!(TxCommitOk(tx::CommitOk) {}),
        method_strategy!(TxRollback(tx::Rollback) {}),
        method_strategy!(TxRollbackOk(tx::RollbackOk) {}),
    ]
}

/// Any method, each equally likely.
pub(crate) fn any_method() -> impl Strategy<Value = Method> {
    Union::new(method_strategies())
}

/// The four methods that carry content, each equally likely.
pub(crate) fn content_method() -> impl Strategy<Value = Method> {
    // Draw one value from each strategy to learn which method it builds.
    let mut runner = TestRunner::deterministic();
    let carrying: Vec<_> = method_strategies()
        .into_iter()
        .filter(|s| {
            s.new_tree(&mut runner)
                .is_ok_and(|tree| tree.current().has_content())
        })
        .collect();
    assert_eq!(
        carrying.len(),
        4,
        "basic.publish, return, deliver and get-ok"
    );
    Union::new(carrying)
}

/// Basic properties with every subset of the 14 properties present.
pub(crate) fn properties() -> BoxedStrategy<BasicProperties> {
    let opt_str = || proptest::option::of(shortstr());
    (
        (
            opt_str(),
            opt_str(),
            proptest::option::of(field_table(Floats::Comparable)),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            opt_str(),
            opt_str(),
        ),
        (
            opt_str(),
            opt_str(),
            proptest::option::of(any::<u64>()),
            opt_str(),
            opt_str(),
            opt_str(),
            opt_str(),
        ),
    )
        .prop_map(
            |(
                (
                    content_type,
                    content_encoding,
                    headers,
                    delivery_mode,
                    priority,
                    correlation_id,
                    reply_to,
                ),
                (expiration, message_id, timestamp, kind, user_id, app_id, cluster_id),
            )| BasicProperties {
                content_type,
                content_encoding,
                headers,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
                expiration,
                message_id,
                timestamp,
                kind,
                user_id,
                app_id,
                cluster_id,
            },
        )
        .boxed()
}

/// Content headers of any class and body size.
pub(crate) fn content_header() -> BoxedStrategy<ContentHeader> {
    (any::<u16>(), any::<u64>(), properties())
        .prop_map(|(class_id, body_size, properties)| ContentHeader {
            class_id,
            body_size,
            properties: Box::new(properties),
        })
        .boxed()
}

/// Any frame, on any channel (heartbeats are always channel 0).
pub(crate) fn frame() -> BoxedStrategy<Frame> {
    prop_oneof![
        3 => (any::<u16>(), any_method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
        2 => (any::<u16>(), content_header()).prop_map(|(channel, header)| Frame::Header { channel, header }),
        2 => (any::<u16>(), bytes(600)).prop_map(|(channel, payload)| Frame::Body { channel, payload }),
        1 => Just(Frame::Heartbeat),
    ]
    .boxed()
}
