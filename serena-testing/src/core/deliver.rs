//! Routing, delivery, settlement, expiry and dead-lettering: where messages go.

use std::collections::HashSet;

use bytes::Bytes;
use serena_proto::method::basic;
use serena_proto::{BasicProperties, FieldTable, FieldValue, LongString, Method};

use super::{Core, Fail, Unacked, code, not_found, precondition, send, send_content};
use crate::queue::{Destination, Message, Queue};

/// A message as a queue holds it, for inspection.
#[derive(Debug, Clone)]
pub(crate) struct QueuedView {
    pub(crate) properties: BasicProperties,
    pub(crate) body: Bytes,
    pub(crate) redelivered: bool,
    pub(crate) routing_key: String,
}

/// Why a message is dead-lettered, as `x-death`'s `reason` says it.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Rejected,
    Expired,
    Maxlen,
    DeliveryLimit,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

impl Core {
    /// The queues a message published to `exchange` with `routing_key` reaches, through
    /// exchange-to-exchange bindings and alternate exchanges.
    fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<String> {
        let mut queues = Vec::new();
        if exchange.is_empty() {
            if self.queues.contains_key(routing_key) {
                queues.push(routing_key.to_owned());
            }
            return queues;
        }
        let mut seen = HashSet::new();
        self.route_into(exchange, routing_key, headers, &mut seen, &mut queues);
        queues
    }

    fn route_into(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        seen: &mut HashSet<String>,
        queues: &mut Vec<String>,
    ) {
        if !seen.insert(exchange.to_owned()) {
            return;
        }
        let Some(x) = self.exchanges.get(exchange) else {
            return;
        };
        let before = queues.len();
        for b in &x.bindings {
            if !x.kind.matches(&b.key, &b.arguments, routing_key, headers) {
                continue;
            }
            match &b.destination {
                Destination::Queue(q) => {
                    if !queues.contains(q) {
                        queues.push(q.clone());
                    }
                }
                Destination::Exchange(e) => self.route_into(e, routing_key, headers, seen, queues),
            }
        }
        if queues.len() == before
            && let Some(ae) = x
                .arguments
                .get("alternate-exchange")
                .and_then(FieldValue::as_str)
        {
            self.route_into(ae, routing_key, headers, seen, queues);
        }
    }

