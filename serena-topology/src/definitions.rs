//! RabbitMQ's definitions (`definitions.json`, the management API's `/api/definitions/{vhost}`)
//! to and from a [`Topology`]. Pure: the HTTP is the CLI's.
//!
//! Field values map to JSON as RabbitMQ's management API shows them: strings, numbers,
//! booleans, arrays and objects; a timestamp as its seconds, a decimal as a number, a byte
//! array as its bytes read as UTF-8 (invalid sequences replaced), void as `null`. From JSON,
//! integers become 64-bit integers (`long`, as the topology file writes them), other numbers
//! doubles.

use serde_json::{Map, Value, json};
use serena_proto::{FieldTable, FieldValue};
use thiserror::Error;

use super::error::Destination;
use super::model::{Binding, Exchange, ExchangeKind, Overflow, Queue, QueueType, Topology};

/// What makes a definitions document unusable as a topology.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionsError {
    /// A part of the document is not what RabbitMQ writes there.
    #[error("definitions: {what} is not {expected}")]
    Shape {
        /// Where, e.g. `queues[3].durable`.
        what: String,
        /// What it should be.
        expected: &'static str,
    },
    /// An argument has a key of its own in `topology.toml` but a value that key cannot hold.
    #[error("definitions: {entity}: {argument} = {value} cannot be written in topology.toml")]
    Unrepresentable {
        /// The exchange or queue.
        entity: String,
        /// The argument.
        argument: String,
        /// Its value, as JSON.
        value: String,
    },
}

/// A field value as the management API shows it.
pub fn field_to_json(v: &FieldValue) -> Value {
    if let Some(n) = v.as_i64() {
        return json!(n);
    }
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::U64(n) => json!(n),
        FieldValue::F32(f) => json!(f),
        FieldValue::F64(f) => json!(f),
        FieldValue::Decimal(d) => {
            let scale = i32::from(d.scale);
            json!(f64::from(d.value) / 10f64.powi(scale))
        }
        FieldValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        FieldValue::ByteArray(b) => json!(String::from_utf8_lossy(b)),
        FieldValue::Array(items) => Value::Array(items.iter().map(field_to_json).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => Value::Object(table_to_json(t)),
        FieldValue::Void => Value::Null,
        // Integers were handled by as_i64.
        _ => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.iter()
        .map(|(k, v)| (k.to_string(), field_to_json(v)))
        .collect()
}

/// A JSON value as the field value a topology holds for it.
pub fn json_to_field(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => FieldValue::I64(i),
            (None, Some(u), _) => FieldValue::U64(u),
            (_, _, f) => FieldValue::F64(f.unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => FieldValue::Array(items.iter().map(json_to_field).collect()),
        Value::Object(map) => FieldValue::Table(json_to_table(map)),
    }
}

fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in map {
        t.insert(k.as_str(), json_to_field(v));
    }
    t
}

impl Topology {
    /// RabbitMQ's definitions of this topology for virtual host `vhost`, as
    /// `POST /api/definitions` (or `rabbitmqctl import_definitions`) takes them: its exchanges,
    /// every queue apply declares (the retry queues included) and its bindings, each with
    /// `vhost`. Entities with `declare = false` are left out (they are someone else's to
    /// create), and so are exclusive queues, which belong to a connection and which RabbitMQ
    /// never exports or imports.
    pub fn to_definitions(&self, vhost: &str) -> Value {
        let exchanges: Vec<Value> = self
            .exchanges
            .iter()
            .filter(|x| x.declare)
            .map(|x| {
                json!({
                    "name": x.name,
                    "vhost": vhost,
                    "type": x.kind.as_str(),
                    "durable": x.durable,
                    "auto_delete": x.auto_delete,
                    "internal": x.internal,
                    "arguments": table_to_json(&x.declare_arguments()),
                })
            })
            .collect();
        let queues: Vec<Value> = self
            .queue_plan()
            .iter()
            .map(|(_, q)| q)
            .filter(|q| q.declare && !q.exclusive)
            .map(|q| {
                json!({
                    "name": q.name,
                    "vhost": vhost,
                    "durable": q.durable,
                    "auto_delete": q.auto_delete,
                    "arguments": table_to_json(&q.declare_arguments()),
                })
            })
            .collect();
        let bindings: Vec<Value> = self
            .bindings
            .iter()
            .filter(|b| b.declare)
            .map(|b| {
                let (destination_type, destination) = match &b.destination {
                    Destination::Queue(n) => ("queue", n),
                    Destination::Exchange(n) => ("exchange", n),
                };
                json!({
                    "source": b.source,
                    "vhost": vhost,
                    "destination": destination,
                    "destination_type": destination_type,
                    "routing_key": b.routing_key,
                    "arguments": table_to_json(&b.arguments),
                })
            })
            .collect();
        json!({ "exchanges": exchanges, "queues": queues, "bindings": bindings })
    }

