//! Reading `topology.toml`: a walk over toml's spanned document tree, so that every problem,
//! unknown keys and wrong types included, is reported at once with its line and column.

use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::connection::ConnectionSettings;
use super::error::{Destination, Entity, EntityName, LineIndex, TopologyError};
use super::model::{Binding, Exchange, ExchangeKind, Overflow, Queue, QueueType, Retry, Topology};
use super::reader::{Ctx, Reader, Span, a, array_of_tables, unknown_key};
use super::retry::parse_delay;

const TOP_KEYS: &[&str] = &["connection", "exchanges", "queues", "bindings"];
/// `frame_size` is `frame_max`'s old name: still read, with a warning.
const CONNECTION_KEYS: &[&str] = &[
    "url",
    "heartbeat",
    "frame_max",
    "channel_buffer_size",
    "frame_size",
];
const EXCHANGE_KEYS: &[&str] = &[
    "name",
    "type",
    "declare",
    "durable",
    "auto_delete",
    "internal",
    "alternate_exchange",
    "arguments",
];
const QUEUE_KEYS: &[&str] = &[
    "name",
    "type",
    "declare",
    "durable",
    "exclusive",
    "auto_delete",
    "dead_letter_exchange",
    "dead_letter_routing_key",
    "message_ttl",
    "expires",
    "max_length",
    "max_length_bytes",
    "overflow",
    "single_active_consumer",
    "delivery_limit",
    "initial_group_size",
    "max_age",
    "max_priority",
    "arguments",
    "retry",
];
const RETRY_KEYS: &[&str] = &["delays", "park"];
const BINDING_KEYS: &[&str] = &[
    "source",
    "queue",
    "exchange",
    "routing_key",
    "arguments",
    "declare",
];

/// Parses and validates a topology; `file` names it in problems.
pub(crate) fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
    let mut ctx = Ctx {
        text,
        lines: LineIndex::new(text),
        file: Arc::from(file),
        problems: Vec::new(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let at = e.span().map_or(0, |s| s.start);
            ctx.report(
                at,
                Entity::File,
                format!("TOML syntax: {}", e.message().trim()),
            );
        }
        return Err(ctx.finish());
    }
    let mut topology = Topology::default();
    for (key, value) in doc.get_ref() {
        match key.get_ref().as_ref() {
            "connection" => match value.get_ref() {
                DeValue::Table(t) => {
                    topology.connection = read_connection(&mut ctx, value.span(), t);
                }
                other => ctx.report(
                    value.span().start,
                    Entity::Connection,
                    format!(
                        "connection must be a table ([connection]), not {}",
                        a(other)
                    ),
                ),
            },
            list @ ("exchanges" | "queues" | "bindings") => {
                let Some(items) = array_of_tables(&mut ctx, list, value) else {
                    continue;
                };
                for (i, (span, table)) in items.into_iter().enumerate() {
                    match list {
                        "exchanges" => {
                            let x = read_exchange(&mut ctx, span, table, i);
                            topology.exchanges.push(x);
                        }
                        "queues" => {
                            let q = read_queue(&mut ctx, span, table, i);
                            topology.queues.push(q);
                        }
                        _ => {
                            if let Some(b) = read_binding(&mut ctx, span, table, i) {
                                topology.bindings.push(b);
                            }
                        }
                    }
                }
            }
            other => ctx.report(key.span().start, Entity::File, unknown_key(other, TOP_KEYS)),
        }
    }
    if let Err(TopologyError::Invalid { problems }) = topology.validate() {
        ctx.problems.extend(problems);
    }
    if ctx.problems.is_empty() {
        Ok(topology)
    } else {
        Err(ctx.finish())
    }
}

fn name_of(table: &DeTable<'_>, key: &str) -> Option<String> {
    table
        .get(key)
        .and_then(|v| v.get_ref().as_str())
        .map(str::to_owned)
}

fn entity_name(table: &DeTable<'_>, index: usize) -> EntityName {
    match name_of(table, "name") {
        Some(n) if !n.is_empty() => EntityName::Named(n),
        _ => EntityName::Unnamed(index + 1),
    }
}

