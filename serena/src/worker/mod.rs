//! The worker framework: `#[consumer]` handlers run by a supervisor.
//!
//! A worker is a topology, a few async functions annotated
//! `#[consumer(queue = "...")]`, and a `main` that hands them to a supervisor. Arguments of a
//! handler are extractors ([`FromDelivery`]); its return value becomes an [`Outcome`]
//! ([`IntoOutcome`]).

mod backoff;
mod failure;
mod handler;
mod stats;
mod supervisor;

pub use backoff::Backoff;
pub use failure::{Phase, TreeError, is_exclusive_use, is_permanent};
pub use handler::{
    ConsumerSpec, DeliveryContext, ErrorPolicy, FromDelivery, Handler, HandlerFuture, Headers,
    IntoOutcome, Json, Outcome, Properties, Publisher, Rejection, State, StateMap,
    StateRequirement,
};
pub use stats::{Readiness, Stats, SupervisorHandle};
pub use supervisor::{SetupFn, Supervisor, SupervisorError, shutdown_signal};

/// Items the `#[consumer]` expansion uses; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::{DeliveryContext, Outcome, Rejection};

    /// A delivery whose arguments could not be built: log it and reject it without requeue.
    pub fn poison(ctx: &DeliveryContext, rejection: Rejection) -> Outcome {
        tracing::warn!(
            queue = ctx.queue,
            delivery_tag = ctx.delivery.delivery_tag,
            reason = %rejection,
            "poison message rejected without requeue"
        );
        Outcome::Reject
    }
}
