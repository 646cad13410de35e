//! Semantic validation of a [`Topology`]: pure, no I/O. Every problem is reported, not the first.
//!
//! The rules:
//!
//! - names: present, at most 255 bytes, not starting with `amq.` unless `declare = false`,
//!   unique among exchanges and among queues; a binding listed once;
//! - references: binding sources and destinations, alternate exchanges and dead-letter exchanges
//!   are in the topology (or are one of [`STANDARD_EXCHANGES`]);
//! - exchange types: `direct`, `fanout`, `topic`, `headers`, or a plugin type starting `x-`;
//! - queue types: quorum queues and streams are durable, never exclusive or auto-delete; each
//!   property is one the type supports (RabbitMQ 3.10's answers, e.g. `x-max-priority` only on
//!   classic queues, `x-max-age` only on streams, `x-delivery-limit` and
//!   `x-quorum-initial-group-size` only on quorum queues);
//! - values: `expires`, `max_priority` and `initial_group_size` above zero, lengths that fit a signed 64-bit argument,
//!   `max_age` a number and a unit, `x-match` one of RabbitMQ's four, no NaN or infinity in
//!   arguments, no argument that a key of its own sets (`arguments.x-max-priority`);
//! - retries (`retry`): 1 to [`Retry::MAX_DELAYS`](super::Retry::MAX_DELAYS) delays, each a
//!   whole number of milliseconds from 1 ms to [`MAX_RETRY_DELAY`](super::MAX_RETRY_DELAY); not
//!   on streams or exclusive queues; the names a schedule adds (`<queue>.retry.<delay>`, the park
//!   queue) at most 255 bytes and no other queue's: a delay queue may not be listed in
//!   `[[queues]]` nor be another schedule's park queue; the park queue may be listed (that
//!   declaration is then used as it is), and schedules may share one they would declare alike.

mod retry;

use std::collections::HashMap;

use super::error::{Entity, Location, Problem, TopologyError};
use super::model::{
    Binding, Exchange, ExchangeKind, Origin, Overflow, QUEUE_ARGUMENT_KEYS, Queue, QueueType,
    STANDARD_EXCHANGES, Topology,
};
use serena_proto::{FieldTable, FieldValue, ShortString};

impl Topology {
    /// Checks every rule (see [`validate`](super::validate)) and reports every problem at once.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut problems = problems(self);
        if problems.is_empty() {
            return Ok(());
        }
        sort_problems(&mut problems);
        Err(TopologyError::Invalid { problems })
    }
}

/// Puts problems in file order; problems without a position keep their order, last.
pub(crate) fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by_key(|p| {
        p.location.unwrap_or(Location {
            line: usize::MAX,
            column: usize::MAX,
        })
    });
}

/// Collects problems about one entity.
pub(crate) struct Checker<'a> {
    out: &'a mut Vec<Problem>,
    entity: Entity,
    origin: Option<&'a Origin>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(
        out: &'a mut Vec<Problem>,
        entity: Entity,
        origin: Option<&'a Origin>,
    ) -> Self {
        Checker {
            out,
            entity,
            origin,
        }
    }

    /// Reports `message` at `key` (falling back to the entity's table).
    pub(crate) fn at(&mut self, key: &str, message: impl Into<String>) {
        let location = self.origin.map(|o| o.key_location(key).unwrap_or(o.at));
        self.out.push(Problem {
            file: self.origin.map(|o| o.file.to_string()),
            location,
            entity: self.entity.clone(),
            message: message.into(),
        });
    }

    fn name(&mut self, name: &str, declare: bool, what: &str) {
        if name.len() > ShortString::MAX_LEN {
            self.at(
                "name",
                format!(
                    "the name is {} bytes long; AMQP allows at most 255",
                    name.len()
                ),
            );
        }
        if declare && name.starts_with("amq.") {
            self.at(
                "name",
                format!(
                    "{what} names starting with \"amq.\" are reserved by the broker and cannot be \
                     declared (set declare = false to expect an existing one)"
                ),
            );
        }
    }

    /// Reports arguments a key of its own sets, and non-finite floats.
    fn arguments(&mut self, args: &FieldTable, own_keys: &[(&str, &str)]) {
        for (arg, key) in own_keys {
            if args.contains_key(arg) {
                self.at(
                    &format!("arguments.{arg}"),
                    format!("set {arg} with the key {key}, not in arguments"),
                );
            }
        }
        if let Some(key) = args.find_non_finite_float() {
            let key = key.to_owned();
            self.at(
                &format!("arguments.{key}"),
                format!("arguments.{key} is NaN or infinite, which RabbitMQ refuses"),
            );
        }
    }
}

