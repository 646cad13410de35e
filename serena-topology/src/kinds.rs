//! The kinds of exchanges and queues, and what each queue type supports (RabbitMQ 3.10's
//! answers, checked against the broker: a property a type does not support is a 406).

use std::fmt;

/// The type of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ExchangeKind {
    /// Routes on an exact routing-key match (the default).
    #[default]
    Direct,
    /// Routes to every binding.
    Fanout,
    /// Routes on dotted routing-key patterns with `*` and `#`.
    Topic,
    /// Routes on message headers (binding argument `x-match`).
    Headers,
    /// A plugin's type, e.g. `x-consistent-hash` or `x-delayed-message`. Validation accepts
    /// only names starting with `x-`.
    Custom(String),
}

impl ExchangeKind {
    /// The kind for `name`: one of the four built-in types, otherwise [`Custom`](Self::Custom).
    pub fn from_name(name: &str) -> ExchangeKind {
        match name {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => ExchangeKind::Custom(other.to_owned()),
        }
    }

    /// The name sent in `exchange.declare`.
    pub fn as_str(&self) -> &str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::Custom(s) => s,
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueType {
    /// The classic queue (the default).
    #[default]
    Classic,
    /// A replicated Raft queue: durable, never exclusive or auto-delete.
    Quorum,
    /// An append-only replicated log: durable, never exclusive or auto-delete.
    Stream,
}

impl QueueType {
    /// The value of `x-queue-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// The type named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<QueueType> {
        match name {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            "stream" => Some(QueueType::Stream),
            _ => None,
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a queue does when it is full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest messages: RabbitMQ's default.
    DropHead,
    /// Refuse new messages (publishers with confirms get a nack).
    RejectPublish,
    /// Refuse new messages and dead-letter them (classic queues only).
    RejectPublishDlx,
}

impl Overflow {
    /// The value of `x-overflow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }

    /// The behaviour named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Overflow> {
        match name {
            "drop-head" => Some(Overflow::DropHead),
            "reject-publish" => Some(Overflow::RejectPublish),
            "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
            _ => None,
        }
    }
}

impl QueueType {
    /// True when queues of this type take the property `key` (the topology file's key:
    /// `max_priority`, `delivery_limit`, ...).
    ///
    /// | key | classic | quorum | stream |
    /// |---|---|---|---|
    /// | `max_age` | no | no | yes |
    /// | `max_length_bytes` | yes | yes | yes |
    /// | `delivery_limit`, `initial_group_size` | no | yes | no |
    /// | `max_priority` | yes | no | no |
    /// | dead-lettering, `message_ttl`, `expires`, `max_length`, `overflow`, `single_active_consumer` | yes | yes | no |
    pub fn supports(self, key: &str) -> bool {
        match self {
            QueueType::Classic => {
                !matches!(key, "delivery_limit" | "initial_group_size" | "max_age")
            }
            QueueType::Quorum => !matches!(key, "max_age" | "max_priority"),
            QueueType::Stream => matches!(key, "max_age" | "max_length_bytes"),
        }
    }
}

/// True for RabbitMQ's interval form, digits then one unit of `Y`, `M`, `D`, `h`, `m`, `s`
/// (`7D`, `12h`, `1Y`): what `x-max-age` and a stream consumer's `x-stream-offset` take.
pub fn is_interval(s: &str) -> bool {
    let Some(unit) = s.chars().last() else {
        return false;
    };
    let digits = &s[..s.len() - unit.len_utf8()];
    matches!(unit, 'Y' | 'M' | 'D' | 'h' | 'm' | 's')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_needs_digits_and_a_unit() {
        for ok in ["7D", "1Y", "12h", "30m", "5s", "2M"] {
            assert!(is_interval(ok), "{ok}");
        }
        for bad in ["", "D", "7", "7d", "7 D", "-1D", "1.5h", "7DD", "é"] {
            assert!(!is_interval(bad), "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for t in [QueueType::Classic, QueueType::Quorum, QueueType::Stream] {
            assert_eq!(QueueType::from_name(t.as_str()), Some(t));
        }
        for o in [
            Overflow::DropHead,
            Overflow::RejectPublish,
            Overflow::RejectPublishDlx,
        ] {
            assert_eq!(Overflow::from_name(o.as_str()), Some(o));
        }
        for k in ["direct", "fanout", "topic", "headers", "x-consistent-hash"] {
            assert_eq!(ExchangeKind::from_name(k).to_string(), k);
        }
        assert!(QueueType::Stream.supports("max_age") && !QueueType::Classic.supports("max_age"));
        assert!(QueueType::Quorum.supports("initial_group_size"));
        assert!(!QueueType::Classic.supports("initial_group_size"));
        assert!(!QueueType::Stream.supports("initial_group_size"));
    }
}
