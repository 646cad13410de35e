//! The rules of `retry`: the delays, and the names of the queues a schedule adds.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Checker, invalid};
use crate::error::Problem;
use crate::model::{Queue, QueueType, Retry, Topology};
use crate::retry::{DelayText, MAX_RETRY_DELAY, RetrySchedule};
use serena_proto::ShortString;

/// A queue a retry schedule adds, by what it is to the queue whose schedule it is.
enum Added<'a> {
    /// The queue messages wait this delay in.
    Delay { owner: &'a Queue, delay: Duration },
    /// The park queue, and how it would be declared (see [`declared_as`]).
    Park { owner: &'a Queue, declared: String },
}

/// The `retry` rules (see the [module docs](super)), in the order of the queues.
pub(super) fn rules(out: &mut Vec<Problem>, t: &Topology, listed: &HashMap<&str, &Queue>) {
    let mut names = Names {
        listed,
        added: HashMap::new(),
    };
    for (i, q) in t.queues.iter().enumerate() {
        let Some(retry) = &q.retry else {
            continue;
        };
        let origin = q.origin.as_ref();
        let mut c = Checker {
            out: &mut *out,
            entity: q.entity(i),
            origin,
        };
        if q.kind == QueueType::Stream {
            if !invalid(origin, "type") {
                c.at(
                    "retry",
                    "retry is not supported on stream queues: a stream keeps its messages, and \
                     a consumer goes back to an offset instead",
                );
            }
            continue;
        }
        if q.exclusive {
            c.at(
                "retry",
                "retry is not supported on exclusive queues: the queue goes with its connection, \
                 and the messages waiting for a retry would come back to nothing",
            );
            continue;
        }
        let delays_valid = !invalid(origin, "retry.delays");
        if delays_valid {
            delay_rules(&mut c, retry);
        }
        let park_valid = !invalid(origin, "retry.park");
        let park_empty = retry.park.as_deref() == Some("");
        if park_valid && park_empty {
            c.at(
                "retry.park",
                "retry.park must name a queue; leave it out to park in \"<queue>.parked\"",
            );
        }
        // The names a schedule adds start with the queue's, which the queue's rules checked.
        let Some(schedule) = q.retry_schedule() else {
            continue;
        };
        if q.name.is_empty() || q.name.len() > ShortString::MAX_LEN {
            continue;
        }
        if delays_valid {
            names.delay_queues(&mut c, q, &schedule);
        }
        if park_valid && !park_empty {
            names.park_queue(&mut c, q, &schedule);
        }
    }
}

/// The queues listed in `[[queues]]`, and those the schedules checked so far add.
struct Names<'a> {
    listed: &'a HashMap<&'a str, &'a Queue>,
    added: HashMap<String, Added<'a>>,
}

impl<'a> Names<'a> {
    /// Each distinct delay queue of `q`: not too long, not listed, not another's park queue.
    fn delay_queues(&mut self, c: &mut Checker<'_>, q: &'a Queue, schedule: &RetrySchedule) {
        let mut own = HashSet::new();
        for (n, step) in schedule.steps.iter().enumerate() {
            if !own.insert(step.queue.as_str()) {
                continue;
            }
            let key = format!("retry.delays[{n}]");
            let name = &step.queue;
            let delay = DelayText(step.delay);
            if name.len() > ShortString::MAX_LEN {
                c.at(
                    &key,
                    format!(
                        "the {delay} delay queue would be named {name:?}, {} bytes long; AMQP \
                         allows at most 255 (shorten the queue's name)",
                        name.len()
                    ),
                );
            } else if let Some(other) = self.listed.get(name.as_str()) {
                let line = other.origin.as_ref().map_or(String::new(), |o| {
                    format!(" (line {})", o.key_location("name").unwrap_or(o.at).line)
                });
                c.at(
                    &key,
                    format!(
                        "the {delay} delay queue {name:?} is also listed in [[queues]]{line}; \
                         rename one of them"
                    ),
                );
            } else if let Some(Added::Park { owner, .. }) = self.added.get(name) {
                c.at(
                    &key,
                    format!(
                        "the {delay} delay queue {name:?} is also the park queue of queue {:?}",
                        owner.name
                    ),
                );
            } else {
                let added = Added::Delay {
                    owner: q,
                    delay: step.delay,
                };
                self.added.insert(name.clone(), added);
            }
        }
    }

