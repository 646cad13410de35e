//! Declares, bindings and consumers: exchanges and queues come, change and go.

use std::collections::VecDeque;

use serena_proto::method::{basic, exchange, queue};
use serena_proto::{FieldTable, FieldValue};

use super::{ChanConsumer, Core, Fail, code, not_found, precondition};
use crate::queue::{Binding, ConsumerRef, Destination, Exchange, Queue};
use crate::routing::Kind;

/// RabbitMQ's name for a field value's type in its "inequivalent arg" texts.
fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::LongString(_) => "longstr",
        FieldValue::I8(_) | FieldValue::I16(_) | FieldValue::I32(_) | FieldValue::U8(_) => {
            "signedint"
        }
        FieldValue::I64(_) | FieldValue::U64(_) | FieldValue::U32(_) | FieldValue::U16(_) => "long",
        FieldValue::Bool(_) => "bool",
        _ => "other",
    }
}

fn show(v: &FieldValue) -> String {
    match v {
        FieldValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        v => v
            .as_i64()
            .map_or_else(|| format!("{v:?}"), |n| n.to_string()),
    }
}

fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    a == b || matches!((a.as_i64(), b.as_i64()), (Some(x), Some(y)) if x == y)
}

/// The first `x-` argument that differs between a declare and what exists, RabbitMQ's way.
fn inequivalent_arg(
    received: &FieldTable,
    current: &FieldTable,
    what: &str,
    name: &str,
) -> Option<Fail> {
    let keys: Vec<&str> = received
        .iter()
        .chain(current.iter())
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("x-"))
        .collect();
    for key in keys {
        let text = match (received.get(key), current.get(key)) {
            (Some(r), Some(c)) if same_value(r, c) => continue,
            (None, None) => continue,
            (Some(r), Some(c)) => format!(
                "inequivalent arg '{key}' for {what} '{name}' in vhost '/': received '{}' but current is '{}'",
                show(r),
                show(c),
            ),
            (Some(r), None) => format!(
                "inequivalent arg '{key}' for {what} '{name}' in vhost '/': received the value '{}' of type '{}' but current is none",
                show(r),
                type_name(r)
            ),
            (None, Some(c)) => format!(
                "inequivalent arg '{key}' for {what} '{name}' in vhost '/': received none but current is the value '{}' of type '{}'",
                show(c),
                type_name(c)
            ),
        };
        return Some(precondition(text));
    }
    None
}

fn inequivalent_flag(flag: &str, what: &str, name: &str, received: bool, current: bool) -> Fail {
    precondition(format!(
        "inequivalent arg '{flag}' for {what} '{name}' in vhost '/': received '{received}' but current is '{current}'"
    ))
}

/// A name no other entity has: `prefix` and 22 characters from RabbitMQ's alphabet for
/// generated names. The last 11 spell `n` (unique per broker), the first 11 scramble it.
fn generated(prefix: &str, n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let digits = |mut x: u64| -> String {
        (0..11)
            .map(|_| {
                let c = ALPHABET[(x % 64) as usize] as char;
                x /= 64;
                c
            })
            .collect()
    };
    let scrambled = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    format!("{prefix}{}{}", digits(scrambled), digits(n))
}

