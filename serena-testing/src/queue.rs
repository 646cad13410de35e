//! Queues, exchanges and the messages they hold: the broker's model, without connections.

use std::collections::VecDeque;

use bytes::Bytes;
use serena_proto::{BasicProperties, FieldTable, FieldValue};

use crate::routing::Kind;

/// A message as the broker keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Bytes,
    pub(crate) redelivered: bool,
    /// Order of arrival in its queue: a requeued message goes back to its place.
    pub(crate) seq: u64,
    /// When it expires (monotonic milliseconds), by the queue's or its own TTL.
    pub(crate) expires_at: Option<u64>,
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Binding {
    pub(crate) destination: Destination,
    pub(crate) key: String,
    pub(crate) arguments: FieldTable,
}

#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) kind: Kind,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) internal: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) bindings: Vec<Binding>,
}

/// A consumer attached to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerRef {
    pub(crate) conn: u64,
    pub(crate) channel: u16,
    pub(crate) tag: String,
    /// Consumes with `exclusive`: no other consumer may join.
    pub(crate) exclusive: bool,
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) durable: bool,
    /// The connection that owns an exclusive queue.
    pub(crate) owner: Option<u64>,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) messages: VecDeque<Message>,
    pub(crate) consumers: Vec<ConsumerRef>,
    /// Where the round robin over consumers goes on.
    pub(crate) next_consumer: usize,
    /// The next message's `seq`.
    pub(crate) next_seq: u64,
    /// When it was last used (declared, consumed from, got from, a consumer left), in
    /// monotonic milliseconds: `x-expires` counts from here while it has no consumers.
    pub(crate) last_used: u64,
}

impl Queue {
    pub(crate) fn argument_str(&self, key: &str) -> Option<&str> {
        self.arguments.get(key).and_then(FieldValue::as_str)
    }

    pub(crate) fn argument_int(&self, key: &str) -> Option<i64> {
        self.arguments.get(key).and_then(FieldValue::as_i64)
    }

    pub(crate) fn is_quorum(&self) -> bool {
        self.argument_str("x-queue-type") == Some("quorum")
    }

    /// When the queue expires by `x-expires` (monotonic milliseconds), if it is unused.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        let ttl = self
            .argument_int("x-expires")
            .and_then(|t| u64::try_from(t).ok())?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(ttl))
    }

    pub(crate) fn bytes(&self) -> usize {
        self.messages.iter().map(|m| m.body.len()).sum()
    }

    /// Puts a message in by its priority (`x-max-priority` queues), FIFO otherwise.
    pub(crate) fn push(&mut self, mut message: Message) {
        message.seq = self.next_seq;
        self.next_seq += 1;
        match self.argument_int("x-max-priority") {
            Some(max) => {
                let p = priority(&message, max);
                let at = self
                    .messages
                    .iter()
                    .position(|m| priority(m, max) < p)
                    .unwrap_or(self.messages.len());
                self.messages.insert(at, message);
            }
            None => self.messages.push_back(message),
        }
    }
}

fn priority(m: &Message, max: i64) -> i64 {
    i64::from(m.properties.priority.unwrap_or(0)).min(max)
}
