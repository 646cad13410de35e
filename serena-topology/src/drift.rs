//! What differs between a topology and what a broker has: `serena topology diff`.

use std::fmt;

use serde_json::Value;
use serena_proto::FieldTable;

use super::definitions::field_to_json;
use super::error::{Entity, EntityName};
use super::model::{Binding, Exchange, Queue, STANDARD_EXCHANGES, Topology};

/// How an entity differs from the broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftKind {
    /// In the topology, not on the broker.
    Missing,
    /// On both, with these differences (one line each: `durable: the topology has true, the
    /// broker has false`).
    Differs(Vec<String>),
    /// On the broker, not in the topology.
    Extra,
}

/// One entity that is not as the topology says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The exchange, queue or binding.
    pub entity: Entity,
    /// What is wrong with it.
    pub kind: DriftKind,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DriftKind::Missing => write!(f, "{}: MISSING", self.entity),
            DriftKind::Differs(lines) => {
                write!(f, "{}: DIFFERS: {}", self.entity, lines.join("; "))
            }
            DriftKind::Extra => write!(
                f,
                "{}: EXTRA (on the broker, not in the topology)",
                self.entity
            ),
        }
    }
}

impl Topology {
    /// Compares this topology with `broker`'s (read with [`Topology::from_definitions`]):
    /// each exchange, each queue apply declares (retry queues included; exclusive ones are
    /// skipped, a broker never lists them) and each binding that is missing or differs (type,
    /// durable, auto-delete, internal, every argument; a binding by source, destination, key
    /// and arguments), then what the broker has beyond it. An entity with `declare = false`
    /// only has to exist. With `prefix`, only names starting with it count (a binding when its
    /// source or destination does). Empty: no drift.
    pub fn drift(&self, broker: &Topology, prefix: Option<&str>) -> Vec<Drift> {
        let wanted = |name: &str| prefix.is_none_or(|p| name.starts_with(p));
        let mut drift = Vec::new();
        let mut push = |entity: Entity, kind: DriftKind| drift.push(Drift { entity, kind });
        let exchanges: Vec<&Exchange> = self.exchanges.iter().filter(|x| wanted(&x.name)).collect();
        for x in &exchanges {
            let entity = Entity::Exchange(EntityName::Named(x.name.clone()));
            match broker.exchanges.iter().find(|b| b.name == x.name) {
                None => push(entity, DriftKind::Missing),
                Some(_) if !x.declare => {}
                Some(b) => {
                    let lines = exchange_differences(x, b);
                    if !lines.is_empty() {
                        push(entity, DriftKind::Differs(lines));
                    }
                }
            }
        }
        let plan = self.queue_plan();
        let queues: Vec<&Queue> = plan
            .iter()
            .map(|(_, q)| &**q)
            .filter(|q| wanted(&q.name) && !q.exclusive)
            .collect();
        for q in &queues {
            let entity = Entity::Queue(EntityName::Named(q.name.clone()));
            match broker.queues.iter().find(|b| b.name == q.name) {
                None => push(entity, DriftKind::Missing),
                Some(_) if !q.declare => {}
                Some(b) => {
                    let lines = queue_differences(q, b);
                    if !lines.is_empty() {
                        push(entity, DriftKind::Differs(lines));
                    }
                }
            }
        }
        let bound = |b: &&Binding| wanted(&b.source) || wanted(b.destination.name());
        let mut theirs: Vec<&Binding> = broker.bindings.iter().filter(bound).collect();
        let ours: Vec<&Binding> = self.bindings.iter().filter(bound).collect();
        // Exact matches first, so that a changed binding pairs with the one left over.
        let mut unmatched = Vec::new();
        for b in ours {
            match theirs
                .iter()
                .position(|t| same_binding(b, t) && same_args(&b.arguments, &t.arguments))
            {
                Some(i) => {
                    theirs.remove(i);
                }
                None => unmatched.push(b),
            }
        }
        for (i, b) in unmatched.into_iter().enumerate() {
            let entity = b.entity(i);
            match theirs.iter().position(|t| same_binding(b, t)) {
                Some(j) => {
                    let t = theirs.remove(j);
                    push(
                        entity,
                        DriftKind::Differs(table_differences(&b.arguments, &t.arguments)),
                    );
                }
                None => push(entity, DriftKind::Missing),
            }
        }
        for x in &broker.exchanges {
            if wanted(&x.name)
                && !STANDARD_EXCHANGES.contains(&x.name.as_str())
                && !self.exchanges.iter().any(|o| o.name == x.name)
            {
                push(x.entity(0), DriftKind::Extra);
            }
        }
        for q in &broker.queues {
            if wanted(&q.name) && !plan.iter().any(|(_, o)| o.name == q.name) {
                push(q.entity(0), DriftKind::Extra);
            }
        }
        for (i, t) in theirs.into_iter().enumerate() {
            push(t.entity(i), DriftKind::Extra);
        }
        drift
    }
}

fn same_binding(a: &Binding, b: &Binding) -> bool {
    a.source == b.source && a.destination == b.destination && a.routing_key == b.routing_key
}

fn same_args(a: &FieldTable, b: &FieldTable) -> bool {
    table_differences(a, b).is_empty()
}

