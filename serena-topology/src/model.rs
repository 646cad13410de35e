//! The topology model: exchanges, queues and bindings as plain data, and how each maps onto the
//! AMQP declaration that creates it.

use std::sync::Arc;
use std::time::Duration;

use super::connection::ConnectionSettings;
use super::error::{Destination, Entity, EntityName, Location};
pub use super::kinds::{ExchangeKind, Overflow, QueueType};
use serena_proto::FieldTable;

/// Where an entity was written, when it was loaded from a file: the file, the entity's table and
/// each of its keys. Entities built in code have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub(crate) file: Arc<str>,
    pub(crate) at: Location,
    pub(crate) keys: Vec<(String, Location)>,
    /// Keys whose values were invalid (already reported): rules that depend on them are
    /// skipped, so one mistake gives one problem.
    pub(crate) invalid_keys: Vec<String>,
}

impl Default for Location {
    fn default() -> Self {
        Location { line: 1, column: 1 }
    }
}

impl Origin {
    /// The file the entity came from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the entity's table starts.
    pub fn location(&self) -> Location {
        self.at
    }

    /// Where `key` was written (`"max_priority"`, `"arguments.x-foo"`, `"retry.delays[1]"`),
    /// if it was.
    pub fn key_location(&self, key: &str) -> Option<Location> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, at)| *at)
    }

    /// True when `key`'s value was invalid and has been reported already.
    pub(crate) fn is_invalid(&self, key: &str) -> bool {
        self.invalid_keys.iter().any(|k| k == key)
    }
}

/// An exchange, as `[[exchanges]]` in `topology.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Its name.
    pub name: String,
    /// Its type (`type` in the file).
    pub kind: ExchangeKind,
    /// `false`: only expected to exist; checked, never created.
    pub declare: bool,
    /// Survives a broker restart (default `true`).
    pub durable: bool,
    /// Deleted when its last binding goes (default `false`).
    pub auto_delete: bool,
    /// Publishers cannot use it, only exchange-to-exchange bindings (default `false`).
    pub internal: bool,
    /// Where messages that no binding routes go (`alternate-exchange`).
    pub alternate_exchange: Option<String>,
    /// Any other arguments, sent as given.
    pub arguments: FieldTable,
    /// Where it was written, when loaded from a file.
    pub origin: Option<Origin>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            name: String::new(),
            kind: ExchangeKind::Direct,
            declare: true,
            durable: true,
            auto_delete: false,
            internal: false,
            alternate_exchange: None,
            arguments: FieldTable::new(),
            origin: None,
        }
    }
}

impl Exchange {
    /// A durable exchange of `kind`, to be declared.
    pub fn new(name: impl Into<String>, kind: ExchangeKind) -> Self {
        Exchange {
            name: name.into(),
            kind,
            ..Exchange::default()
        }
    }

    /// The arguments sent in `exchange.declare`: [`arguments`](Self::arguments) plus
    /// `alternate-exchange`.
    pub fn declare_arguments(&self) -> FieldTable {
        let mut args = self.arguments.clone();
        if let Some(ae) = &self.alternate_exchange {
            args.insert("alternate-exchange", ae.as_str());
        }
        args
    }

    /// How reports and problems name it.
    pub fn entity(&self, index: usize) -> Entity {
        Entity::Exchange(entity_name(&self.name, index))
    }
}

/// A queue, as `[[queues]]` in `topology.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// Its type (`type` in the file; `x-queue-type`).
    pub kind: QueueType,
    /// `false`: only expected to exist; checked, never created.
    pub declare: bool,
    /// Survives a broker restart (default `true`).
    pub durable: bool,
    /// Belongs to the declaring connection and goes with it (default `false`).
    pub exclusive: bool,
    /// Deleted when its last consumer goes (default `false`).
    pub auto_delete: bool,
    /// Exchange that rejected and expired messages go to (`x-dead-letter-exchange`; `""` is the
    /// default exchange).
    pub dead_letter_exchange: Option<String>,
    /// Routing key for dead-lettered messages (`x-dead-letter-routing-key`).
    pub dead_letter_routing_key: Option<String>,
    /// Message time to live, in milliseconds (`x-message-ttl`).
    pub message_ttl: Option<u32>,
    /// Delete the queue after this many milliseconds unused (`x-expires`).
    pub expires: Option<u32>,
    /// Most ready messages (`x-max-length`).
    pub max_length: Option<u64>,
    /// Most bytes of ready message bodies (`x-max-length-bytes`).
    pub max_length_bytes: Option<u64>,
    /// What happens when a limit is reached (`x-overflow`).
    pub overflow: Option<Overflow>,
    /// Only one consumer at a time gets messages (`x-single-active-consumer`).
    pub single_active_consumer: bool,
    /// Deliveries before a message is dead-lettered or dropped (`x-delivery-limit`; quorum).
    pub delivery_limit: Option<u32>,
    /// How many cluster nodes hold a replica of the queue, at least 1: its replication factor
    /// (`x-quorum-initial-group-size`; quorum). RabbitMQ picks the nodes when the queue is
    /// declared and caps the number at the cluster's size; unset, the broker's default applies
    /// (its `quorum_cluster_size`, 3 out of the box).
    pub initial_group_size: Option<u32>,
    /// How long a stream keeps messages, e.g. `7D` (`x-max-age`; streams).
    pub max_age: Option<String>,
    /// Highest message priority, 1 to 255 (`x-max-priority`; classic).
    pub max_priority: Option<u8>,
    /// Any other arguments, sent as given.
    pub arguments: FieldTable,
    /// Delayed retries of the messages its consumers fail (`retry`): apply declares the queues
    /// they wait in and the queue they are parked in (see [`Retry`]).
    pub retry: Option<Retry>,
    /// Where it was written, when loaded from a file.
    pub origin: Option<Origin>,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            name: String::new(),
            kind: QueueType::Classic,
            declare: true,
            durable: true,
            exclusive: false,
            auto_delete: false,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            message_ttl: None,
            expires: None,
            max_length: None,
            max_length_bytes: None,
            overflow: None,
            single_active_consumer: false,
            delivery_limit: None,
            initial_group_size: None,
            max_age: None,
            max_priority: None,
            arguments: FieldTable::new(),
            retry: None,
            origin: None,
        }
    }
}