    /// The topology RabbitMQ's definitions describe (`GET /api/definitions/{vhost}`, or a
    /// whole-broker `definitions.json`, whose entities of other virtual hosts than `vhost` are
    /// skipped): every exchange but the default and `amq.*` ones, every queue, every binding;
    /// with `prefix`, only entities whose name starts with it (a binding when its source or
    /// destination does). Queue and exchange arguments with a key of their own in
    /// `topology.toml` (`x-message-ttl`, `alternate-exchange`, ...) become those keys.
    pub fn from_definitions(
        definitions: &Value,
        vhost: &str,
        prefix: Option<&str>,
    ) -> Result<Topology, DefinitionsError> {
        let wanted = |name: &str| prefix.is_none_or(|p| name.starts_with(p));
        let mut t = Topology::default();
        for (i, x) in list(definitions, "exchanges")?.iter().enumerate() {
            let at = |key: &str| format!("exchanges[{i}].{key}");
            if !in_vhost(x, vhost) {
                continue;
            }
            let name = text(x, "name", &at("name"))?;
            if name.is_empty() || name.starts_with("amq.") {
                continue;
            }
            let mut arguments = json_to_table(object(x, "arguments", &at("arguments"))?);
            let alternate_exchange = match arguments.remove("alternate-exchange") {
                None => None,
                Some(v) => Some(
                    v.as_str()
                        .ok_or_else(|| unrepresentable(name, "alternate-exchange", &v))?
                        .to_owned(),
                ),
            };
            t.exchanges.push(Exchange {
                name: name.to_owned(),
                kind: ExchangeKind::from_name(text(x, "type", &at("type"))?),
                durable: flag(x, "durable", &at("durable"))?,
                auto_delete: flag(x, "auto_delete", &at("auto_delete"))?,
                internal: flag(x, "internal", &at("internal"))?,
                alternate_exchange,
                arguments,
                ..Exchange::default()
            });
        }
        for (i, q) in list(definitions, "queues")?.iter().enumerate() {
            let at = |key: &str| format!("queues[{i}].{key}");
            if !in_vhost(q, vhost) {
                continue;
            }
            let name = text(q, "name", &at("name"))?;
            let mut queue = Queue {
                name: name.to_owned(),
                durable: flag(q, "durable", &at("durable"))?,
                auto_delete: flag(q, "auto_delete", &at("auto_delete"))?,
                ..Queue::default()
            };
            queue_arguments(&mut queue, object(q, "arguments", &at("arguments"))?)?;
            // Newer RabbitMQs also write the type beside the arguments.
            if let Some(kind) = q.get("type").and_then(Value::as_str)
                && let Some(kind) = QueueType::from_name(kind)
            {
                queue.kind = kind;
            }
            t.queues.push(queue);
        }
        // Everything was read (so that a bad document fails whatever the prefix); keep the
        // wanted names, and as expected-only (`declare = false`) the others that a kept
        // binding names, so the result is a topology that validates.
        let (exchanges, queues) = (
            std::mem::take(&mut t.exchanges),
            std::mem::take(&mut t.queues),
        );
        t.exchanges = exchanges
            .iter()
            .filter(|x| wanted(&x.name))
            .cloned()
            .collect();
        t.queues = queues.iter().filter(|q| wanted(&q.name)).cloned().collect();
        for (i, b) in list(definitions, "bindings")?.iter().enumerate() {
            let at = |key: &str| format!("bindings[{i}].{key}");
            if !in_vhost(b, vhost) {
                continue;
            }
            let source = text(b, "source", &at("source"))?;
            let destination = text(b, "destination", &at("destination"))?;
            // The default exchange's implicit bindings are not definitions.
            if source.is_empty() || !(wanted(source) || wanted(destination)) {
                continue;
            }
            let destination = match text(b, "destination_type", &at("destination_type"))? {
                "queue" => Destination::Queue(destination.to_owned()),
                "exchange" => Destination::Exchange(destination.to_owned()),
                _ => {
                    return Err(DefinitionsError::Shape {
                        what: at("destination_type"),
                        expected: "\"queue\" or \"exchange\"",
                    });
                }
            };
            let expect_exchange = |t: &mut Topology, name: &str| {
                if !t.exchanges.iter().any(|x| x.name == name)
                    && let Some(x) = exchanges.iter().find(|x| x.name == name)
                {
                    t.exchanges.push(Exchange {
                        declare: false,
                        ..x.clone()
                    });
                }
            };
            expect_exchange(&mut t, source);
            match &destination {
                Destination::Exchange(name) => expect_exchange(&mut t, name),
                Destination::Queue(name) => {
                    if !t.queues.iter().any(|q| &q.name == name)
                        && let Some(q) = queues.iter().find(|q| &q.name == name)
                    {
                        t.queues.push(Queue {
                            declare: false,
                            ..q.clone()
                        });
                    }
                }
            }
            t.bindings.push(Binding {
                arguments: json_to_table(object(b, "arguments", &at("arguments"))?),
                ..Binding::new(
                    source,
                    destination,
                    text(b, "routing_key", &at("routing_key"))?,
                )
            });
        }
        Ok(t)
    }
}

