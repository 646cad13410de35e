//! What the worker does with a failed message: the [`Attempt`] a handler is on, the headers
//! that carry it, and the republishing that moves a message to its delay queue or parks it.
//!
//! With a [`RetrySchedule`] (from `topology.toml`'s `retry` key or
//! [`Supervisor::retry`](super::Supervisor::retry)), a failed message is published, with its
//! body and properties, to the delay queue of its attempt, and acknowledged only once the
//! broker confirmed that copy: it cannot be lost between the two, and at worst (a connection
//! lost in between) it is both retried and redelivered. After the last attempt it is published
//! to the parking queue the same way. Without a schedule, the worker tries a few times itself
//! with a growing pause ([`LocalRetry`]) and then rejects the message.

use std::time::Duration;

use crate::client::Delivery;
use crate::error::{Error, Result};
use crate::proto::{BasicProperties, FieldValue};
use crate::topology::RetrySchedule;

use super::handler::{DeliveryContext, FromDelivery, Publisher, Rejection};

/// Header with the number of the attempt a republished message is on (2 for its first retry).
pub const ATTEMPT_HEADER: &str = "x-serena-attempt";
/// Header with why the message's first attempt failed.
pub const FIRST_FAILURE_HEADER: &str = "x-serena-first-failure";
/// Header with why its latest attempt failed (for a parked message: why it was parked).
pub const LAST_FAILURE_HEADER: &str = "x-serena-last-failure";
/// Header with the work queue the message failed in.
pub const QUEUE_HEADER: &str = "x-serena-queue";

/// Which attempt at its message a handler is on, and why earlier ones failed. An extractor:
/// take it as a handler argument.
///
/// ```
/// use serena::worker::{Attempt, Outcome};
///
/// #[serena::consumer(queue = "orders")]
/// async fn handle(attempt: Attempt) -> Outcome {
///     if attempt.number > 1 {
///         println!("retry {} after: {:?}", attempt.number, attempt.last_failure);
///     }
///     Outcome::Ack
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 on the first delivery; one more for each retry by a schedule and each retry in the
    /// worker. A broker redelivery (after a lost connection) is the same attempt again.
    pub number: u32,
    /// Attempts the message gets in all, when its queue has a retry schedule.
    pub of: Option<u32>,
    /// Why the first attempt failed, once one has.
    pub first_failure: Option<String>,
    /// Why the latest attempt failed, once one has.
    pub last_failure: Option<String>,
    /// The broker delivered it before (`redelivered`: an earlier delivery was not settled).
    pub redelivered: bool,
    /// Deliveries a quorum queue counted before this one (`x-delivery-count`).
    pub delivery_count: Option<u64>,
}

impl Attempt {
    /// True on the last attempt a schedule allows.
    pub fn is_last(&self) -> bool {
        self.of.is_some_and(|of| self.number >= of)
    }
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a FieldValue> {
    delivery.properties.headers.as_ref()?.get(name)
}

fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    header(delivery, name)?.as_str().map(str::to_owned)
}

/// The attempt a delivery is on by its headers alone (1 when it carries none).
pub(crate) fn attempt_of(delivery: &Delivery) -> u32 {
    header(delivery, ATTEMPT_HEADER)
        .and_then(FieldValue::as_i64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

impl FromDelivery for Attempt {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        let d = &ctx.delivery;
        Ok(Attempt {
            number: attempt_of(d).saturating_add(ctx.retried_here),
            of: ctx.schedule.as_ref().map(|s| s.attempts()),
            first_failure: header_text(d, FIRST_FAILURE_HEADER).or(ctx.first_failure.clone()),
            last_failure: ctx
                .last_failure
                .clone()
                .or_else(|| header_text(d, LAST_FAILURE_HEADER)),
            redelivered: d.redelivered,
            delivery_count: header(d, "x-delivery-count")
                .and_then(FieldValue::as_i64)
                .and_then(|n| u64::try_from(n).ok()),
        })
    }
}

/// Retries in the worker for queues without a retry schedule: `attempts` in all, with a pause
/// of `first_delay` before the second, doubling after each. Then the message is rejected (its
/// dead-letter exchange takes it, if the queue has one). The default is 3 attempts with 1 s
/// and 2 s between them, as Spring Cloud Stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRetry {
    /// Attempts in all, the first included (1: none).
    pub attempts: u32,
    /// Pause before the second attempt; each next one doubles it.
    pub first_delay: Duration,
}

impl Default for LocalRetry {
    fn default() -> Self {
        LocalRetry {
            attempts: 3,
            first_delay: Duration::from_secs(1),
        }
    }
}