/// A queue's delayed retries, as `retry = { delays = ["1s", "10s", "1m"], park = "..." }` in its
/// `[[queues]]` table.
///
/// A message whose handler fails waits out the next delay in a queue of its own and comes back;
/// after the last delay it is parked. serena's `TopologyExt::apply` declares,
/// after the work queue, one queue per distinct delay (`<queue>.retry.<delay>`, see
/// [`retry_queue_name`](super::retry_queue_name)), of the work queue's type and durability, whose
/// messages expire after the delay (`x-message-ttl`) and are dead-lettered back to the work
/// queue through the default exchange; then the park queue, unless `[[queues]]` lists it (then
/// that declaration is used as it is). [`Queue::retry_schedule`] gives the worker the same
/// names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retry {
    /// The wait before each retry, in order (`delays`, written `"500ms"`, `"10s"`, `"5m"`,
    /// `"1h"`): 1 to [`MAX_DELAYS`](Self::MAX_DELAYS) of them, each a whole number of
    /// milliseconds up to [`MAX_RETRY_DELAY`](super::MAX_RETRY_DELAY).
    pub delays: Vec<Duration>,
    /// The queue a message goes to after its last attempt (`park`); `None` is
    /// `<queue>.parked`.
    pub park: Option<String>,
}

impl Retry {
    /// The most delays a schedule may have. Each distinct delay is a queue on the broker, and
    /// a schedule longer than this is more likely a mistake than a plan.
    pub const MAX_DELAYS: usize = 32;

    /// Retries after `delays`, parking in `<queue>.parked`.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Self {
        Retry {
            delays: delays.into_iter().collect(),
            park: None,
        }
    }
}

/// Queue arguments with a key of their own in the file: (argument, key).
pub(crate) const QUEUE_ARGUMENT_KEYS: &[(&str, &str)] = &[
    ("x-queue-type", "type"),
    ("x-dead-letter-exchange", "dead_letter_exchange"),
    ("x-dead-letter-routing-key", "dead_letter_routing_key"),
    ("x-message-ttl", "message_ttl"),
    ("x-expires", "expires"),
    ("x-max-length", "max_length"),
    ("x-max-length-bytes", "max_length_bytes"),
    ("x-overflow", "overflow"),
    ("x-single-active-consumer", "single_active_consumer"),
    ("x-delivery-limit", "delivery_limit"),
    ("x-quorum-initial-group-size", "initial_group_size"),
    ("x-max-age", "max_age"),
    ("x-max-priority", "max_priority"),
];

impl Queue {
    /// A durable classic queue, to be declared.
    pub fn new(name: impl Into<String>) -> Self {
        Queue {
            name: name.into(),
            ..Queue::default()
        }
    }

    /// The arguments sent in `queue.declare`: `x-queue-type`, one per property that is set, then
    /// [`arguments`](Self::arguments).
    pub fn declare_arguments(&self) -> FieldTable {
        let mut args = FieldTable::new().with("x-queue-type", self.kind.as_str());
        let long = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(v) = &self.dead_letter_exchange {
            args.insert("x-dead-letter-exchange", v.as_str());
        }
        if let Some(v) = &self.dead_letter_routing_key {
            args.insert("x-dead-letter-routing-key", v.as_str());
        }
        if let Some(v) = self.message_ttl {
            args.insert("x-message-ttl", i64::from(v));
        }
        if let Some(v) = self.expires {
            args.insert("x-expires", i64::from(v));
        }
        if let Some(v) = self.max_length {
            args.insert("x-max-length", long(v));
        }
        if let Some(v) = self.max_length_bytes {
            args.insert("x-max-length-bytes", long(v));
        }
        if let Some(v) = self.overflow {
            args.insert("x-overflow", v.as_str());
        }
        if self.single_active_consumer {
            args.insert("x-single-active-consumer", true);
        }
        if let Some(v) = self.delivery_limit {
            args.insert("x-delivery-limit", i64::from(v));
        }
        if let Some(v) = self.initial_group_size {
            args.insert("x-quorum-initial-group-size", i64::from(v));
        }
        if let Some(v) = &self.max_age {
            args.insert("x-max-age", v.as_str());
        }
        if let Some(v) = self.max_priority {
            args.insert("x-max-priority", i64::from(v));
        }
        for (k, v) in self.arguments.iter() {
            args.insert(k.clone(), v.clone());
        }
        args
    }