impl Core {
    pub(super) fn exchange_declare(
        &mut self,
        id: u64,
        ch: u16,
        m: exchange::Declare,
    ) -> Result<(), Fail> {
        let name = m.exchange.as_str().to_owned();
        if m.passive {
            if !self.exchanges.contains_key(&name) {
                return Err(not_found("exchange", &name));
            }
            self.reply(id, ch, m.nowait, exchange::DeclareOk::default());
            return Ok(());
        }
        let Some(kind) = Kind::parse(m.kind.as_str()) else {
            return Err(Fail::Connection(
                code::COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unknown exchange type '{}'",
                    m.kind.as_str()
                ),
            ));
        };
        if name.starts_with("amq.") && !self.exchanges.contains_key(&name) {
            return Err(Fail::Channel(
                code::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        match self.exchanges.get(&name) {
            Some(x) => {
                if x.kind != kind {
                    return Err(precondition(format!(
                        "inequivalent arg 'type' for exchange '{name}' in vhost '/': received '{}' but current is '{}'",
                        kind.name(),
                        x.kind.name()
                    )));
                }
                if x.durable != m.durable {
                    return Err(inequivalent_flag(
                        "durable", "exchange", &name, m.durable, x.durable,
                    ));
                }
                if x.auto_delete != m.auto_delete {
                    return Err(inequivalent_flag(
                        "auto_delete",
                        "exchange",
                        &name,
                        m.auto_delete,
                        x.auto_delete,
                    ));
                }
                if x.internal != m.internal {
                    return Err(inequivalent_flag(
                        "internal", "exchange", &name, m.internal, x.internal,
                    ));
                }
                if let Some(fail) = inequivalent_arg(&m.arguments, &x.arguments, "exchange", &name)
                {
                    return Err(fail);
                }
            }
            None => {
                self.exchanges.insert(
                    name,
                    Exchange {
                        kind,
                        durable: m.durable,
                        auto_delete: m.auto_delete,
                        internal: m.internal,
                        arguments: m.arguments,
                        bindings: Vec::new(),
                    },
                );
            }
        }
        self.reply(id, ch, m.nowait, exchange::DeclareOk::default());
        Ok(())
    }

    /// A queue `id` may use: it exists and is not another connection's exclusive queue.
    pub(super) fn check_queue_access(&self, id: u64, name: &str) -> Result<(), Fail> {
        let Some(q) = self.queues.get(name) else {
            return Err(not_found("queue", name));
        };
        match q.owner {
            Some(owner) if owner != id => Err(Fail::Channel(
                code::RESOURCE_LOCKED,
                format!(
                    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn queue_declare(
        &mut self,
        id: u64,
        ch: u16,
        m: queue::Declare,
    ) -> Result<(), Fail> {
        let mut name = m.queue.as_str().to_owned();
        if m.passive {
            self.check_queue_access(id, &name)?;
        } else if name.is_empty() {
            let n = self.fresh_id();
            name = generated("amq.gen-", n);
        } else if name.starts_with("amq.") {
            return Err(Fail::Channel(
                code::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        if !m.passive {
            match self.queues.get(&name) {
                Some(_) => {
                    self.check_queue_access(id, &name)?;
                    let q = &self.queues[&name];
                    if !m.exclusive && q.owner.is_none() && q.durable != m.durable {
                        return Err(inequivalent_flag(
                            "durable", "queue", &name, m.durable, q.durable,
                        ));
                    }
                    if q.auto_delete != m.auto_delete {
                        return Err(inequivalent_flag(
                            "auto_delete",
                            "queue",
                            &name,
                            m.auto_delete,
                            q.auto_delete,
                        ));
                    }
                    if let Some(fail) = inequivalent_arg(&m.arguments, &q.arguments, "queue", &name)
                    {
                        return Err(fail);
                    }
                }
                None => {
                    self.queues.insert(
                        name.clone(),
                        Queue {
                            durable: m.durable && !m.exclusive,
                            owner: m.exclusive.then_some(id),
                            auto_delete: m.auto_delete,
                            arguments: m.arguments,
                            messages: VecDeque::new(),
                            consumers: Vec::new(),
                            next_consumer: 0,
                            next_seq: 0,
                            last_used: self.millis,
                        },
                    );
                }
            }
        }
        let q = self.queues.get_mut(&name).expect("declared or checked");
        q.last_used = self.millis;
        let ok = queue::DeclareOk {
            queue: name.as_str().into(),
            message_count: u32::try_from(q.messages.len()).unwrap_or(u32::MAX),
            consumer_count: u32::try_from(q.consumers.len()).unwrap_or(u32::MAX),
        };
        self.reply(id, ch, m.nowait, ok);
        Ok(())
    }

    fn check_destination(&self, destination: &Destination) -> Result<(), Fail> {
        match destination {
            Destination::Queue(q) if !self.queues.contains_key(q) => Err(not_found("queue", q)),
            Destination::Exchange(x) if !self.exchanges.contains_key(x) => {
                Err(not_found("exchange", x))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn bind(
        &mut self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: FieldTable,
    ) -> Result<(), Fail> {
        if source.is_empty() {
            return Err(Fail::Channel(
                code::ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange".to_owned(),
            ));
        }
        self.check_destination(&destination)?;
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found("exchange", source));
        };
        let binding = Binding {
            destination,
            key: key.to_owned(),
            arguments,
        };
        if !x.bindings.contains(&binding) {
            x.bindings.push(binding);
        }
        Ok(())
    }

    pub(super) fn unbind(
        &mut self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: &FieldTable,
    ) -> Result<(), Fail> {
        self.check_destination(&destination)?;
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found("exchange", source));
        };
        x.bindings.retain(|b| {
            !(b.destination == destination && b.key == key && b.arguments == *arguments)
        });
        if x.auto_delete && x.bindings.is_empty() {
            self.delete_exchange(source);
        }
        Ok(())
    }

    pub(super) fn consume(&mut self, id: u64, ch: u16, m: basic::Consume) -> Result<(), Fail> {
        let queue = m.queue.as_str().to_owned();
        self.check_queue_access(id, &queue)?;
        if m.arguments.contains_key("x-stream-offset") {
            return Err(Fail::Channel(
                code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - stream offsets are not supported by the in-memory broker"
                    .to_owned(),
            ));
        }
        let mut tag = m.consumer_tag.as_str().to_owned();
        if tag.is_empty() {
            let n = self.fresh_id();
            tag = generated("amq.ctag-", n);
        }
        let q = &self.queues[&queue];
        if q.consumers.iter().any(|c| c.exclusive) || (m.exclusive && !q.consumers.is_empty()) {
            return Err(Fail::Channel(
                code::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"),
            ));
        }
        let chan = self.chan(id, ch);
        if chan.consumers.contains_key(&tag) {
            return Err(Fail::Connection(
                code::NOT_ALLOWED,
                format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let prefetch = chan.prefetch;
        chan.consumers.insert(
            tag.clone(),
            ChanConsumer {
                queue: queue.clone(),
                no_ack: m.no_ack,
                prefetch,
                inflight: 0,
            },
        );
        let q = self.queues.get_mut(&queue).expect("checked");
        q.last_used = self.millis;
        q.consumers.push(ConsumerRef {
            conn: id,
            channel: ch,
            tag: tag.clone(),
            exclusive: m.exclusive,
        });
        self.reply(
            id,
            ch,
            m.nowait,
            basic::ConsumeOk {
                consumer_tag: tag.as_str().into(),
            },
        );
        Ok(())
    }
}