fn first_at(origin: Option<&Origin>, key: &str) -> String {
    origin.map_or(String::new(), |o| {
        let at = o.key_location(key).unwrap_or(o.at);
        format!(" (first at line {})", at.line)
    })
}

fn invalid(origin: Option<&Origin>, key: &str) -> bool {
    origin.is_some_and(|o| o.is_invalid(key))
}

fn missing_reference(what: &str, name: &str) -> String {
    format!(
        "{what} {name:?} is not in this topology (add it, with declare = false if it already \
         exists)"
    )
}

fn problems(t: &Topology) -> Vec<Problem> {
    let mut out = Vec::new();
    let exchanges: HashMap<&str, &Exchange> = t
        .exchanges
        .iter()
        .rev()
        .map(|x| (x.name.as_str(), x))
        .collect();
    let queues: HashMap<&str, &Queue> = t
        .queues
        .iter()
        .rev()
        .map(|q| (q.name.as_str(), q))
        .collect();
    let exchange_known =
        |name: &str| exchanges.contains_key(name) || STANDARD_EXCHANGES.contains(&name);

    for (i, x) in t.exchanges.iter().enumerate() {
        let mut c = Checker {
            out: &mut out,
            entity: x.entity(i),
            origin: x.origin.as_ref(),
        };
        if x.name.is_empty() && !invalid(x.origin.as_ref(), "name") {
            c.at(
                "name",
                "an exchange needs a name (the default exchange \"\" cannot be declared)",
            );
        }
        c.name(&x.name, x.declare, "exchange");
        if let Some(first) = exchanges.get(x.name.as_str())
            && !std::ptr::eq(*first, x)
            && !x.name.is_empty()
        {
            c.at(
                "name",
                format!(
                    "exchange listed twice{}",
                    first_at(first.origin.as_ref(), "name")
                ),
            );
        }
        if let ExchangeKind::Custom(kind) = &x.kind
            && !kind.starts_with("x-")
            && !invalid(x.origin.as_ref(), "type")
        {
            c.at(
                "type",
                format!(
                    "unknown exchange type {kind:?}: expected direct, fanout, topic, headers, \
                     or a plugin type starting with \"x-\""
                ),
            );
        }
        if let Some(ae) = &x.alternate_exchange
            && !exchange_known(ae)
        {
            c.at(
                "alternate_exchange",
                missing_reference("alternate exchange", ae),
            );
        }
        c.arguments(
            &x.arguments,
            &[("alternate-exchange", "alternate_exchange")],
        );
    }

    for (i, q) in t.queues.iter().enumerate() {
        let mut c = Checker {
            out: &mut out,
            entity: q.entity(i),
            origin: q.origin.as_ref(),
        };
        if q.name.is_empty() && !invalid(q.origin.as_ref(), "name") {
            c.at(
                "name",
                "a queue needs a name (server-named queues belong in application code)",
            );
        }
        c.name(&q.name, q.declare, "queue");
        if let Some(first) = queues.get(q.name.as_str())
            && !std::ptr::eq(*first, q)
            && !q.name.is_empty()
        {
            c.at(
                "name",
                format!(
                    "queue listed twice{}",
                    first_at(first.origin.as_ref(), "name")
                ),
            );
        }
        if !invalid(q.origin.as_ref(), "type") {
            queue_type_rules(&mut c, q);
        }
        if q.dead_letter_routing_key.is_some() && q.dead_letter_exchange.is_none() {
            c.at(
                "dead_letter_routing_key",
                "dead_letter_routing_key needs dead_letter_exchange (RabbitMQ ignores it alone)",
            );
        }
        if let Some(dlx) = &q.dead_letter_exchange
            && !dlx.is_empty()
            && !exchange_known(dlx)
        {
            c.at(
                "dead_letter_exchange",
                missing_reference("dead-letter exchange", dlx),
            );
        }
        if q.expires == Some(0) {
            c.at("expires", "expires must be at least 1 (milliseconds)");
        }
        if q.max_priority == Some(0) {
            c.at("max_priority", "max_priority must be between 1 and 255");
        }
        if q.initial_group_size == Some(0) {
            c.at(
                "initial_group_size",
                "initial_group_size must be at least 1 (replicas)",
            );
        }
        for (key, v) in [
            ("max_length", q.max_length),
            ("max_length_bytes", q.max_length_bytes),
        ] {
            if v.is_some_and(|v| i64::try_from(v).is_err()) {
                c.at(key, format!("{key} must be at most {}", i64::MAX));
            }
        }
        if let Some(age) = &q.max_age
            && !super::kinds::is_interval(age)
        {
            c.at(
                "max_age",
                format!(
                    "max_age must be a whole number followed by a unit, Y, M, D, h, m or s \
                     (e.g. \"7D\"), not {age:?}"
                ),
            );
        }
        c.arguments(&q.arguments, QUEUE_ARGUMENT_KEYS);
    }
    retry::rules(&mut out, t, &queues);

    let mut seen: Vec<&Binding> = Vec::new();
    for (i, b) in t.bindings.iter().enumerate() {
        let mut c = Checker {
            out: &mut out,
            entity: b.entity(i),
            origin: b.origin.as_ref(),
        };
        if b.source.is_empty() {
            c.at(
                "source",
                "the default exchange \"\" cannot be bound: every queue is already reachable \
                 through it by name",
            );
        } else if !exchange_known(&b.source) {
            c.at("source", missing_reference("source exchange", &b.source));
        }
        match &b.destination {
            super::Destination::Queue(q) if !queues.contains_key(q.as_str()) => {
                c.at("queue", missing_reference("queue", q));
            }
            super::Destination::Exchange(x) if !exchange_known(x) => {
                c.at("exchange", missing_reference("exchange", x));
            }
            _ => {}
        }
        if b.routing_key.len() > ShortString::MAX_LEN {
            c.at(
                "routing_key",
                format!(
                    "the routing key is {} bytes long; AMQP allows at most 255",
                    b.routing_key.len()
                ),
            );
        }
        let headers_source = matches!(b.source.as_str(), "amq.headers" | "amq.match")
            || exchanges
                .get(b.source.as_str())
                .is_some_and(|x| x.kind == ExchangeKind::Headers);
        if headers_source
            && let Some(m) = b.arguments.get("x-match")
            && !matches!(
                m.as_str(),
                Some("all" | "any" | "all-with-x" | "any-with-x")
            )
        {
            c.at(
                "arguments.x-match",
                format!(
                    "x-match must be the string \"all\", \"any\", \"all-with-x\" or \
                     \"any-with-x\", not {}",
                    describe(m)
                ),
            );
        }
        c.arguments(&b.arguments, &[]);
        if let Some(first) = seen.iter().find(|s| same_binding(s, b)) {
            c.at(
                "source",
                format!(
                    "binding listed twice{}",
                    first_at(first.origin.as_ref(), "source")
                ),
            );
        } else {
            seen.push(b);
        }
    }
    out
}

