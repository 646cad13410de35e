//! The worker framework: `#[consumer]` handlers run by a supervisor.
//!
//! A worker is a topology, a few async functions annotated
//! `#[consumer(queue = "...")]`, and a `main` that hands them to a supervisor. Arguments of a
//! handler are extractors ([`FromDelivery`]); its return value becomes an [`Outcome`]
//! ([`IntoOutcome`]).
//!
//! # Failures
//!
//! A handler's `Err` becomes [`Outcome::Retry`] (or what the consumer's `on_error` says:
//! [`ErrorPolicy`]); a message whose arguments cannot be built (a body that is not the JSON
//! the handler takes) becomes [`Outcome::Park`]. What those do depends on whether the queue
//! has a retry schedule ([`RetrySchedule`](crate::topology::RetrySchedule), from the
//! `retry` key of the queue in `topology.toml` or [`Supervisor::retry`]):
//!
//! | outcome | queue with a retry schedule | queue without one |
//! |---|---|---|
//! | `Retry` | published to the delay queue of its attempt, comes back after the delay; after the last attempt published to the parking queue | tried again in the worker ([`LocalRetry`]: 3 attempts, 1 s then 2 s apart), then rejected |
//! | `Park` | published to the parking queue now | rejected |
//! | `Requeue` | back in the queue at once | back in the queue at once |
//! | `Reject` | rejected | rejected |
//!
//! "Published" means the copy was confirmed by the broker before the original is
//! acknowledged, with [`Attempt`]'s headers (`x-serena-attempt`, `x-serena-first-failure`,
//! `x-serena-last-failure`, `x-serena-queue`) added. "Rejected" means `basic.reject` without
//! requeue: the queue's dead-letter exchange takes the message, and a queue without one drops
//! it (logged at ERROR). No outcome redelivers a failing message at once forever unless the
//! handler asks for `Requeue` itself.
//!
//! Why delay queues and not the alternatives: Spring AMQP's `RetryInterceptor` retries in the
//! consumer's thread (holding the message, and its prefetch slot, through every delay, and
//! losing the count on a restart) and its `RepublishMessageRecoverer` parks after the last;
//! serena does the former only for queues without a schedule. RabbitMQ's delayed-message
//! exchange plugin holds delayed messages on one node, outside any queue's replication and
//! limits, and is not installed by default. A queue per delay with a message TTL and
//! dead-lettering back to the work queue uses only core features, survives restarts (the
//! count travels in the message), replicates like any quorum queue, and shows each waiting
//! message in the management UI.

mod backoff;
mod failure;
mod handler;
mod reply;
mod retry;
mod stats;
mod supervisor;

pub use backoff::Backoff;
pub use failure::{Phase, TreeError, is_exclusive_use, is_permanent};
pub use handler::{
    ConsumerSpec, DeliveryContext, ErrorPolicy, FromDelivery, Handler, HandlerFuture, Headers,
    IntoOutcome, Json, Outcome, Properties, Publisher, Rejection, Reply, State, StateMap,
    StateRequirement,
};
pub use retry::{
    ATTEMPT_HEADER, Attempt, FIRST_FAILURE_HEADER, LAST_FAILURE_HEADER, LocalRetry, QUEUE_HEADER,
};
pub use stats::{Readiness, Stats, SupervisorHandle};
pub use supervisor::{SetupFn, Supervisor, SupervisorError, shutdown_signal};

/// Items the `#[consumer]` expansion uses; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::borrow::Cow;

    use super::{ConsumerSpec, DeliveryContext, ErrorPolicy, Outcome, Rejection};
    use crate::StreamOffset;

    /// The `ConsumerSpec` of a `#[consumer]`, in a constant: every option the attribute sets.
    /// (A struct update `ConsumerSpec { .., ..base }` in a constant would have to drop the
    /// base's names, which constant evaluation cannot do.)
    #[allow(clippy::too_many_arguments)]
    pub const fn spec(
        name: &'static str,
        queue: &'static str,
        prefetch: Option<u16>,
        concurrency: Option<usize>,
        consumer_tag: Option<&'static str>,
        exclusive: bool,
        priority: Option<i32>,
        on_error: ErrorPolicy,
    ) -> ConsumerSpec {
        ConsumerSpec {
            name: Cow::Borrowed(name),
            queue: Cow::Borrowed(queue),
            prefetch,
            concurrency,
            consumer_tag: match consumer_tag {
                Some(tag) => Some(Cow::Borrowed(tag)),
                None => None,
            },
            exclusive,
            priority,
            on_error,
            stream_offset: None,
        }
    }

    /// `spec` consuming a stream from `offset` (`#[consumer(offset = ...)]`), in a constant.
    /// The offset it replaces is forgotten, not dropped (constant evaluation cannot run a
    /// destructor): [`spec`] always leaves it `None`, which owns nothing.
    pub const fn with_stream_offset(spec: ConsumerSpec, offset: StreamOffset) -> ConsumerSpec {
        let mut spec = spec;
        std::mem::forget(spec.stream_offset.replace(offset));
        spec
    }

    /// A delivery whose arguments could not be built: a poison message, parked (or rejected
    /// when its queue has no retry schedule) and never redelivered.
    pub fn poison(ctx: &DeliveryContext, rejection: Rejection) -> Outcome {
        tracing::warn!(
            queue = &*ctx.queue,
            delivery_tag = ctx.delivery.delivery_tag,
            reason = %rejection,
            "poison message: parked, or rejected without requeue"
        );
        Outcome::park(format!("poison message: {rejection}"))
    }
}
