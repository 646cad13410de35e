//! Delayed retries with plain RabbitMQ features: one queue per delay, whose messages expire
//! after that delay (`x-message-ttl`) and are dead-lettered back to the work queue through the
//! default exchange; after the last attempt, a parking queue.
//!
//! ```text
//!   work queue --handler fails (attempt n)--> worker publishes to <queue>.retry.<delay n>
//!       ^                                             | waits its TTL (one TTL per queue, so
//!       |                                             | messages expire in order, at the head)
//!       `------- dead-lettered back (default exchange, key = work queue) ----'
//!   after the last delay: worker publishes to the park queue, with the reason in a header
//! ```
//!
//! This is the shape [`RetrySchedule`] gives the worker: which queue each attempt waits in,
//! and where a message goes when attempts run out. The topology declares those queues.

use std::fmt;
use std::time::Duration;

/// Longest delay a retry can have: `x-message-ttl` is a 32-bit count of milliseconds.
pub const MAX_RETRY_DELAY: Duration = Duration::from_millis(u32::MAX as u64);

/// One retry: how long the message waits, and the queue it waits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryStep {
    /// How long the message waits before it comes back.
    pub delay: Duration,
    /// The queue it waits in (`<work queue>.retry.<delay>`).
    pub queue: String,
}

/// A queue's retries: the delays between attempts and the queue after the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The work queue whose failed messages this retries.
    pub queue: String,
    /// One step per retry: attempt 2 waits in `steps[0]`, attempt 3 in `steps[1]`, ... A
    /// message fails for good after `steps.len() + 1` attempts.
    pub steps: Vec<RetryStep>,
    /// Where a message goes after its last attempt (`<work queue>.parked` unless named).
    pub park: String,
}

impl RetrySchedule {
    /// The schedule for `queue` with these `delays`, parking in `park` (or
    /// `<queue>.parked`). Names follow [`retry_queue_name`].
    pub fn new(queue: &str, delays: &[Duration], park: Option<&str>) -> Self {
        RetrySchedule {
            queue: queue.to_owned(),
            steps: delays
                .iter()
                .map(|&delay| RetryStep {
                    delay,
                    queue: retry_queue_name(queue, delay),
                })
                .collect(),
            park: park.map_or_else(|| format!("{queue}.parked"), str::to_owned),
        }
    }

    /// Attempts a message gets in all: the first delivery and one per step.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.steps.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// Where a message that failed on `attempt` (1 for its first delivery) goes: the step it
    /// waits in before the next attempt, or `None` when it is to be parked.
    pub fn after_failed(&self, attempt: u32) -> Option<&RetryStep> {
        let index = usize::try_from(attempt.max(1) - 1).ok()?;
        self.steps.get(index)
    }
}

/// The delay queue of `queue` for `delay`: `<queue>.retry.<delay>`, the delay written as
/// [`DelayText`] (`500ms`, `10s`, `2m`, `1h`). Two steps with the same delay share it.
pub fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}", DelayText(delay))
}

/// A delay in the shortest exact form of `ms`, `s`, `m` or `h`: `500ms`, `1s`, `90s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayText(pub Duration);

impl fmt::Display for DelayText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) && ms > 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Reads a delay written as an integer and a unit: `500ms`, `10s`, `5m`, `1h`.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 500ms, 10s, 5m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    let delay = Duration::from_millis(ms);
    if delay.is_zero() {
        return Err("a retry delay must be longer than 0".into());
    }
    if delay > MAX_RETRY_DELAY {
        return Err(format!(
            "{text:?} is longer than the longest message TTL ({}ms, about 49 days)",
            u32::MAX
        ));
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_read_and_write_back_in_their_shortest_form() {
        for (text, ms, back) in [
            ("500ms", 500, "500ms"),
            ("1s", 1_000, "1s"),
            ("90s", 90_000, "90s"),
            ("120s", 120_000, "2m"),
            ("1h", 3_600_000, "1h"),
            ("1500ms", 1_500, "1500ms"),
        ] {
            let d = parse_delay(text).unwrap();
            assert_eq!(d, Duration::from_millis(ms));
            assert_eq!(DelayText(d).to_string(), back);
        }
        for bad in ["", "10", "s", "0s", "1d", "-1s", "1.5s", "50000h"] {
            assert!(parse_delay(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_schedule_names_its_queues_and_says_where_each_failure_goes() {
        let s = RetrySchedule::new(
            "orders.work",
            &[
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(1),
            ],
            None,
        );
        assert_eq!(s.attempts(), 4);
        assert_eq!(s.park, "orders.work.parked");
        assert_eq!(s.after_failed(1).unwrap().queue, "orders.work.retry.1s");
        assert_eq!(s.after_failed(2).unwrap().queue, "orders.work.retry.10s");
        assert_eq!(s.after_failed(3).unwrap().queue, "orders.work.retry.1s");
        assert!(s.after_failed(4).is_none(), "parked after the last attempt");
        let named = RetrySchedule::new("q", &[Duration::from_millis(250)], Some("q.dead"));
        assert_eq!(named.park, "q.dead");
        assert_eq!(named.steps[0].queue, "q.retry.250ms");
    }
}
