//! The options of the channel's calls: declaring, publishing and consuming.
//!
//! Each is `#[non_exhaustive]`, so options can be added without breaking callers: start from
//! `Default` (or the `const` `new`) and chain the `with_*` builders, or set the public fields
//! on a `let mut`.

use std::time::Duration;

use crate::proto::FieldTable;

#[cfg(doc)]
use super::channel::{Channel, Confirmation};
#[cfg(doc)]
use crate::error::Error;

/// Options of [`Channel::exchange_declare`].
///
/// ```
/// use serena::ExchangeDeclareOptions;
///
/// let options = ExchangeDeclareOptions::new().with_durable(true);
/// assert!(options.durable && !options.auto_delete);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExchangeDeclareOptions {
    /// Only check that the exchange exists (fails with 404 if not).
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Delete when its last binding goes.
    pub auto_delete: bool,
    /// Only reachable through exchange-to-exchange bindings.
    pub internal: bool,
    /// Extra arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

impl ExchangeDeclareOptions {
    /// The defaults: every flag off, no arguments (the same as `Default`).
    pub const fn new() -> Self {
        ExchangeDeclareOptions {
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }

    with_fields! {
        copy with_passive => passive: bool,
        copy with_durable => durable: bool,
        copy with_auto_delete => auto_delete: bool,
        copy with_internal => internal: bool,
        owned with_arguments => arguments: FieldTable,
    }
}

impl Default for ExchangeDeclareOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Options of [`Channel::queue_declare`].
///
/// ```
/// use serena::QueueDeclareOptions;
///
/// let options = QueueDeclareOptions::default().with_exclusive(true);
/// assert!(options.exclusive && !options.durable);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueDeclareOptions {
    /// Only check that the queue exists (fails with 404 if not).
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Used only by this connection and deleted when it closes.
    pub exclusive: bool,
    /// Delete when its last consumer goes.
    pub auto_delete: bool,
    /// Queue arguments (`x-queue-type`, `x-message-ttl`, ...).
    pub arguments: FieldTable,
}

impl QueueDeclareOptions {
    /// The defaults: every flag off, no arguments (the same as `Default`).
    pub const fn new() -> Self {
        QueueDeclareOptions {
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        }
    }

    with_fields! {
        copy with_passive => passive: bool,
        copy with_durable => durable: bool,
        copy with_exclusive => exclusive: bool,
        copy with_auto_delete => auto_delete: bool,
        owned with_arguments => arguments: FieldTable,
    }
}

impl Default for QueueDeclareOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Options of [`Channel::basic_publish_with`].
///
/// ```
/// use std::time::Duration;
/// use serena::PublishOptions;
///
/// const FIRE_AND_RETURN: PublishOptions = PublishOptions::new().with_mandatory(false);
/// let bounded = PublishOptions::default().with_timeout(Some(Duration::from_secs(5)));
/// assert!(!FIRE_AND_RETURN.mandatory && bounded.mandatory);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PublishOptions {
    /// An unroutable message is returned and the publish fails with
    /// [`Error::Returned`] (default `true`).
    pub mandatory: bool,
    /// Deprecated; RabbitMQ closes the connection with 540 when it is set (default `false`).
    pub immediate: bool,
    /// The longest the whole publish may take, from the call to the broker's confirm
    /// (default `None`: no limit of its own; a dead connection still fails it). Past it, the
    /// publish fails with [`Error::Timeout`]: from `basic_publish_with` while it is still
    /// waiting to send (the broker blocks the connection under a resource alarm, the outgoing
    /// buffer is full, or the server paused the channel with `channel.flow`), in which case
    /// nothing was sent; or from the [`Confirmation`] once the message was sent, in which case
    /// the broker may still take it. Either way it is not reported confirmed: publish it
    /// again (at-least-once) or give up, as the caller decides.
    pub timeout: Option<Duration>,
}

impl PublishOptions {
    /// The defaults: `mandatory`, not `immediate`, no timeout (the same as `Default`).
    pub const fn new() -> Self {
        PublishOptions {
            mandatory: true,
            immediate: false,
            timeout: None,
        }
    }