/// Moves the arguments with a key of their own into `queue`'s fields; the rest stay
/// arguments.
fn queue_arguments(
    queue: &mut Queue,
    arguments: &Map<String, Value>,
) -> Result<(), DefinitionsError> {
    let name = queue.name.clone();
    let bad = |arg: &str, v: &Value| DefinitionsError::Unrepresentable {
        entity: format!("queue {name:?}"),
        argument: arg.to_owned(),
        value: v.to_string(),
    };
    for (arg, v) in arguments {
        let string = || v.as_str().map(str::to_owned).ok_or_else(|| bad(arg, v));
        let u32_of = || {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(arg, v))
        };
        match arg.as_str() {
            "x-queue-type" => {
                queue.kind = v
                    .as_str()
                    .and_then(QueueType::from_name)
                    .ok_or_else(|| bad(arg, v))?;
            }
            "x-dead-letter-exchange" => queue.dead_letter_exchange = Some(string()?),
            "x-dead-letter-routing-key" => queue.dead_letter_routing_key = Some(string()?),
            "x-message-ttl" => queue.message_ttl = Some(u32_of()?),
            "x-expires" => queue.expires = Some(u32_of()?),
            "x-max-length" => queue.max_length = Some(v.as_u64().ok_or_else(|| bad(arg, v))?),
            "x-max-length-bytes" => {
                queue.max_length_bytes = Some(v.as_u64().ok_or_else(|| bad(arg, v))?);
            }
            "x-overflow" => {
                queue.overflow = Some(
                    v.as_str()
                        .and_then(Overflow::from_name)
                        .ok_or_else(|| bad(arg, v))?,
                );
            }
            "x-single-active-consumer" => {
                queue.single_active_consumer = v.as_bool().ok_or_else(|| bad(arg, v))?;
            }
            "x-delivery-limit" => queue.delivery_limit = Some(u32_of()?),
            "x-quorum-initial-group-size" => queue.initial_group_size = Some(u32_of()?),
            "x-max-age" => queue.max_age = Some(string()?),
            "x-max-priority" => {
                queue.max_priority = Some(
                    v.as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| bad(arg, v))?,
                );
            }
            _ => {
                queue.arguments.insert(arg.as_str(), json_to_field(v));
            }
        }
    }
    Ok(())
}

fn unrepresentable(entity: &str, argument: &str, v: &FieldValue) -> DefinitionsError {
    DefinitionsError::Unrepresentable {
        entity: format!("exchange {entity:?}"),
        argument: argument.to_owned(),
        value: field_to_json(v).to_string(),
    }
}

fn in_vhost(entity: &Value, vhost: &str) -> bool {
    entity
        .get("vhost")
        .and_then(Value::as_str)
        .is_none_or(|v| v == vhost)
}

fn list<'a>(definitions: &'a Value, key: &str) -> Result<&'a [Value], DefinitionsError> {
    match definitions.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(DefinitionsError::Shape {
            what: key.to_owned(),
            expected: "a list",
        }),
    }
}

fn text<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a str, DefinitionsError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| DefinitionsError::Shape {
            what: what.to_owned(),
            expected: "a string",
        })
}

fn flag(v: &Value, key: &str, what: &str) -> Result<bool, DefinitionsError> {
    match v.get(key) {
        None => Ok(false),
        Some(b) => b.as_bool().ok_or_else(|| DefinitionsError::Shape {
            what: what.to_owned(),
            expected: "true or false",
        }),
    }
}