    /// The park queue of `q`: not itself nor one of its delay queues, not too long; when not
    /// listed, not reserved, not another's delay queue, and declared alike if shared.
    fn park_queue(&mut self, c: &mut Checker<'_>, q: &'a Queue, schedule: &RetrySchedule) {
        let park = &schedule.park;
        let named = q.retry.as_ref().is_some_and(|r| r.park.is_some());
        let key = if named { "retry.park" } else { "retry" };
        if park == &q.name {
            c.at(key, "a queue cannot park in itself");
        } else if schedule.steps.iter().any(|s| &s.queue == park) {
            c.at(
                key,
                format!("the park queue {park:?} is also one of this queue's delay queues"),
            );
        } else if park.len() > ShortString::MAX_LEN {
            let hint = if named {
                ""
            } else {
                " (name a shorter one with retry.park)"
            };
            c.at(
                key,
                format!(
                    "the park queue name {park:?} is {} bytes long; AMQP allows at most 255{hint}",
                    park.len()
                ),
            );
        } else if self.listed.contains_key(park.as_str()) {
            // Listed in [[queues]]: that declaration is used as it is.
        } else if q.declare && park.starts_with("amq.") {
            c.at(
                key,
                "queue names starting with \"amq.\" are reserved by the broker and cannot be \
                 declared",
            );
        } else {
            // A park queue takes its work queue's type, durability and `declare`.
            let declared = declared_as(q);
            match self.added.get(park) {
                Some(Added::Delay { owner, delay }) => c.at(
                    key,
                    format!(
                        "the park queue {park:?} is also the {} delay queue of queue {:?}",
                        DelayText(*delay),
                        owner.name
                    ),
                ),
                Some(Added::Park {
                    owner,
                    declared: first,
                }) if *first != declared => c.at(
                    key,
                    format!(
                        "the park queue {park:?} is also the park queue of queue {:?}, which \
                         would declare it {first}, this one {declared}; list {park:?} in \
                         [[queues]] to say how it is declared",
                        owner.name
                    ),
                ),
                Some(Added::Park { .. }) => {}
                None => {
                    let added = Added::Park { owner: q, declared };
                    self.added.insert(park.clone(), added);
                }
            }
        }
    }
}

/// How many delays there are, and each one's value (a file's delays always pass; code can
/// build others).
fn delay_rules(c: &mut Checker<'_>, retry: &Retry) {
    if retry.delays.is_empty() {
        c.at(
            "retry.delays",
            "retry.delays must list at least one delay, e.g. delays = [\"1s\", \"10s\", \"1m\"]",
        );
    }
    if retry.delays.len() > Retry::MAX_DELAYS {
        c.at(
            &format!("retry.delays[{}]", Retry::MAX_DELAYS),
            format!(
                "retry.delays lists {} delays; a schedule has at most {}",
                retry.delays.len(),
                Retry::MAX_DELAYS
            ),
        );
    }
    for (n, delay) in retry.delays.iter().enumerate() {
        let whole_ms = delay.subsec_nanos() % 1_000_000 == 0;
        if !whole_ms || delay.is_zero() || *delay > MAX_RETRY_DELAY {
            c.at(
                &format!("retry.delays[{n}]"),
                format!(
                    "retry.delays[{n}] is {delay:?}; a retry delay is a whole number of \
                     milliseconds from 1 to {}",
                    MAX_RETRY_DELAY.as_millis()
                ),
            );
        }
    }
}

/// `quorum`, `classic`, `classic, not durable`, with `, expected only` for `declare = false`.
fn declared_as(q: &Queue) -> String {
    let mut s = q.kind.to_string();
    if !q.durable {
        s.push_str(", not durable");
    }
    if !q.declare {
        s.push_str(", expected only");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::messages;

    #[test]
    fn retry_delays_built_in_code_are_checked_too() {
        let ms = Duration::from_millis;
        let t = Topology {
            queues: vec![
                Queue {
                    retry: Some(Retry::new([
                        Duration::ZERO,
                        Duration::from_micros(1_500),
                        MAX_RETRY_DELAY + ms(1),
                        ms(1),
                        MAX_RETRY_DELAY,
                    ])),
                    ..Queue::new("q")
                },
                Queue {
                    retry: Some(Retry::new([])),
                    ..Queue::new("empty")
                },
                Queue {
                    retry: Some(Retry::new(vec![ms(1); Retry::MAX_DELAYS + 1])),
                    ..Queue::new("many")
                },
                Queue {
                    retry: Some(Retry::new(vec![ms(1); Retry::MAX_DELAYS])),
                    ..Queue::new("enough")
                },
            ],
            ..Topology::default()
        };
        assert_eq!(
            messages(&t),
            [
                "queue \"q\": retry.delays[0] is 0ns; a retry delay is a whole number of \
                 milliseconds from 1 to 4294967295",
                "queue \"q\": retry.delays[1] is 1.5ms; a retry delay is a whole number of \
                 milliseconds from 1 to 4294967295",
                "queue \"q\": retry.delays[2] is 4294967.296s; a retry delay is a whole number \
                 of milliseconds from 1 to 4294967295",
                "queue \"empty\": retry.delays must list at least one delay, e.g. delays = \
                 [\"1s\", \"10s\", \"1m\"]",
                "queue \"many\": retry.delays lists 33 delays; a schedule has at most 32",
            ]
        );
    }
}