fn same_binding(a: &Binding, b: &Binding) -> bool {
    a.source == b.source
        && a.destination == b.destination
        && a.routing_key == b.routing_key
        && a.arguments == b.arguments
}

/// A value as a person would write it: `"some"`, `1`, `true`.
fn describe(v: &FieldValue) -> String {
    if let Some(s) = v.as_str() {
        format!("{s:?}")
    } else if let Some(n) = v.as_i64() {
        n.to_string()
    } else if let Some(b) = v.as_bool() {
        b.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Durability and the properties each queue type accepts (RabbitMQ 3.10).
fn queue_type_rules(c: &mut Checker<'_>, q: &Queue) {
    let kind = q.kind;
    if kind != QueueType::Classic {
        if !q.durable {
            c.at("durable", format!("{kind} queues must be durable"));
        }
        if q.exclusive {
            c.at("exclusive", format!("{kind} queues cannot be exclusive"));
        }
        if q.auto_delete {
            c.at(
                "auto_delete",
                format!("{kind} queues cannot be auto-delete"),
            );
        }
    }
    let set: [(&str, &str, bool); 12] = [
        (
            "dead_letter_exchange",
            "x-dead-letter-exchange",
            q.dead_letter_exchange.is_some(),
        ),
        (
            "dead_letter_routing_key",
            "x-dead-letter-routing-key",
            q.dead_letter_routing_key.is_some(),
        ),
        ("message_ttl", "x-message-ttl", q.message_ttl.is_some()),
        ("expires", "x-expires", q.expires.is_some()),
        ("max_length", "x-max-length", q.max_length.is_some()),
        ("overflow", "x-overflow", q.overflow.is_some()),
        (
            "single_active_consumer",
            "x-single-active-consumer",
            q.single_active_consumer,
        ),
        (
            "delivery_limit",
            "x-delivery-limit",
            q.delivery_limit.is_some(),
        ),
        (
            "initial_group_size",
            "x-quorum-initial-group-size",
            q.initial_group_size.is_some(),
        ),
        ("max_age", "x-max-age", q.max_age.is_some()),
        ("max_priority", "x-max-priority", q.max_priority.is_some()),
        (
            "max_length_bytes",
            "x-max-length-bytes",
            q.max_length_bytes.is_some(),
        ),
    ];
    for (key, arg, is_set) in set {
        if is_set && !kind.supports(key) {
            c.at(
                key,
                format!("{arg} is not supported on {kind} queues ({key})"),
            );
        }
    }
    if kind == QueueType::Quorum && q.overflow == Some(Overflow::RejectPublishDlx) {
        c.at(
            "overflow",
            "x-overflow \"reject-publish-dlx\" is not supported on quorum queues (RabbitMQ falls \
             back to drop-head); use \"reject-publish\" or \"drop-head\"",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;

    /// Every problem `t` has, as text (shared with the retry rules' tests).
    pub(super) fn messages(t: &Topology) -> Vec<String> {
        match t.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_code_built_topology_validates_without_positions() {
        let t = Topology {
            exchanges: vec![Exchange::new("orders", ExchangeKind::Topic)],
            queues: vec![Queue {
                kind: QueueType::Quorum,
                max_priority: Some(5),
                ..Queue::new("work")
            }],
            bindings: vec![Binding::new(
                "orders",
                Destination::Queue("work".into()),
                "#",
            )],
            ..Topology::default()
        };
        assert_eq!(
            messages(&t),
            ["queue \"work\": x-max-priority is not supported on quorum queues (max_priority)"]
        );
    }

    #[test]
    fn values_a_file_cannot_hold_are_checked_in_code() {
        // The loader refuses these ranges with their own messages; code can still build them.
        let t = Topology {
            exchanges: vec![Exchange::new("x", ExchangeKind::Custom("delayed".into()))],
            queues: vec![Queue {
                expires: Some(0),
                max_priority: Some(0),
                initial_group_size: Some(0),
                max_length: Some(u64::MAX),
                max_length_bytes: Some(1 << 63),
                ..Queue::new("q")
            }],
            ..Topology::default()
        };
        assert_eq!(
            messages(&t),
            [
                "exchange \"x\": unknown exchange type \"delayed\": expected direct, fanout, \
                 topic, headers, or a plugin type starting with \"x-\"",
                "queue \"q\": x-quorum-initial-group-size is not supported on classic queues \
                 (initial_group_size)",
                "queue \"q\": expires must be at least 1 (milliseconds)",
                "queue \"q\": max_priority must be between 1 and 255",
                "queue \"q\": initial_group_size must be at least 1 (replicas)",
                "queue \"q\": max_length must be at most 9223372036854775807",
                "queue \"q\": max_length_bytes must be at most 9223372036854775807",
            ]
        );
    }

    #[test]
    fn standard_exchanges_need_no_listing() {
        let t = Topology {
            queues: vec![Queue::new("q")],
            bindings: vec![Binding::new(
                "amq.topic",
                Destination::Queue("q".into()),
                "a.*",
            )],
            ..Topology::default()
        };
        assert!(t.validate().is_ok());
    }
}
