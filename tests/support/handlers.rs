//! Handlers built from closures, for supervisor tests that vary behaviour at run time (the
//! `#[consumer]` macro builds the same [`Handler`] from a function).

use std::future::Future;
use std::sync::Arc;

use serena::Delivery;
use serena::worker::{ConsumerSpec, DeliveryContext, Handler, HandlerFuture, Outcome};

/// A [`Handler`] running a closure over each delivery.
pub struct FnHandler<F> {
    spec: ConsumerSpec,
    f: Arc<F>,
}

/// Builds a handler for `spec` from `f`.
pub fn handler_fn<F, Fut>(spec: ConsumerSpec, f: F) -> FnHandler<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FnHandler {
        spec,
        f: Arc::new(f),
    }
}

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn spec(&self) -> ConsumerSpec {
        self.spec.clone()
    }

    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a> {
        Box::pin((self.f)(ctx.delivery.clone()))
    }
}
