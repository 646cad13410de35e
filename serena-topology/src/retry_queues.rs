//! What a queue's `retry` adds to a topology: the schedule the worker follows, and the queues
//! apply declares for it.
//!
//! ```text
//!   [[queues]] name = "orders.work", type = "quorum", retry = { delays = ["1s", "1m", "1s"] }
//!     apply:  orders.work
//!             orders.work.retry.1s   quorum, x-message-ttl 1000,  dead-letters to "" / orders.work
//!             orders.work.retry.1m   quorum, x-message-ttl 60000, dead-letters to "" / orders.work
//!             orders.work.parked     quorum (unless [[queues]] lists the park queue)
//! ```

use std::borrow::Cow;
use std::collections::HashSet;

use super::error::Entity;
use super::model::{Queue, Topology};
use super::retry::{RetrySchedule, RetryStep};

impl Queue {
    /// Its retry schedule, when it has [`retry`](Self::retry): which queue each failed attempt
    /// waits in, and where a message goes after the last one.
    pub fn retry_schedule(&self) -> Option<RetrySchedule> {
        let retry = self.retry.as_ref()?;
        Some(RetrySchedule::new(
            &self.name,
            &retry.delays,
            retry.park.as_deref(),
        ))
    }

    /// Every queue its schedule needs, listed in the topology or not: one per distinct delay
    /// in the order of the delays, then the park queue. Empty without `retry`.
    pub(crate) fn retry_queues(&self) -> Vec<Queue> {
        let Some(schedule) = self.retry_schedule() else {
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut queues: Vec<Queue> = schedule
            .steps
            .iter()
            .filter(|step| names.insert(step.queue.as_str()))
            .map(|step| self.delay_queue(step))
            .collect();
        queues.push(self.retry_sibling(&schedule.park));
        queues
    }

    /// The queue a message waits `step`'s delay in: it expires there and is dead-lettered back
    /// to this queue through the default exchange.
    fn delay_queue(&self, step: &RetryStep) -> Queue {
        Queue {
            dead_letter_exchange: Some(String::new()),
            dead_letter_routing_key: Some(self.name.clone()),
            message_ttl: Some(u32::try_from(step.delay.as_millis()).unwrap_or(u32::MAX)),
            ..self.retry_sibling(&step.queue)
        }
    }

    /// A queue named `name` of this queue's type and durability, declared (or only expected)
    /// as this one is; nothing else set.
    fn retry_sibling(&self, name: &str) -> Queue {
        Queue {
            kind: self.kind,
            declare: self.declare,
            durable: self.durable,
            ..Queue::new(name)
        }
    }
}

impl Topology {
    /// The retry schedule of the queue named `queue`, when the topology lists it with `retry`.
    pub fn retry_schedule(&self, queue: &str) -> Option<RetrySchedule> {
        self.queues
            .iter()
            .find(|q| q.name == queue)
            .and_then(Queue::retry_schedule)
    }

    /// The schedule of every queue with `retry`, in the topology's order.
    pub fn retry_schedules(&self) -> Vec<RetrySchedule> {
        self.queues
            .iter()
            .filter_map(Queue::retry_schedule)
            .collect()
    }

    /// The queues apply declares for retries beyond [`queues`](Self::queues), in its order:
    /// after each queue with `retry`, one queue per distinct delay, then the park queue unless
    /// `queues` lists it. A park queue that several schedules share comes once, after the first.
    pub fn retry_queues(&self) -> Vec<Queue> {
        self.queue_plan()
            .into_iter()
            .filter_map(|(_, q)| match q {
                Cow::Owned(q) => Some(q),
                Cow::Borrowed(_) => None,
            })
            .collect()
    }

    /// Every queue serena's apply declares and verify checks, in order, with the name reports
    /// give it: each listed queue (borrowed), followed by the queues its retry schedule adds
    /// (owned; see [`retry_queues`](Self::retry_queues)).
    pub fn queue_plan(&self) -> Vec<(Entity, Cow<'_, Queue>)> {
        let listed: HashSet<&str> = self.queues.iter().map(|q| q.name.as_str()).collect();
        let mut added = HashSet::new();
        let mut plan = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            plan.push((q.entity(i), Cow::Borrowed(q)));
            for extra in q.retry_queues() {
                if !listed.contains(extra.name.as_str()) && added.insert(extra.name.clone()) {
                    plan.push((extra.entity(0), Cow::Owned(extra)));
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{QueueType, Retry};
    use serena_proto::FieldValue;

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn delay_queues_expire_back_into_the_work_queue() {
        let work = Queue {
            kind: QueueType::Quorum,
            delivery_limit: Some(5),
            retry: Some(Retry::new(secs(&[1, 60, 1]))),
            ..Queue::new("work")
        };
        let schedule = work.retry_schedule().unwrap();
        assert_eq!(schedule.attempts(), 4);
        assert_eq!(schedule.park, "work.parked");
        let queues = work.retry_queues();
        let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["work.retry.1s", "work.retry.1m", "work.parked"]);
        let args = queues[1].declare_arguments();
        let arg = |k: &str| args.get(k).cloned();
        assert_eq!(arg("x-queue-type"), Some(FieldValue::from("quorum")));
        assert_eq!(arg("x-message-ttl"), Some(FieldValue::I64(60_000)));
        assert_eq!(arg("x-dead-letter-exchange"), Some(FieldValue::from("")));
        assert_eq!(
            arg("x-dead-letter-routing-key"),
            Some(FieldValue::from("work"))
        );
        assert!(!args.contains_key("x-delivery-limit"), "{args:?}");
        let park = queues[2].declare_arguments();
        assert_eq!(park.len(), 1, "only the type: {park:?}");
        assert!(queues.iter().all(|q| q.durable && q.declare));
        assert_eq!(Queue::new("plain").retry_schedule(), None);
        assert!(Queue::new("plain").retry_queues().is_empty());
    }

    #[test]
    fn a_listed_park_queue_is_used_as_it_is_and_a_shared_one_comes_once() {
        let with_retry = |name: &str, park: Option<&str>| Queue {
            retry: Some(Retry {
                park: park.map(str::to_owned),
                ..Retry::new(secs(&[10]))
            }),
            ..Queue::new(name)
        };
        let t = Topology {
            queues: vec![
                with_retry("a", Some("dead")),
                with_retry("b", Some("dead")),
                with_retry("c", Some("listed")),
                Queue {
                    message_ttl: Some(5),
                    ..Queue::new("listed")
                },
            ],
            ..Topology::default()
        };
        let plan: Vec<String> = t
            .queue_plan()
            .iter()
            .map(|(e, q)| format!("{e}{}", if let Cow::Owned(_) = q { "+" } else { "" }))
            .collect();
        assert_eq!(
            plan,
            [
                "queue \"a\"",
                "queue \"a.retry.10s\"+",
                "queue \"dead\"+",
                "queue \"b\"",
                "queue \"b.retry.10s\"+",
                "queue \"c\"",
                "queue \"c.retry.10s\"+",
                "queue \"listed\"",
            ]
        );
        assert_eq!(t.retry_queues().len(), 4);
        assert_eq!(t.retry_schedules().len(), 3);
        assert_eq!(t.retry_schedule("c").unwrap().park, "listed");
        assert_eq!(t.retry_schedule("listed"), None);
        assert_eq!(t.retry_schedule("nope"), None);
    }
}
