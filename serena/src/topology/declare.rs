//! How a topology entity becomes the options of the declaration that creates it:
//! `ExchangeDeclareOptions::from(&exchange)`, `QueueDeclareOptions::from(&queue)`. Set
//! `passive` on the result to check instead of create.

use serena_topology::{Exchange, Queue};

use crate::client::{ExchangeDeclareOptions, QueueDeclareOptions};

impl From<&Exchange> for ExchangeDeclareOptions {
    /// The options of the `exchange.declare` that creates `x` (its type is the declare's
    /// own argument: `x.kind.as_str()`).
    fn from(x: &Exchange) -> Self {
        ExchangeDeclareOptions {
            passive: false,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.declare_arguments(),
        }
    }
}

impl From<&Queue> for QueueDeclareOptions {
    /// The options of the `queue.declare` that creates `q`.
    fn from(q: &Queue) -> Self {
        QueueDeclareOptions {
            passive: false,
            durable: q.durable,
            exclusive: q.exclusive,
            auto_delete: q.auto_delete,
            arguments: q.declare_arguments(),
        }
    }
}

/// The options that create `x`, or with `passive` only check it.
pub(super) fn exchange_options(x: &Exchange, passive: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive,
        ..ExchangeDeclareOptions::from(x)
    }
}

/// The options that create `q`, or with `passive` only check it.
pub(super) fn queue_options(q: &Queue, passive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive,
        ..QueueDeclareOptions::from(q)
    }
}

#[cfg(test)]
mod tests {
    use serena_topology::{ExchangeKind, QueueType};

    use super::*;
    use crate::proto::FieldValue;

    #[test]
    fn options_follow_the_entity() {
        let q = Queue {
            kind: QueueType::Quorum,
            delivery_limit: Some(5),
            ..Queue::new("work")
        };
        let opts = queue_options(&q, true);
        assert!(opts.passive && opts.durable && !opts.exclusive && !opts.auto_delete);
        assert_eq!(opts.arguments, q.declare_arguments());

        let x = Exchange {
            alternate_exchange: Some("unrouted".into()),
            internal: true,
            ..Exchange::new("orders", ExchangeKind::Topic)
        };
        let opts = exchange_options(&x, false);
        assert!(opts.internal && opts.durable && !opts.passive);
        assert_eq!(
            opts.arguments
                .get("alternate-exchange")
                .and_then(FieldValue::as_str),
            Some("unrouted")
        );
    }
}