    /// How reports and problems name it.
    pub fn entity(&self, index: usize) -> Entity {
        Entity::Queue(entity_name(&self.name, index))
    }
}

/// A binding, as `[[bindings]]` in `topology.toml`: from an exchange to a queue or to another
/// exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The exchange messages come from.
    pub source: String,
    /// Where they go.
    pub destination: Destination,
    /// The binding key (a pattern for topic exchanges; ignored by fanout and headers).
    pub routing_key: String,
    /// Binding arguments: for a headers exchange, `x-match` and the headers to match.
    pub arguments: FieldTable,
    /// `false`: only expected to exist; never created (and, since AMQP 0-9-1 cannot check a
    /// binding without creating it, not checked either).
    pub declare: bool,
    /// Where it was written, when loaded from a file.
    pub origin: Option<Origin>,
}

impl Binding {
    /// A binding from `source` to `destination` with `routing_key`, to be declared.
    pub fn new(
        source: impl Into<String>,
        destination: Destination,
        routing_key: impl Into<String>,
    ) -> Self {
        Binding {
            source: source.into(),
            destination,
            routing_key: routing_key.into(),
            arguments: FieldTable::new(),
            declare: true,
            origin: None,
        }
    }

    /// How reports and problems name it (`index` counts from 0).
    pub fn entity(&self, index: usize) -> Entity {
        Entity::Binding {
            index: index + 1,
            source: Some(self.source.clone()),
            destination: Some(self.destination.clone()),
            routing_key: self.routing_key.clone(),
        }
    }
}

fn entity_name(name: &str, index: usize) -> EntityName {
    if name.is_empty() {
        EntityName::Unnamed(index + 1)
    } else {
        EntityName::Named(name.to_owned())
    }
}

/// A whole topology: connection settings, exchanges, queues and bindings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// The `[connection]` block; environment variables override it.
    pub connection: ConnectionSettings,
    /// Declared first, in order.
    pub exchanges: Vec<Exchange>,
    /// Declared second, in order.
    pub queues: Vec<Queue>,
    /// Declared last, in order.
    pub bindings: Vec<Binding>,
}

/// The exchanges every RabbitMQ virtual host has: bindings and references may use them without
/// listing them.
pub const STANDARD_EXCHANGES: &[&str] = &[
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
    "amq.match",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serena_proto::FieldValue;

    #[test]
    fn queue_arguments_follow_the_properties() {
        let q = Queue {
            kind: QueueType::Quorum,
            dead_letter_exchange: Some(String::new()),
            dead_letter_routing_key: Some("parking".into()),
            delivery_limit: Some(5),
            single_active_consumer: true,
            max_length: Some(u64::MAX),
            initial_group_size: Some(3),
            arguments: FieldTable::new().with("x-queue-leader-locator", "balanced"),
            ..Queue::new("work")
        };
        let args = q.declare_arguments();
        assert_eq!(
            args.get("x-queue-type").and_then(FieldValue::as_str),
            Some("quorum")
        );
        assert_eq!(
            args.get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("")
        );
        assert_eq!(
            args.get("x-delivery-limit").and_then(FieldValue::as_i64),
            Some(5)
        );
        assert_eq!(
            args.get("x-max-length").and_then(FieldValue::as_i64),
            Some(i64::MAX)
        );
        assert_eq!(
            args.get("x-single-active-consumer"),
            Some(&FieldValue::Bool(true))
        );
        assert_eq!(
            args.get("x-quorum-initial-group-size")
                .and_then(FieldValue::as_i64),
            Some(3)
        );
        assert!(args.contains_key("x-queue-leader-locator"));
        assert!(!args.contains_key("x-message-ttl"));
    }

    #[test]
    fn exchange_arguments_carry_the_alternate() {
        let x = Exchange {
            alternate_exchange: Some("unrouted".into()),
            internal: true,
            ..Exchange::new("orders", ExchangeKind::Topic)
        };
        assert_eq!(
            x.declare_arguments()
                .get("alternate-exchange")
                .and_then(FieldValue::as_str),
            Some("unrouted")
        );
        assert_eq!(
            ExchangeKind::from_name("x-delayed-message").as_str(),
            "x-delayed-message"
        );
        assert_eq!(ExchangeKind::from_name("topic"), ExchangeKind::Topic);
    }
}