/// The `url` is kept as text: serena parses it when it resolves the settings, where the
/// environment may replace it, and names this place in the file when it is bad.
fn read_connection(ctx: &mut Ctx<'_>, span: Span, table: &DeTable<'_>) -> ConnectionSettings {
    let mut r = Reader::new(ctx, span, table, Entity::Connection, CONNECTION_KEYS);
    let url = r.string("url");
    let frame_key = if r.get("frame_max").is_none() && r.get("frame_size").is_some() {
        tracing::warn!("[connection] frame_size is deprecated: write frame_max");
        "frame_size"
    } else {
        "frame_max"
    };
    let settings = ConnectionSettings {
        url,
        heartbeat: r.int("heartbeat", 0, 65_535, "seconds"),
        frame_max: r.int(
            frame_key,
            i64::from(serena_proto::FRAME_MIN_SIZE),
            i64::from(u32::MAX),
            "bytes",
        ),
        channel_buffer_size: r.int("channel_buffer_size", 1, 65_535, ""),
        origin: None,
    };
    ConnectionSettings {
        origin: Some(r.origin),
        ..settings
    }
}

fn read_exchange(ctx: &mut Ctx<'_>, span: Span, table: &DeTable<'_>, i: usize) -> Exchange {
    let entity = Entity::Exchange(entity_name(table, i));
    let mut r = Reader::new(ctx, span.clone(), table, entity, EXCHANGE_KEYS);
    let declare = r.bool("declare", true);
    let kind = match r.get("type").map(|_| r.string("type")) {
        Some(Some(s)) => ExchangeKind::from_name(&s),
        Some(None) => ExchangeKind::Direct,
        None if declare => {
            r.report(
                span.start,
                "an exchange to declare needs a type: direct, fanout, topic, headers, or a \
                 plugin type starting with \"x-\"",
            );
            r.origin.invalid_keys.push("type".into());
            ExchangeKind::Direct
        }
        None => ExchangeKind::Direct,
    };
    let x = Exchange {
        name: r.string("name").unwrap_or_default(),
        kind,
        declare,
        durable: r.bool("durable", true),
        auto_delete: r.bool("auto_delete", false),
        internal: r.bool("internal", false),
        alternate_exchange: r.string("alternate_exchange"),
        arguments: r.arguments(),
        origin: None,
    };
    Exchange {
        origin: Some(r.origin),
        ..x
    }
}

fn read_queue(ctx: &mut Ctx<'_>, span: Span, table: &DeTable<'_>, i: usize) -> Queue {
    let entity = Entity::Queue(entity_name(table, i));
    let mut r = Reader::new(ctx, span, table, entity, QUEUE_KEYS);
    let kind = match (r.get("type"), r.string("type")) {
        (Some(v), Some(s)) => QueueType::from_name(&s).unwrap_or_else(|| {
            r.report(
                v.span().start,
                format!("unknown queue type {s:?}: expected classic, quorum or stream"),
            );
            r.origin.invalid_keys.push("type".into());
            QueueType::Classic
        }),
        _ => QueueType::Classic,
    };
    let overflow = match (r.get("overflow"), r.string("overflow")) {
        (Some(v), Some(s)) => Overflow::from_name(&s).or_else(|| {
            r.report(
                v.span().start,
                format!(
                    "unknown overflow {s:?}: expected drop-head, reject-publish or \
                     reject-publish-dlx"
                ),
            );
            None
        }),
        _ => None,
    };
    let u32_max = i64::from(u32::MAX);
    let q = Queue {
        name: r.string("name").unwrap_or_default(),
        kind,
        declare: r.bool("declare", true),
        durable: r.bool("durable", true),
        exclusive: r.bool("exclusive", false),
        auto_delete: r.bool("auto_delete", false),
        dead_letter_exchange: r.string("dead_letter_exchange"),
        dead_letter_routing_key: r.string("dead_letter_routing_key"),
        message_ttl: r.int("message_ttl", 0, u32_max, "milliseconds"),
        expires: r.int("expires", 1, u32_max, "milliseconds"),
        max_length: r.int("max_length", 0, i64::MAX, "messages"),
        max_length_bytes: r.int("max_length_bytes", 0, i64::MAX, "bytes"),
        overflow,
        single_active_consumer: r.bool("single_active_consumer", false),
        delivery_limit: r.int("delivery_limit", 0, u32_max, "deliveries"),
        initial_group_size: r.int("initial_group_size", 1, u32_max, "replicas"),
        max_age: r.string("max_age"),
        max_priority: r.int("max_priority", 1, 255, ""),
        arguments: r.arguments(),
        retry: read_retry(&mut r),
        origin: None,
    };
    Queue {
        origin: Some(r.origin),
        ..q
    }
}