    pub(super) fn publish(
        &mut self,
        id: u64,
        ch: u16,
        m: basic::Publish,
        properties: BasicProperties,
        body: Bytes,
        now: u64,
    ) -> Result<(), Fail> {
        let exchange = m.exchange.as_str().to_owned();
        if m.immediate {
            return Err(Fail::Connection(
                code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - immediate=true".to_owned(),
            ));
        }
        if !exchange.is_empty() {
            match self.exchanges.get(&exchange) {
                None => return Err(not_found("exchange", &exchange)),
                Some(x) if x.internal => {
                    return Err(Fail::Channel(
                        code::ACCESS_REFUSED,
                        format!(
                            "ACCESS_REFUSED - cannot publish to internal exchange '{exchange}' in vhost '/'"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        self.stats.published += 1;
        let routing_key = m.routing_key.as_str().to_owned();
        let queues = self.route(&exchange, &routing_key, properties.headers.as_ref());
        let message = Message {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            properties,
            body,
            redelivered: false,
            seq: 0,
            expires_at: None,
        };
        let conn = self.conns.get_mut(&id).expect("connection");
        if queues.is_empty() && m.mandatory {
            self.stats.returned += 1;
            let ret = basic::Return {
                reply_code: code::NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.as_str().into(),
                routing_key: routing_key.as_str().into(),
            };
            send_content(conn, ch, ret.into(), &message.properties, &message.body);
        }
        let mut refused = false;
        for q in &queues {
            refused |= !self.enqueue(q, message.clone(), now);
        }
        let chan = self.chan(id, ch);
        if chan.confirm {
            let delivery_tag = chan.next_seq;
            chan.next_seq += 1;
            let conn = self.conns.get_mut(&id).expect("connection");
            if refused {
                self.stats.confirms_nacked += 1;
                send(
                    conn,
                    ch,
                    basic::Nack {
                        delivery_tag,
                        multiple: false,
                        requeue: false,
                    },
                );
            } else {
                self.stats.confirms_acked += 1;
                send(
                    conn,
                    ch,
                    basic::Ack {
                        delivery_tag,
                        multiple: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Puts a message in a queue, applying its length limits; false when the queue refused it
    /// (`reject-publish`, `reject-publish-dlx`).
    fn enqueue(&mut self, name: &str, mut message: Message, now: u64) -> bool {
        let Some(q) = self.queues.get_mut(name) else {
            return true;
        };
        let queue_ttl = q
            .argument_int("x-message-ttl")
            .and_then(|t| u64::try_from(t).ok());
        let own_ttl = message
            .properties
            .expiration
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok());
        message.expires_at = match (queue_ttl, own_ttl) {
            (Some(a), Some(b)) => Some(self.millis + a.min(b)),
            (Some(t), None) | (None, Some(t)) => Some(self.millis + t),
            (None, None) => None,
        };
        let max_len = q.argument_int("x-max-length");
        let max_bytes = q.argument_int("x-max-length-bytes");
        let over = |q: &Queue, extra: usize, extra_bytes: usize| {
            max_len.is_some_and(|max| (q.messages.len() + extra) as i64 > max)
                || max_bytes.is_some_and(|max| (q.bytes() + extra_bytes) as i64 > max)
        };
        if over(q, 1, message.body.len()) {
            match q.argument_str("x-overflow").unwrap_or("drop-head") {
                "reject-publish" => return false,
                "reject-publish-dlx" => {
                    self.dead_letter(name, message, Reason::Maxlen, now);
                    return false;
                }
                _ => {
                    let q = self.queues.get_mut(name).expect("queue");
                    q.push(message);
                    let mut dropped = Vec::new();
                    while !q.messages.is_empty() && over(q, 0, 0) {
                        dropped.extend(q.messages.pop_front());
                    }
                    for d in dropped {
                        self.dead_letter(name, d, Reason::Maxlen, now);
                    }
                    return true;
                }
            }
        }
        q.push(message);
        true
    }

    pub(super) fn get(&mut self, id: u64, ch: u16, m: basic::Get) -> Result<(), Fail> {
        let name = m.queue.as_str().to_owned();
        self.check_queue_access(id, &name)?;
        let q = self.queues.get_mut(&name).expect("checked");
        q.last_used = self.millis;
        let Some(message) = q.messages.pop_front() else {
            self.reply(id, ch, false, basic::GetEmpty::default());
            return Ok(());
        };
        let message_count = u32::try_from(q.messages.len()).unwrap_or(u32::MAX);
        let chan = self.chan(id, ch);
        let delivery_tag = chan.next_tag;
        chan.next_tag += 1;
        let ok = basic::GetOk {
            delivery_tag,
            redelivered: message.redelivered,
            exchange: message.exchange.as_str().into(),
            routing_key: message.routing_key.as_str().into(),
            message_count,
        };
        let conn = self.conns.get_mut(&id).expect("connection");
        send_content(conn, ch, ok.into(), &message.properties, &message.body);
        if !m.no_ack {
            self.chan(id, ch).unacked.insert(
                delivery_tag,
                Unacked {
                    queue: name,
                    consumer: None,
                    message,
                },
            );
        }
        Ok(())
    }

    /// Takes the deliveries an ack, nack or reject settles; an unknown tag is 406.
    pub(super) fn take_unacked(
        &mut self,
        id: u64,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<Unacked>, Fail> {
        let chan = self.chan(id, ch);
        let tags: Vec<u64> = if multiple {
            chan.unacked
                .range(..=if tag == 0 { u64::MAX } else { tag })
                .map(|(t, _)| *t)
                .collect()
        } else if chan.unacked.contains_key(&tag) {
            vec![tag]
        } else {
            Vec::new()
        };
        if tags.is_empty() && (!multiple || tag != 0) {
            return Err(precondition(format!("unknown delivery tag {tag}")));
        }
        let mut taken = Vec::with_capacity(tags.len());
        for t in tags {
            let u = chan.unacked.remove(&t).expect("listed");
            if let Some(c) = u.consumer.as_ref().and_then(|c| chan.consumers.get_mut(c)) {
                c.inflight = c.inflight.saturating_sub(1);
            }
            taken.push(u);
        }
        Ok(taken)
    }

    /// Nack and reject: back to the queue (quorum queues count the delivery and dead-letter
    /// past `x-delivery-limit`) or dead-lettered as `rejected`.
    pub(super) fn settle_negative(&mut self, taken: Vec<Unacked>, requeue: bool, now: u64) {
        for u in taken.into_iter().rev() {
            if !requeue {
                self.dead_letter(&u.queue, u.message, Reason::Rejected, now);
                continue;
            }
            let Some(q) = self.queues.get(&u.queue) else {
                continue;
            };
            let mut message = u.message;
            if q.is_quorum() {
                let limit = q.argument_int("x-delivery-limit");
                let headers = message
                    .properties
                    .headers
                    .get_or_insert_with(FieldTable::new);
                let count = headers
                    .get("x-delivery-count")
                    .and_then(FieldValue::as_i64)
                    .unwrap_or(0)
                    + 1;
                headers.insert("x-delivery-count", count);
                if limit.is_some_and(|limit| count > limit) {
                    self.dead_letter(&u.queue, message, Reason::DeliveryLimit, now);
                    continue;
                }
            }
            self.requeue(&u.queue, message);
        }
    }

    /// Republishes a message that leaves `queue` to the queue's dead-letter exchange with an
    /// `x-death` entry; dropped when the queue has none.
    fn dead_letter(&mut self, queue: &str, mut message: Message, reason: Reason, now: u64) {
        let Some(q) = self.queues.get(queue) else {
            return;
        };
        let Some(dlx) = q.argument_str("x-dead-letter-exchange").map(str::to_owned) else {
            return;
        };
        let dl_key = q
            .argument_str("x-dead-letter-routing-key")
            .map(str::to_owned);
        self.stats.dead_lettered += 1;
        let headers = message
            .properties
            .headers
            .get_or_insert_with(FieldTable::new);
        // RabbitMQ does not carry a quorum queue's delivery count to the dead-letter target.
        headers.remove("x-delivery-count");
        let mut deaths: Vec<FieldValue> = match headers.remove("x-death") {
            Some(FieldValue::Array(a)) => a,
            _ => Vec::new(),
        };
        let existing = deaths.iter().position(|d| {
            d.as_table().is_some_and(|t| {
                t.get("queue").and_then(FieldValue::as_str) == Some(queue)
                    && t.get("reason").and_then(FieldValue::as_str) == Some(reason.as_str())
            })
        });
        let mut routing_keys = vec![FieldValue::LongString(LongString::from(
            message.routing_key.as_str(),
        ))];
        if let Some(FieldValue::Array(cc)) = headers.get("CC") {
            routing_keys.extend(cc.iter().cloned());
        }
        // RabbitMQ takes a message's own TTL off when it dead-letters it.
        let expiration = message.properties.expiration.take();
        let entry = match existing {
            Some(i) => {
                let FieldValue::Table(mut t) = deaths.remove(i) else {
                    unreachable!("matched as a table")
                };
                let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0) + 1;
                t.insert("count", count);
                t.insert("time", FieldValue::Timestamp(now));
                t
            }
            None => {
                let mut t = FieldTable::new()
                    .with("count", 1i64)
                    .with("reason", reason.as_str())
                    .with("queue", queue)
                    .with("time", FieldValue::Timestamp(now))
                    .with("exchange", message.exchange.as_str())
                    .with("routing-keys", FieldValue::Array(routing_keys));
                if let Some(exp) = expiration {
                    t.insert("original-expiration", exp.as_str());
                }
                t
            }
        };
        deaths.insert(0, FieldValue::Table(entry));
        headers.insert("x-death", FieldValue::Array(deaths));
        if !headers.contains_key("x-first-death-reason") {
            headers.insert("x-first-death-reason", reason.as_str());
            headers.insert("x-first-death-queue", queue);
            headers.insert("x-first-death-exchange", message.exchange.as_str());
        }
        let routing_key = dl_key.unwrap_or_else(|| message.routing_key.clone());
        let targets = self.route(&dlx, &routing_key, message.properties.headers.as_ref());
        message.exchange = dlx;
        message.routing_key = routing_key;
        message.redelivered = false;
        for t in targets {
            // A dead-lettered message that a full queue refuses is dropped, as RabbitMQ does
            // without publisher confirms on the dead-letter path.
            let _ = self.enqueue(&t, message.clone(), now);
        }
    }

    /// Takes expired messages off the heads of the queues and dead-letters them.
    pub(super) fn expire(&mut self, now: u64) {
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.messages
                    .front()
                    .is_some_and(|m| m.expires_at.is_some_and(|t| t <= self.millis))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            while let Some(q) = self.queues.get_mut(&name) {
                let due = q
                    .messages
                    .front()
                    .is_some_and(|m| m.expires_at.is_some_and(|t| t <= self.millis));
                if !due {
                    break;
                }
                let message = q.messages.pop_front().expect("a head");
                self.dead_letter(&name, message, Reason::Expired, now);
            }
        }
    }

    /// Hands waiting messages to consumers with room in their prefetch window, round robin.
    pub(crate) fn dispatch(&mut self) {
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.messages.is_empty() && !q.consumers.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            while let Some(q) = self.queues.get(&name) {
                if q.messages.is_empty() || q.consumers.is_empty() {
                    break;
                }
                let n = q.consumers.len();
                let start = q.next_consumer % n;
                let pick = (0..n).map(|i| (start + i) % n).find(|&i| {
                    let c = &q.consumers[i];
                    self.conns
                        .get(&c.conn)
                        .and_then(|conn| conn.channels.get(&c.channel))
                        .is_some_and(|chan| {
                            !chan.closing
                                && chan.consumers.get(&c.tag).is_some_and(|cc| {
                                    cc.no_ack
                                        || ((cc.prefetch == 0
                                            || cc.inflight < u32::from(cc.prefetch))
                                            && (chan.global_prefetch == 0
                                                || chan.unacked.len()
                                                    < usize::from(chan.global_prefetch)))
                                })
                        })
                });
                let Some(i) = pick else {
                    break;
                };
                let q = self.queues.get_mut(&name).expect("queue");
                q.next_consumer = i + 1;
                let c = q.consumers[i].clone();
                let message = q.messages.pop_front().expect("non-empty");
                let conn = self.conns.get_mut(&c.conn).expect("connection");
                let chan = conn.channels.get_mut(&c.channel).expect("channel");
                let delivery_tag = chan.next_tag;
                chan.next_tag += 1;
                let cc = chan.consumers.get_mut(&c.tag).expect("consumer");
                let no_ack = cc.no_ack;
                if !no_ack {
                    cc.inflight += 1;
                }
                let deliver = basic::Deliver {
                    consumer_tag: c.tag.as_str().into(),
                    delivery_tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.as_str().into(),
                    routing_key: message.routing_key.as_str().into(),
                };
                if !no_ack {
                    chan.unacked.insert(
                        delivery_tag,
                        Unacked {
                            queue: name.clone(),
                            consumer: Some(c.tag.clone()),
                            message: message.clone(),
                        },
                    );
                }
                send_content(
                    conn,
                    c.channel,
                    Method::from(deliver),
                    &message.properties,
                    &message.body,
                );
            }
        }
    }

    /// What queue `name` holds, head first; `None` when there is no such queue.
    pub(crate) fn queued(&self, name: &str) -> Option<Vec<QueuedView>> {
        let q = self.queues.get(name)?;
        Some(
            q.messages
                .iter()
                .map(|m| QueuedView {
                    properties: m.properties.clone(),
                    body: m.body.clone(),
                    redelivered: m.redelivered,
                    routing_key: m.routing_key.clone(),
                })
                .collect(),
        )
    }

    /// Declares a queue directly, as a `from_topology` or a test would (no connection).
    pub(crate) fn queue_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.queues.keys().cloned().collect();
        names.sort();
        names
    }
}
