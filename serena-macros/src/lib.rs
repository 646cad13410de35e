//! The `#[consumer]` attribute of [serena](https://docs.rs/serena). Use it as
//! `serena::consumer`; this crate is an implementation detail of serena.
//!
//! ## Layout
//!
//! - `attr`: parsing the attribute's options into a config struct, every error on its token.
//! - `expand`: checking the function and generating the handler struct.
//! - `topology`: loading `topology.toml` at compile time with `serena-topology` (the runtime's
//!   loader and rules) and checking the queue against it.

mod attr;
mod expand;
mod topology;

use proc_macro::TokenStream;

/// Turns an `async fn` into a consumer a serena supervisor can run.
///
/// ```
/// use serena::worker::{ErrorPolicy, Handler, Json, State};
///
/// #[derive(serde::Deserialize)]
/// struct Order {
///     id: u64,
/// }
///
/// #[derive(Clone)]
/// struct App {
///     shop: &'static str,
/// }
///
/// /// Records an order.
/// #[serena::consumer(queue = "orders", prefetch = 20, on_error = "reject")]
/// async fn handle_order(Json(order): Json<Order>, State(app): State<App>) -> Result<(), String> {
///     if order.id == 0 {
///         return Err(format!("{}: order without an id", app.shop));
///     }
///     Ok(())
/// }
///
/// // `handle_order` is now a unit struct implementing `Handler` ...
/// let spec = handle_order.spec();
/// assert_eq!((&*spec.name, &*spec.queue, spec.prefetch), ("handle_order", "orders", Some(20)));
/// assert_eq!(spec.on_error, ErrorPolicy::Reject);
/// // ... and the function is still there, as `handle_order::handler`.
/// let run = handle_order::handler(Json(Order { id: 0 }), State(App { shop: "main" }));
/// # drop(run);
/// ```
///
/// # Options
///
/// | option | value | `ConsumerSpec` field |
/// | --- | --- | --- |
/// | `queue = "name"` | required: the queue to consume from | `queue` |
/// | `prefetch = 20` | `u16`: unacknowledged deliveries the broker sends ahead | `prefetch` |
/// | `concurrency = 4` | `usize`, at least 1: deliveries handled at once | `concurrency` |
/// | `tag = "name"` | the consumer tag (serena picks one otherwise) | `consumer_tag` |
/// | `exclusive` or `exclusive = true` | be the queue's only consumer | `exclusive` |
/// | `priority = 10` | `i32`, sent as `x-priority` | `priority` |
/// | `on_error = "retry"`, `"requeue"`, `"park"` or `"reject"` | what an `Err` does to the message (default retry: later by the queue's retry schedule, never at once; see `serena::worker`) | `on_error` |
/// | `topology = "path"` | the topology file to check, and the queue against | |
/// | `crate = "path"` | where serena is, for a crate that re-exports it (default `::serena`) | |
///
/// # The handler
///
/// Every argument is an extractor (`serena::worker::FromDelivery`): `Delivery`, `Bytes`,
/// `Json<T>`, `Headers`, `Properties`, `State<T>` or `Publisher`, and can be bound to any
/// irrefutable pattern (`Json(order): Json<Order>`). An argument that cannot be built from a
/// delivery makes it a poison message: rejected without requeue, and the function does not
/// run. The return type is `()`, `Outcome`, `Reply<T>` (answers the request: `T` is sent as
/// JSON to its `reply_to`, then the request is acknowledged) or a `Result` of one of these
/// with `E: Display` (`serena::worker::IntoOutcome`).
///
/// The function becomes a unit struct of the same name and visibility (its docs move to the
/// struct) implementing `serena::worker::Handler`, and stays callable as the associated
/// function `name::handler`, with its other attributes (`#[allow]`, ...). It must be a free,
/// non-generic `async fn`, and its future must be `Send`.
///
/// # Checking against the topology
///
/// With `topology = "path"`, relative to the directory of the crate's `Cargo.toml`, or when
/// a `topology.toml` sits there, the file is loaded at compile time by the loader serena runs
/// (`serena::topology::Topology::load`, every rule of `serena::topology::validate`): a file
/// with any problem fails the build, listing every problem with its line and column, on the
/// `topology` value (on the queue when the file was found by convention). The queue must then
/// be one of the file's queues: the `name` of a `[[queues]]` table, or a queue a retry
/// schedule adds (a delay queue `<queue>.retry.<delay>`, the park queue, `<queue>.parked`
/// unless named), or the build fails listing them. The `[connection]` block's `url` is not
/// parsed here: serena does that when it resolves the settings, where `SERENA_URL` may
/// replace it. Cargo rebuilds the crate when the file changes. (A default `topology.toml`
/// created after the last build is only noticed on the next rebuild.)
///
/// # Errors
///
/// Each mistake is a compile error on the token at fault: an unknown option (with the valid
/// ones listed), a repeated option, a value of the wrong type, a missing `queue`, a function
/// that is not `async`, is generic or takes `self`, a topology file with problems, and a queue
/// the topology does not have.
/// An argument type that is no extractor, or a return type that is no outcome, is reported by
/// the trait bound on that type.
#[proc_macro_attribute]
pub fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::consumer(attr.into(), item.into()).into()
}