impl LocalRetry {
    /// The pause after attempt `number` failed (1-based).
    pub fn delay_after(&self, number: u32) -> Duration {
        let doublings = number.saturating_sub(1).min(16);
        self.first_delay.saturating_mul(1 << doublings)
    }
}

/// The failed message's copy for its next stop: the same body and properties, with the
/// attempt and the failure in its headers.
fn marked(delivery: &Delivery, queue: &str, next_attempt: u32, reason: &str) -> BasicProperties {
    let mut properties = (*delivery.properties).clone();
    let mut headers = properties.headers.take().unwrap_or_default();
    if headers.get(FIRST_FAILURE_HEADER).is_none() {
        headers.insert(FIRST_FAILURE_HEADER, reason);
    }
    headers.insert(LAST_FAILURE_HEADER, reason);
    headers.insert(ATTEMPT_HEADER, i64::from(next_attempt));
    headers.insert(QUEUE_HEADER, queue);
    properties.headers = Some(headers);
    properties
}

/// Where a failed message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Moved {
    /// To the delay queue of its next attempt.
    Retried { queue: String, delay: Duration },
    /// To the parking queue.
    Parked { queue: String },
}

/// Publishes a message that failed on `attempt` to its next stop by `schedule` (its delay
/// queue, or the parking queue after the last attempt, or now with `park`), and waits for the
/// broker's confirm. The caller acknowledges the original only after this succeeded.
pub(crate) async fn move_failed(
    publisher: &Publisher,
    schedule: &RetrySchedule,
    delivery: &Delivery,
    attempt: u32,
    reason: &str,
    park: bool,
) -> Result<Moved> {
    let step = if park {
        None
    } else {
        schedule.after_failed(attempt)
    };
    let (target, next_attempt, moved) = match step {
        Some(step) => (
            step.queue.as_str(),
            attempt.saturating_add(1),
            Moved::Retried {
                queue: step.queue.clone(),
                delay: step.delay,
            },
        ),
        None => (
            schedule.park.as_str(),
            attempt,
            Moved::Parked {
                queue: schedule.park.clone(),
            },
        ),
    };
    let properties = marked(delivery, &schedule.queue, next_attempt, reason);
    publisher
        .publish("", target, &delivery.body, properties)
        .await
        .map_err(|e| match e {
            // The delay or parking queue is missing: say which, it is the topology's to fix.
            Error::Returned(_) => Error::Config(format!(
                "the retry queue {target:?} of {:?} does not exist: apply the topology that \
                 declares its retry schedule",
                schedule.queue
            )),
            e => e,
        })?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FieldTable;
    use crate::worker::StateMap;

    fn ctx(headers: FieldTable) -> DeliveryContext {
        DeliveryContext::detached(
            Delivery::detached(
                "",
                "q",
                BasicProperties::default().with_headers(headers),
                &b"x"[..],
            ),
            StateMap::default(),
        )
    }

    #[test]
    fn the_attempt_comes_from_the_headers_the_worker_wrote() {
        let first = Attempt::from_delivery(&ctx(FieldTable::new())).unwrap();
        assert_eq!((first.number, first.first_failure), (1, None));
        let d = Delivery::detached("", "q", BasicProperties::default(), &b"x"[..]);
        let props = marked(&d, "q", 2, "db down");
        let second = Attempt::from_delivery(&ctx(props.headers.clone().unwrap())).unwrap();
        assert_eq!(second.number, 2);
        assert_eq!(second.first_failure.as_deref(), Some("db down"));
        // The first failure stays, the last one moves on.
        let d2 = Delivery::detached("", "q", props, &b"x"[..]);
        let third = marked(&d2, "q", 3, "timeout").headers.unwrap();
        assert_eq!(
            third.get(FIRST_FAILURE_HEADER).and_then(|v| v.as_str()),
            Some("db down")
        );
        assert_eq!(
            third.get(LAST_FAILURE_HEADER).and_then(|v| v.as_str()),
            Some("timeout")
        );
        assert_eq!(
            third.get(ATTEMPT_HEADER).and_then(FieldValue::as_i64),
            Some(3)
        );
    }

    #[test]
    fn local_retries_double_their_pause() {
        let r = LocalRetry::default();
        assert_eq!(r.delay_after(1), Duration::from_secs(1));
        assert_eq!(r.delay_after(2), Duration::from_secs(2));
        assert_eq!(r.delay_after(3), Duration::from_secs(4));
    }
}