fn object<'a>(
    v: &'a Value,
    key: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, DefinitionsError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match v.get(key) {
        None | Some(Value::Null) => Ok(EMPTY.get_or_init(Map::new)),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(DefinitionsError::Shape {
            what: what.to_owned(),
            expected: "an object",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_round_trips_through_definitions() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
                .unwrap();
        let t = Topology::from_toml(&text, "topology.toml").unwrap();
        let defs = t.to_definitions("/");
        assert_eq!(defs["exchanges"].as_array().unwrap().len(), 4);
        // 5 listed, 3 retry queues.
        assert_eq!(defs["queues"].as_array().unwrap().len(), 8);
        assert_eq!(defs["bindings"].as_array().unwrap().len(), 6);
        let retry = &defs["queues"].as_array().unwrap()[1];
        assert_eq!(retry["name"], "orders.work.retry.1s");
        assert_eq!(retry["vhost"], "/");
        assert_eq!(retry["arguments"]["x-message-ttl"], 1000);
        assert_eq!(
            retry["arguments"]["x-dead-letter-routing-key"],
            "orders.work"
        );
        assert_eq!(
            defs["exchanges"][0]["arguments"]["alternate-exchange"],
            "orders.unrouted"
        );

        let back = Topology::from_definitions(&defs, "/", None).unwrap();
        let work = back
            .queues
            .iter()
            .find(|q| q.name == "orders.work")
            .unwrap();
        assert_eq!(work.kind, QueueType::Quorum);
        assert_eq!(work.delivery_limit, Some(5));
        assert_eq!(work.dead_letter_exchange.as_deref(), Some(""));
        assert!(work.arguments.is_empty(), "{:?}", work.arguments);
        let orders = &back.exchanges[0];
        assert_eq!(
            orders.alternate_exchange.as_deref(),
            Some("orders.unrouted")
        );
        assert!(orders.arguments.is_empty());
        let headers = back
            .bindings
            .iter()
            .find(|b| b.source == "orders.by-header")
            .unwrap();
        assert_eq!(
            headers
                .arguments
                .get("x-match")
                .and_then(FieldValue::as_str),
            Some("any")
        );
        let only = Topology::from_definitions(&defs, "/", Some("audit")).unwrap();
        // orders -> audit and audit -> audit.log; "orders" is only expected to exist.
        assert_eq!(only.bindings.len(), 2);
        let names: Vec<(&str, bool)> = only
            .exchanges
            .iter()
            .map(|x| (x.name.as_str(), x.declare))
            .collect();
        assert_eq!(names, [("audit", true), ("orders", false)]);
        assert_eq!(only.queues.len(), 1);
        assert!(
            Topology::from_definitions(&defs, "/other", None)
                .unwrap()
                .queues
                .is_empty()
        );
    }

    #[test]
    fn bad_documents_are_typed_errors() {
        let e = Topology::from_definitions(&json!({"queues": 3}), "/", None).unwrap_err();
        assert_eq!(e.to_string(), "definitions: queues is not a list");
        let e = Topology::from_definitions(
            &json!({"queues": [{"name": "q", "durable": "yes"}]}),
            "/",
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "definitions: queues[0].durable is not true or false"
        );
        let e = Topology::from_definitions(
            &json!({"queues": [{"name": "q", "arguments": {"x-max-priority": 1000}}]}),
            "/",
            None,
        )
        .unwrap_err();
        assert!(matches!(e, DefinitionsError::Unrepresentable { .. }), "{e}");
        let e = Topology::from_definitions(
            &json!({"bindings": [{"source": "x", "destination": "q", "destination_type": "topic", "routing_key": ""}]}),
            "/",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("bindings[0].destination_type"),
            "{e}"
        );
        // Other arguments stay arguments, with their JSON types.
        let t = Topology::from_definitions(
            &json!({"queues": [{"name": "q", "durable": true, "arguments": {"x-queue-leader-locator": "balanced", "x-custom": [1, 2.5, null]}}]}),
            "/",
            None,
        )
        .unwrap();
        let args = &t.queues[0].arguments;
        assert_eq!(
            args.get("x-queue-leader-locator")
                .and_then(FieldValue::as_str),
            Some("balanced")
        );
        assert_eq!(
            args.get("x-custom"),
            Some(&FieldValue::Array(vec![
                FieldValue::I64(1),
                FieldValue::F64(2.5),
                FieldValue::Void
            ]))
        );
    }
}