fn flag_line(name: &str, ours: impl fmt::Display, theirs: impl fmt::Display) -> String {
    format!("{name}: the topology has {ours}, the broker has {theirs}")
}

fn exchange_differences(x: &Exchange, b: &Exchange) -> Vec<String> {
    let mut lines = Vec::new();
    if x.kind != b.kind {
        lines.push(flag_line("type", &x.kind, &b.kind));
    }
    for (name, ours, theirs) in [
        ("durable", x.durable, b.durable),
        ("auto_delete", x.auto_delete, b.auto_delete),
        ("internal", x.internal, b.internal),
    ] {
        if ours != theirs {
            lines.push(flag_line(name, ours, theirs));
        }
    }
    lines.extend(table_differences(
        &x.declare_arguments(),
        &b.declare_arguments(),
    ));
    lines
}

fn queue_differences(q: &Queue, b: &Queue) -> Vec<String> {
    let mut lines = Vec::new();
    if q.kind != b.kind {
        lines.push(flag_line("type", q.kind, b.kind));
    }
    for (name, ours, theirs) in [
        ("durable", q.durable, b.durable),
        ("auto_delete", q.auto_delete, b.auto_delete),
    ] {
        if ours != theirs {
            lines.push(flag_line(name, ours, theirs));
        }
    }
    let without_type = |q: &Queue| {
        let mut args = q.declare_arguments();
        args.remove("x-queue-type");
        args
    };
    lines.extend(table_differences(&without_type(q), &without_type(b)));
    lines
}

/// One line per argument that differs, is only in ours, or only in theirs (compared as the
/// management API shows them: `1000` is `1000` whatever its AMQP integer type).
fn table_differences(ours: &FieldTable, theirs: &FieldTable) -> Vec<String> {
    let shown = |v: Option<Value>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let mut lines = Vec::new();
    for (k, v) in ours.iter() {
        let (a, b) = (field_to_json(v), theirs.get(k).map(field_to_json));
        if b.as_ref() != Some(&a) {
            lines.push(flag_line(&format!("argument {k}"), a, shown(b)));
        }
    }
    for (k, v) in theirs.iter() {
        if !ours.contains_key(k) {
            lines.push(flag_line(
                &format!("argument {k}"),
                "none",
                field_to_json(v),
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExchangeKind, QueueType};

    fn example() -> Topology {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
                .unwrap();
        Topology::from_toml(&text, "topology.toml").unwrap()
    }

    #[test]
    fn the_same_definitions_have_no_drift() {
        let t = example();
        let broker = Topology::from_definitions(&t.to_definitions("/"), "/", None).unwrap();
        assert_eq!(t.drift(&broker, None), []);
    }

    #[test]
    fn each_kind_of_drift_is_found() {
        let t = example();
        let mut broker = Topology::from_definitions(&t.to_definitions("/"), "/", None).unwrap();
        // A changed queue argument, a changed binding argument, a missing binding, an extra
        // queue, a changed exchange type.
        broker
            .queues
            .iter_mut()
            .find(|q| q.name == "orders.parking")
            .unwrap()
            .message_ttl = Some(1);
        let headers = broker
            .bindings
            .iter_mut()
            .find(|b| b.source == "orders.by-header")
            .unwrap();
        headers.arguments.insert("x-match", "all");
        broker.bindings.retain(|b| b.source != "orders.unrouted");
        broker.queues.push(Queue::new("orders.stray"));
        broker.exchanges[1].kind = ExchangeKind::Direct;
        broker.queues.retain(|q| q.name != "orders.work.retry.10s");
        let drift: Vec<String> = t
            .drift(&broker, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            drift,
            [
                "exchange \"orders.unrouted\": DIFFERS: type: the topology has fanout, the broker has direct",
                "queue \"orders.work.retry.10s\": MISSING",
                "queue \"orders.parking\": DIFFERS: argument x-message-ttl: the topology has 1209600000, the broker has 1",
                "binding \"orders.by-header\" -> queue \"orders.urgent\": DIFFERS: argument x-match: the topology has \"any\", the broker has \"all\"",
                "binding \"orders.unrouted\" -> queue \"orders.unrouted\": MISSING",
                "queue \"orders.stray\": EXTRA (on the broker, not in the topology)",
            ]
        );
        // A prefix narrows both sides.
        let audit: Vec<Drift> = t.drift(&broker, Some("audit"));
        assert_eq!(audit, []);
        let stray = t.drift(&broker, Some("orders.stray"));
        assert_eq!(stray.len(), 1);
        assert_eq!(stray[0].kind, DriftKind::Extra);
    }

    #[test]
    fn expected_only_entities_need_only_exist() {
        let mut t = Topology {
            queues: vec![Queue {
                declare: false,
                kind: QueueType::Quorum,
                ..Queue::new("theirs")
            }],
            ..Topology::default()
        };
        let broker = Topology {
            queues: vec![Queue::new("theirs")],
            ..Topology::default()
        };
        assert_eq!(t.drift(&broker, None), []);
        t.queues[0].declare = true;
        assert_eq!(
            t.drift(&broker, None)[0].to_string(),
            "queue \"theirs\": DIFFERS: type: the topology has quorum, the broker has classic"
        );
        assert_eq!(
            t.drift(&Topology::default(), None)[0].kind,
            DriftKind::Missing
        );
    }
}