    with_fields! {
        copy with_mandatory => mandatory: bool,
        copy with_immediate => immediate: bool,
        copy with_timeout => timeout: Option<Duration>,
    }
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Options of [`Channel::basic_consume`].
///
/// ```
/// use serena::ConsumeOptions;
///
/// let options = ConsumeOptions::default().with_consumer_tag("audit").with_exclusive(true);
/// assert_eq!(options.consumer_tag, "audit");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumeOptions {
    /// Consumer tag; serena picks a unique one when empty.
    pub consumer_tag: String,
    /// Deliveries need no acknowledgement. The broker then applies no prefetch limit and
    /// pushes as fast as it can: read the consumer promptly, or deliveries pile up in memory.
    pub no_ack: bool,
    /// Be the queue's only consumer.
    pub exclusive: bool,
    /// Do not receive messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// Consumer arguments, e.g. `x-priority`.
    pub arguments: FieldTable,
}

impl ConsumeOptions {
    /// The defaults: a tag serena picks, acknowledged, shared, no arguments (the same as
    /// `Default`).
    pub const fn new() -> Self {
        ConsumeOptions {
            consumer_tag: String::new(),
            no_ack: false,
            exclusive: false,
            no_local: false,
            arguments: FieldTable::new(),
        }
    }

    with_fields! {
        into with_consumer_tag => consumer_tag: String,
        copy with_no_ack => no_ack: bool,
        copy with_exclusive => exclusive: bool,
        copy with_no_local => no_local: bool,
        owned with_arguments => arguments: FieldTable,
    }
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FieldValue;

    #[test]
    fn new_is_default() {
        let p = PublishOptions::new();
        let d = PublishOptions::default();
        assert_eq!((p.mandatory, p.immediate, p.timeout), (true, false, None));
        assert_eq!((d.mandatory, d.immediate, d.timeout), (true, false, None));
        let q = QueueDeclareOptions::default();
        assert!(!q.passive && !q.durable && !q.exclusive && !q.auto_delete);
        assert!(q.arguments.is_empty());
        let x = ExchangeDeclareOptions::default();
        assert!(!x.passive && !x.durable && !x.auto_delete && !x.internal);
        let c = ConsumeOptions::default();
        assert!(c.consumer_tag.is_empty() && !c.no_ack && !c.exclusive && !c.no_local);
    }

    #[test]
    fn builders_set_their_field_only() {
        const QUIET: PublishOptions = PublishOptions::new()
            .with_mandatory(false)
            .with_immediate(true)
            .with_timeout(Some(Duration::from_millis(250)));
        const { assert!(!QUIET.mandatory && QUIET.immediate) };
        assert_eq!(QUIET.timeout, Some(Duration::from_millis(250)));

        let mut args = FieldTable::new();
        args.insert("x-queue-type", FieldValue::from("quorum"));
        let q = QueueDeclareOptions::default()
            .with_passive(true)
            .with_durable(true)
            .with_exclusive(true)
            .with_auto_delete(true)
            .with_arguments(args.clone());
        assert!(q.passive && q.durable && q.exclusive && q.auto_delete);
        assert_eq!(q.arguments, args);
        assert!(QueueDeclareOptions::new().with_durable(true).durable);

        let x = ExchangeDeclareOptions::new()
            .with_passive(true)
            .with_durable(true)
            .with_auto_delete(true)
            .with_internal(true)
            .with_arguments(args.clone());
        assert!(x.passive && x.durable && x.auto_delete && x.internal);
        assert_eq!(x.arguments, args);

        let c = ConsumeOptions::new()
            .with_consumer_tag("tag-1")
            .with_no_ack(true)
            .with_exclusive(true)
            .with_no_local(true)
            .with_arguments(args.clone());
        assert_eq!(c.consumer_tag, "tag-1");
        assert!(c.no_ack && c.exclusive && c.no_local);
        assert_eq!(c.arguments, args);
    }
}
