//! The settings of a [`ReliablePublisher`](super::ReliablePublisher).

use std::time::Duration;

use crate::worker::Backoff;

/// What [`ReliablePublisher::publish`](super::ReliablePublisher::publish) does when the
/// publisher already holds its cap of unconfirmed messages or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait until confirms (or failures) make room: back-pressure on the caller (default).
    #[default]
    Wait,
    /// Fail at once with [`Error::PublisherFull`](crate::Error::PublisherFull).
    Fail,
}

/// Settings of a [`ReliablePublisher`](super::ReliablePublisher). Start from `Default` and
/// chain the `with_*` builders.
///
/// ```
/// use std::time::Duration;
/// use serena::{ReliablePublisherOptions, WhenFull};
///
/// let options = ReliablePublisherOptions::default()
///     .with_max_messages(10_000)
///     .with_max_bytes(64 << 20)
///     .with_when_full(WhenFull::Fail)
///     .with_publish_timeout(Some(Duration::from_secs(30)));
/// assert_eq!(options.max_messages, 10_000);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReliablePublisherOptions {
    /// Most messages held awaiting their confirm, queued, in flight or waiting to be
    /// republished (4096).
    pub max_messages: usize,
    /// Most body bytes held awaiting confirms (64 MiB). A single body larger than this fails
    /// at once with [`Error::MessageTooLarge`](crate::Error::MessageTooLarge).
    pub max_bytes: usize,
    /// What a publish does when either cap is reached (wait).
    pub when_full: WhenFull,
    /// Limit for each publish, from the call to the broker's confirm, across reconnects
    /// (`None`: no limit, the default). A publish past it fails with
    /// [`Error::Timeout`](crate::Error::Timeout) and is withdrawn: it is not republished,
    /// though it may already have reached the queue.
    pub publish_timeout: Option<Duration>,
    /// Publish `mandatory`, so a message no queue takes fails with
    /// [`Error::Returned`](crate::Error::Returned) (true).
    pub mandatory: bool,
    /// Delays between reconnection attempts: exponential with jitter, reset after each
    /// successful connection. `max_restarts` is ignored: the publisher never gives up on its
    /// own (its scope ends it).
    pub backoff: Backoff,
    /// When set, a connection that has lived this long (±20 % jitter) is drained (no new
    /// sends, every in-flight message confirmed) and closed cleanly, and the publisher
    /// connects again starting from a random broker of the list, so long-lived clients
    /// spread back over a cluster after a rolling restart (`None`, the default: stay).
    pub rebalance_interval: Option<Duration>,
}

impl ReliablePublisherOptions {
    /// The defaults (the same as `Default`).
    pub fn new() -> Self {
        ReliablePublisherOptions {
            max_messages: 4096,
            max_bytes: 64 << 20,
            when_full: WhenFull::Wait,
            publish_timeout: None,
            mandatory: true,
            backoff: Backoff::default(),
            rebalance_interval: None,
        }
    }

    with_fields! {
        copy with_max_messages => max_messages: usize,
        copy with_max_bytes => max_bytes: usize,
        copy with_when_full => when_full: WhenFull,
        copy with_publish_timeout => publish_timeout: Option<Duration>,
        copy with_mandatory => mandatory: bool,
        copy with_backoff => backoff: Backoff,
        copy with_rebalance_interval => rebalance_interval: Option<Duration>,
    }
}

impl Default for ReliablePublisherOptions {
    fn default() -> Self {
        Self::new()
    }
}