/// `retry = { delays = ["1s", "10s"], park = "..." }`, or the same as `[queues.retry]`. Delays
/// that do not read are reported here, with `parse_delay`'s words; how many there are, the
/// names they make and the park queue are [`validate`](super::validate)'s business.
fn read_retry(r: &mut Reader<'_, '_, '_, '_>) -> Option<Retry> {
    const EXAMPLE: &str = r#"retry = { delays = ["1s", "10s", "1m"] }"#;
    r.table("retry", EXAMPLE, RETRY_KEYS, |t, at| {
        let Some(written) = t.strings("delays", r#""10s""#) else {
            if t.get("delays").is_none() {
                t.report(
                    at,
                    r#"retry needs the delays before each retry, e.g. delays = ["1s", "10s", "1m"]"#,
                );
                t.origin.invalid_keys.push("delays".into());
            }
            return Retry {
                park: t.string("park"),
                ..Retry::default()
            };
        };
        let mut delays = Vec::with_capacity(written.len());
        for item in written {
            match parse_delay(&item.text) {
                Ok(delay) => delays.push(delay),
                Err(e) => {
                    t.report(item.offset, format!("retry.delays[{}]: {e}", item.index));
                    t.origin.invalid_keys.push("delays".into());
                }
            }
        }
        Retry {
            delays,
            park: t.string("park"),
        }
    })
}

