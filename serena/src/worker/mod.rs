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
//!
//! # Metrics
//!
//! With the feature `metrics`, the supervisor records what it counts in [`Stats`] (and more)
//! through the [`metrics`](https://docs.rs/metrics) facade: install any recorder (Prometheus,
//! StatsD, OpenTelemetry, ...) before [`Supervisor::run`] and these reach it. The feature
//! `http` adds a Prometheus recorder and an endpoint that serves it (`Supervisor::http`,
//! `SERENA_HTTP_ADDR`, with `/healthz` and `/readyz`). Handles are resolved once per consumer,
//! connection and publisher: a message costs a few atomic additions.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `serena_consumer_deliveries_total` | counter | `queue` | deliveries handed to handlers |
//! | `serena_consumer_acks_total` | counter | `queue` | messages acknowledged |
//! | `serena_consumer_requeues_total` | counter | `queue` | messages put back in their queue |
//! | `serena_consumer_rejects_total` | counter | `queue` | messages rejected without requeue |
//! | `serena_consumer_retries_total` | counter | `queue` | messages moved to a delay queue |
//! | `serena_consumer_parked_total` | counter | `queue` | messages moved to their parking queue |
//! | `serena_consumer_dropped_total` | counter | `queue` | outcomes lost with their channel (the broker redelivers) |
//! | `serena_consumer_settled_by_handler_total` | counter | `queue` | messages the handler settled itself |
//! | `serena_consumer_handler_errors_total` | counter | `queue` | handler calls that failed (`Retry` or `Park`, poison messages included) |
//! | `serena_consumer_handler_panics_total` | counter | `queue` | handlers that panicked |
//! | `serena_consumer_handler_duration_seconds` | histogram | `queue` | time in one handler call |
//! | `serena_consumer_in_flight` | gauge | `queue` | handlers running now |
//! | `serena_worker_state` | gauge | `connection`, `state` | 1 for the state the supervisor is in (`starting`, `ready`, `standby`, `restarting`, `stopped`), 0 for the others |
//! | `serena_worker_restarts_total` | counter | `connection` | restarts of the whole tree |
//! | `serena_connection_reconnects_total` | counter | `connection` | connections opened after the first |
//! | `serena_connection_sent_bytes_total` | counter | `connection` | bytes written to the socket |
//! | `serena_connection_received_frames_total` | counter | `connection` | frames read from the socket |
//! | `serena_connection_blocked` | gauge | `connection` | 1 while the broker blocks publishing (`connection.blocked`: a memory or disk alarm) |
//! | `serena_connection_blocked_seconds_total` | counter | `connection` | time it blocked publishing, in whole seconds |
//! | `serena_publisher_published_total` | counter | `connection` | messages the handlers' [`Publisher`] published (retries and parking included) |
//! | `serena_publisher_confirmed_total` | counter | `connection` | publishes the broker confirmed |
//! | `serena_publisher_nacked_total` | counter | `connection` | publishes the broker refused (`basic.nack`) |
//! | `serena_publisher_returned_total` | counter | `connection` | publishes returned unroutable (`basic.return`) |
//! | `serena_publisher_failed_total` | counter | `connection` | publishes that failed otherwise (closed channel, timeout) |
//! | `serena_publisher_confirm_duration_seconds` | histogram | `connection` | from publish to the broker's answer (confirm, nack or return) |
//!
//! `connection` is the configuration's `connection_name`, or `serena` without one. The
//! connection's traffic is sampled once a second from its own counters
//! ([`Connection::heartbeat_stats`](crate::Connection::heartbeat_stats)), so up to a second of
//! a lost connection's traffic is not counted; blocked time is sampled at the same rate.

mod backoff;
mod failure;
mod handler;
#[cfg(feature = "http")]
mod http;
mod metrics;
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
#[cfg(feature = "http")]
pub use http::{HTTP_ADDR_ENV, HttpError, prometheus};
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