fn read_binding(ctx: &mut Ctx<'_>, span: Span, table: &DeTable<'_>, i: usize) -> Option<Binding> {
    let queue = name_of(table, "queue");
    let exchange = name_of(table, "exchange");
    let destination = match (queue, exchange) {
        (Some(q), None) => Some(Destination::Queue(q)),
        (None, Some(x)) => Some(Destination::Exchange(x)),
        _ => None,
    };
    let entity = Entity::Binding {
        index: i + 1,
        source: name_of(table, "source"),
        destination: destination.clone(),
        routing_key: name_of(table, "routing_key").unwrap_or_default(),
    };
    let mut r = Reader::new(ctx, span.clone(), table, entity, BINDING_KEYS);
    let source = r.string("source");
    if r.get("source").is_none() {
        r.report(
            span.start,
            "a binding needs a source exchange: source = \"...\"",
        );
    }
    let queue = r.string("queue");
    let exchange = r.string("exchange");
    match (r.get("queue"), r.get("exchange")) {
        (None, None) => r.report(
            span.start,
            "a binding needs a destination: queue = \"...\" or exchange = \"...\"",
        ),
        (Some(q), Some(x)) => {
            let second = q.span().start.max(x.span().start);
            r.report(
                second,
                "a binding has one destination: set queue or exchange, not both",
            );
        }
        _ => {}
    }
    let b = Binding {
        source: source?,
        destination: match (queue, exchange) {
            (Some(q), None) => Destination::Queue(q),
            (None, Some(x)) => Destination::Exchange(x),
            _ => return None,
        },
        routing_key: r.string("routing_key").unwrap_or_default(),
        arguments: r.arguments(),
        declare: r.bool("declare", true),
        origin: None,
    };
    Some(Binding {
        origin: Some(r.origin),
        ..b
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Location;
    use serena_proto::FieldValue;

    #[test]
    fn arguments_keep_their_toml_types() {
        let t = parse(
            r#"
            [[queues]]
            name = "q"
            arguments = { "x-a" = 1, "x-b" = "s", "x-c" = true, "x-d" = 1.5, "x-e" = [1, "two"], "x-f" = { g = 0x10 } }
            "#,
            "t.toml",
        )
        .unwrap();
        let args = &t.queues[0].arguments;
        assert_eq!(args.get("x-a"), Some(&FieldValue::I64(1)));
        assert_eq!(args.get("x-b").and_then(FieldValue::as_str), Some("s"));
        assert_eq!(args.get("x-c"), Some(&FieldValue::Bool(true)));
        assert_eq!(args.get("x-d"), Some(&FieldValue::F64(1.5)));
        assert_eq!(
            args.get("x-e"),
            Some(&FieldValue::Array(vec![FieldValue::I64(1), "two".into()]))
        );
        let f = args.get("x-f").and_then(FieldValue::as_table).unwrap();
        assert_eq!(f.get("g"), Some(&FieldValue::I64(16)));
        let origin = t.queues[0].origin.as_ref().unwrap();
        assert_eq!(
            origin.location(),
            Location {
                line: 2,
                column: 13
            }
        );
        assert_eq!(
            origin.key_location("arguments.x-b"),
            Some(Location {
                line: 4,
                column: 38
            })
        );
    }

    #[test]
    fn initial_group_size_is_the_quorum_replication_factor() {
        let t = parse(
            "[[queues]]\nname = \"q\"\ntype = \"quorum\"\ninitial_group_size = 3\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(t.queues[0].initial_group_size, Some(3));
        assert_eq!(
            t.queues[0]
                .declare_arguments()
                .get("x-quorum-initial-group-size"),
            Some(&FieldValue::I64(3))
        );
        let err = parse(
            "[[queues]]\nname = \"q\"\ntype = \"quorum\"\ninitial_group_size = 0\n",
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:4:22: queue \"q\": initial_group_size must be between 1 and 4294967295 \
             (replicas), not 0"
        );
    }

    #[test]
    fn retry_reads_the_same_inline_and_as_a_sub_table() {
        let inline = parse(
            "[[queues]]\nname = \"q\"\nretry = { delays = [\"1s\", \"2m\"], park = \"q.dead\" }\n",
            "t.toml",
        )
        .unwrap();
        let table = parse(
            "[[queues]]\nname = \"q\"\n[queues.retry]\ndelays = [\"1s\", \"2m\"]\npark = \"q.dead\"\n",
            "t.toml",
        )
        .unwrap();
        let expected = Retry {
            delays: vec![Duration::from_secs(1), Duration::from_secs(120)],
            park: Some("q.dead".into()),
        };
        assert_eq!(inline.queues[0].retry.as_ref(), Some(&expected));
        assert_eq!(table.queues[0].retry.as_ref(), Some(&expected));
        let at = |t: &Topology, key: &str| t.queues[0].origin.as_ref()?.key_location(key);
        assert_eq!(
            at(&inline, "retry.park"),
            Some(Location {
                line: 3,
                column: 34
            })
        );
        assert_eq!(
            at(&table, "retry.delays[1]"),
            Some(Location {
                line: 4,
                column: 17
            })
        );
        assert_eq!(
            parse("[[queues]]\nname = \"q\"\n", "t.toml")
                .unwrap()
                .queues[0]
                .retry,
            None
        );
    }

    #[test]
    fn defaults_are_durable_and_declared() {
        let t = parse(
            "[[exchanges]]\nname = \"x\"\ntype = \"fanout\"\n[[queues]]\nname = \"q\"\n",
            "t.toml",
        )
        .unwrap();
        let (x, q) = (&t.exchanges[0], &t.queues[0]);
        assert!(x.durable && x.declare && !x.auto_delete && !x.internal);
        assert!(q.durable && q.declare && !q.exclusive && !q.auto_delete);
        assert_eq!(q.kind, QueueType::Classic);
    }
}
