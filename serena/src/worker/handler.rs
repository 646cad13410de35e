//! Handlers, extractors and outcomes: the contract between `#[consumer]` functions and the
//! supervisor that runs them.
//!
//! `#[consumer(queue = "orders")] async fn f(a: A, b: B) -> R` expands to a unit struct `f`
//! implementing [`Handler`]: for each delivery it builds every argument with
//! [`FromDelivery`] (a failed extraction is a poison message, rejected without requeue), runs
//! the function, and turns `R` into an [`Outcome`] with [`IntoOutcome`] and the consumer's
//! [`ErrorPolicy`].

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::client::{Delivery, IntoBody, ReliablePublisher, StreamOffset};
use crate::error::{Error, Result};
use crate::proto::{BasicProperties, FieldTable};
use crate::topology::RetrySchedule;

use super::metrics::{self, PublisherMetrics};

/// What happens to a message after its handler ran. See the [module docs](super#failures)
/// for what `Retry` and `Park` do with and without a retry schedule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Acknowledge: the broker forgets the message.
    Ack,
    /// Try again later: by the queue's retry schedule (the message waits its delay in a delay
    /// queue, and is parked after the last attempt), or, for a queue without one, a few times
    /// in the worker with a growing pause, then rejected. The reason travels with the message.
    Retry {
        /// Why it failed (the handler's error).
        reason: String,
    },
    /// Put the message back in its queue at once, for an immediate redelivery. Only for a
    /// cause known to be gone: on a message that keeps failing it is a hot loop.
    Requeue,
    /// Give up on the message now: to the schedule's parking queue with the reason, or, for a
    /// queue without a schedule, rejected (its dead-letter exchange takes it).
    Park {
        /// Why it is given up (the handler's error).
        reason: String,
    },
    /// Refuse the message without requeue: the queue's dead-letter exchange takes it, or it
    /// is dropped.
    Reject,
    /// Answer the request: publish `body` (JSON, `content_type` `application/json`) through
    /// the default exchange to the request's `reply_to` with its `correlation_id`, wait for
    /// the broker's confirm, then acknowledge the request. What a handler returning
    /// [`Reply<T>`] gives; see [`Reply`] for requests without `reply_to` and replies that
    /// cannot be sent.
    Reply {
        /// The reply's body, JSON.
        body: Bytes,
    },
}

impl Outcome {
    /// [`Outcome::Retry`] for `reason`.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Outcome::Retry {
            reason: reason.to_string(),
        }
    }

    /// [`Outcome::Park`] for `reason`.
    pub fn park(reason: impl fmt::Display) -> Self {
        Outcome::Park {
            reason: reason.to_string(),
        }
    }
}

/// What a handler's `Err` means for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ErrorPolicy {
    /// Retry it later ([`Outcome::Retry`]): the default, which never loops hot.
    #[default]
    Retry,
    /// Requeue it at once for an immediate redelivery ([`Outcome::Requeue`]).
    Requeue,
    /// Park it now ([`Outcome::Park`]).
    Park,
    /// Reject it without requeue, so the queue's dead-letter exchange takes it.
    Reject,
}

impl ErrorPolicy {
    /// The outcome of a handler that failed for `reason` under this policy.
    pub fn outcome(self, reason: impl fmt::Display) -> Outcome {
        match self {
            ErrorPolicy::Retry => Outcome::retry(reason),
            ErrorPolicy::Requeue => Outcome::Requeue,
            ErrorPolicy::Park => Outcome::park(reason),
            ErrorPolicy::Reject => Outcome::Reject,
        }
    }
}

/// How a consumer is declared: what the `#[consumer(...)]` attribute said.
///
/// The names are owned or `'static` ([`Cow`]): a handler built at run time gives `String`s
/// (`ConsumerSpec::new(format!("worker-{n}"), queue)`), `#[consumer]` gives literals in a
/// constant ([`ConsumerSpec::from_static`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The handler's name (the function's name).
    pub name: Cow<'static, str>,
    /// The queue to consume from.
    pub queue: Cow<'static, str>,
    /// Prefetch for this consumer's channel; `None` takes the connection's default
    /// (`channel_buffer_size / 3`).
    pub prefetch: Option<u16>,
    /// Handlers in flight at once (default 1), independent of the prefetch.
    pub concurrency: Option<usize>,
    /// Consumer tag; serena picks one when `None`.
    pub consumer_tag: Option<Cow<'static, str>>,
    /// Ask to be the queue's only consumer.
    pub exclusive: bool,
    /// Consumer priority (`x-priority`).
    pub priority: Option<i32>,
    /// What an `Err` from the handler does to the message.
    pub on_error: ErrorPolicy,
    /// For a stream queue: where in the log to start (`x-stream-offset`). RabbitMQ keeps no
    /// position for the consumer, so every start of it, restarts included, begins here again.
    /// A stream consumer needs a prefetch above 0: `Some(0)` with an offset is refused with
    /// [`Error::Config`](crate::Error::Config) before anything is sent.
    pub stream_offset: Option<StreamOffset>,
}

impl ConsumerSpec {
    /// A spec with defaults for everything but the names, each a `&'static str` or a
    /// `String`.
    ///
    /// ```
    /// use serena::worker::ConsumerSpec;
    ///
    /// let queue = format!("orders.{}", "eu");
    /// let spec = ConsumerSpec::new("orders", queue);
    /// assert_eq!((&*spec.name, &*spec.queue), ("orders", "orders.eu"));
    /// ```
    pub fn new(name: impl Into<Cow<'static, str>>, queue: impl Into<Cow<'static, str>>) -> Self {
        ConsumerSpec {
            name: name.into(),
            queue: queue.into(),
            ..ConsumerSpec::from_static("", "")
        }
    }

    /// [`new`](Self::new) for names known at compile time, in a `const` context: what
    /// `#[consumer]` generates.
    ///
    /// ```
    /// use serena::worker::ConsumerSpec;
    ///
    /// const SPEC: ConsumerSpec = ConsumerSpec::from_static("audit", "orders.audit");
    /// assert_eq!(SPEC.queue, "orders.audit");
    /// ```
    pub const fn from_static(name: &'static str, queue: &'static str) -> Self {
        ConsumerSpec {
            name: Cow::Borrowed(name),
            queue: Cow::Borrowed(queue),
            prefetch: None,
            concurrency: None,
            consumer_tag: None,
            exclusive: false,
            priority: None,
            on_error: ErrorPolicy::Retry,
            stream_offset: None,
        }
    }
}

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A consumer the supervisor can run. `#[consumer]` implements it; implement it by hand for
/// handlers built at run time.
pub trait Handler: Send + Sync + 'static {
    /// The consumer's declaration.
    fn spec(&self) -> ConsumerSpec;
    /// Handles one delivery.
    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a>;
    /// The shared state the handler takes as [`State<T>`] arguments: the supervisor refuses to
    /// start (before it connects) when one of these types was not registered with its
    /// `state(..)`, instead of rejecting every delivery as poison. `#[consumer]` lists every
    /// argument written `State<T>`; a hand-written handler that reads state lists it here.
    ///
    /// The check cannot happen at compile time: state is registered on the supervisor at run
    /// time, after the handlers are written, and any code path may register it.
    fn required_state(&self) -> Vec<StateRequirement> {
        Vec::new()
    }
}

/// A type of shared state a handler needs: see [`Handler::required_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateRequirement {
    type_id: TypeId,
    type_name: &'static str,
}

impl StateRequirement {
    /// The requirement of a `State<S>` argument.
    pub fn of<S: Clone + Send + Sync + 'static>() -> Self {
        StateRequirement {
            type_id: TypeId::of::<S>(),
            type_name: std::any::type_name::<S>(),
        }
    }

    /// The type's name, as `std::any::type_name` gives it.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// True when `state` holds a value of the type.
    pub fn is_met_by(&self, state: &StateMap) -> bool {
        state.values.contains_key(&self.type_id)
    }
}

/// Shared values handlers receive through [`State`], keyed by type.
#[derive(Default, Clone)]
pub struct StateMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap")
            .field("values", &self.values.len())
            .finish()
    }
}

impl StateMap {
    /// Adds (or replaces) the value of type `S`.
    pub fn insert<S: Clone + Send + Sync + 'static>(&mut self, value: S) {
        self.values.insert(TypeId::of::<S>(), Arc::new(value));
    }

    /// The value of type `S`, if one was added.
    pub fn get<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.values
            .get(&TypeId::of::<S>())
            .and_then(|v| v.downcast_ref::<S>())
            .cloned()
    }
}

/// Everything a handler can draw its arguments from.
#[derive(Debug)]
pub struct DeliveryContext {
    /// The message.
    pub delivery: Delivery,
    /// Shared state registered with the supervisor.
    pub state: Arc<StateMap>,
    /// Publishing with confirms from inside a handler.
    pub publisher: Publisher,
    /// The queue the message came from.
    pub queue: Arc<str>,
    /// The queue's retry schedule, when it has one.
    pub(crate) schedule: Option<Arc<RetrySchedule>>,
    /// Attempts made at this message in this worker before this one (retries without a
    /// schedule), and why the first and the latest of them failed (see
    /// [`Attempt`](super::Attempt)).
    pub(crate) retried_here: u32,
    pub(crate) first_failure: Option<String>,
    pub(crate) last_failure: Option<String>,
}

impl DeliveryContext {
    /// A context for unit tests of handlers: `delivery` (see [`Delivery::detached`]), the
    /// shared `state`, and a [`Publisher::detached`].
    ///
    /// ```
    /// use serena::Delivery;
    /// use serena::worker::{DeliveryContext, StateMap};
    ///
    /// let ctx = DeliveryContext::detached(
    ///     Delivery::detached("orders", "order.created", Default::default(), &b"{}"[..]),
    ///     StateMap::default(),
    /// );
    /// assert_eq!(&ctx.delivery.body[..], b"{}");
    /// ```
    pub fn detached(delivery: Delivery, state: StateMap) -> Self {
        DeliveryContext {
            delivery,
            state: Arc::new(state),
            publisher: Publisher::detached(),
            queue: Arc::from(""),
            schedule: None,
            retried_here: 0,
            first_failure: None,
            last_failure: None,
        }
    }
}

/// Why an argument could not be built from a delivery. The message is a poison message: it
/// is rejected without requeue (so it cannot be redelivered forever) and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What was wrong, for the log.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Builds one handler argument from a delivery.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a `#[consumer]` handler argument",
    label = "not an extractor",
    note = "arguments must be extractors: `Delivery`, `Bytes`, `Json<T>`, `Headers`, `Properties`, `State<T>`, `Publisher` or `Attempt`"
)]
pub trait FromDelivery: Sized {
    /// Builds the argument, or rejects the message.
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection>;
}

impl FromDelivery for Delivery {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        Ok(ctx.delivery.clone())
    }
}

impl FromDelivery for Bytes {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        Ok(ctx.delivery.body.clone())
    }
}

/// The body decoded from JSON. A message whose content type is set to something other than
/// JSON, or whose body does not decode, is a poison message.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromDelivery for Json<T> {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        if let Some(ct) = &ctx.delivery.properties.content_type {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !(essence.is_empty()
                || essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json")))
            {
                return Err(Rejection {
                    reason: format!("content type {ct:?} is not JSON"),
                });
            }
        }
        serde_json::from_slice(&ctx.delivery.body)
            .map(Json)
            .map_err(|e| Rejection {
                reason: format!(
                    "body is not valid JSON for {}: {e}",
                    std::any::type_name::<T>()
                ),
            })
    }
}

/// The message's headers table (empty when it has none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Headers(pub FieldTable);

impl FromDelivery for Headers {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        Ok(Headers(
            ctx.delivery.properties.headers.clone().unwrap_or_default(),
        ))
    }
}

/// The message's properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties(pub BasicProperties);

impl FromDelivery for Properties {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        Ok(Properties((*ctx.delivery.properties).clone()))
    }
}

/// Shared state of type `S`, registered with the supervisor's `state(..)`.
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

impl<S: Clone + Send + Sync + 'static> FromDelivery for State<S> {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        // A missing state is a wiring mistake, not a bad message; the supervisor checks
        // every handler's `required_state` before it connects, so this only guards
        // hand-written handlers that do not list theirs.
        ctx.state.get::<S>().map(State).ok_or_else(|| Rejection {
            reason: format!(
                "no state of type {} was registered with the supervisor",
                std::any::type_name::<S>()
            ),
        })
    }
}

/// Publishes with confirms from inside a handler. One per supervisor, on a connection of its
/// own (RabbitMQ's advice: flow control on a publishing connection must not throttle the
/// consumers), built on [`ReliablePublisher`]: it reconnects by itself and republishes what
/// was not confirmed, independently of the consumers' restarts.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// `None` for a [`detached`](Self::detached) publisher.
    inner: Option<ReliablePublisher>,
    metrics: PublisherMetrics,
}

impl Publisher {
    pub(crate) fn new(inner: ReliablePublisher) -> Self {
        Publisher {
            inner: Some(inner),
            metrics: PublisherMetrics::new(None),
        }
    }

    /// Counts this publisher's publishes under the `connection` label (feature `metrics`).
    pub(crate) fn metrics_for(mut self, connection: Option<&str>) -> Self {
        self.metrics = PublisherMetrics::new(connection);
        self
    }

    /// A publisher with no connection, for unit tests of handlers: publishing fails with
    /// [`Error::Closed`].
    pub fn detached() -> Self {
        Publisher {
            inner: None,
            metrics: PublisherMetrics::new(None),
        }
    }

    /// Publishes `body` and waits for the broker's confirm (mandatory, so an unroutable
    /// message is an error), across reconnects of the publisher's connection. The errors
    /// are [`ReliablePublisher::publish`]'s.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<()> {
        let inner = self.inner.as_ref().ok_or(Error::Closed("connection"))?;
        // The trace goes on in the consumer of this message (feature `otel`).
        #[cfg(feature = "otel")]
        let properties = crate::otel::with_current_context(properties);
        let began = metrics::now();
        let result = inner.publish(exchange, routing_key, body, properties).await;
        self.metrics.published(began, &result);
        result
    }

    /// The reliable publisher underneath (`None` when [`detached`](Self::detached)): its
    /// state and counters.
    pub fn reliable(&self) -> Option<&ReliablePublisher> {
        self.inner.as_ref()
    }

    /// Sends a reply to the request `request`: `body` with `properties` (their
    /// `correlation_id` set to the request's) through the default exchange to the request's
    /// `reply_to`, and waits for the broker's confirm. `Ok(false)` when the request has no
    /// `reply_to` (nothing is sent).
    ///
    /// The reply is not `mandatory`: RabbitMQ (3.10, watched) returns a mandatory publish to
    /// a direct reply-to name with 312 NO_ROUTE even though it delivers it, since the name is
    /// no queue. A reply whose caller is gone is dropped by the broker.
    pub async fn reply(
        &self,
        request: &Delivery,
        body: impl IntoBody,
        properties: BasicProperties,
    ) -> Result<bool> {
        let Some(reply_to) = request.properties.reply_to.as_deref() else {
            return Ok(false);
        };
        let properties = match &request.properties.correlation_id {
            Some(id) => properties.with_correlation_id(id.clone()),
            None => properties,
        };
        let inner = self.inner.as_ref().ok_or(Error::Closed("connection"))?;
        // The caller's trace goes on through the reply (feature `otel`).
        #[cfg(feature = "otel")]
        let properties = crate::otel::with_current_context(properties);
        let began = metrics::now();
        let result = inner
            .publish_message("", reply_to, body.into_bytes(), properties, false)
            .await;
        self.metrics.published(began, &result);
        result.map(|()| true)
    }

    /// Publishes `value` as JSON (`content_type` `application/json`).
    pub async fn publish_json<T: serde::Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        value: &T,
    ) -> Result<()> {
        let body = serde_json::to_vec(value)?;
        self.publish(
            exchange,
            routing_key,
            body,
            BasicProperties::default().with_content_type("application/json"),
        )
        .await
    }
}

impl FromDelivery for Publisher {
    fn from_delivery(ctx: &DeliveryContext) -> Result<Self, Rejection> {
        Ok(ctx.publisher.clone())
    }
}

/// Turns a handler's return value into an [`Outcome`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a `#[consumer]` handler",
    note = "return `()`, an `Outcome`, a `Reply<T>` (to answer a request; `T: Serialize`), or a `Result` of one of these whose `E: Display`"
)]
pub trait IntoOutcome {
    /// The outcome, given what an error means for this consumer.
    fn into_outcome(self, on_error: ErrorPolicy) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self, _: ErrorPolicy) -> Outcome {
        Outcome::Ack
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self, _: ErrorPolicy) -> Outcome {
        self
    }
}

/// A handler's answer to a request: `T` is sent as JSON to the request's `reply_to`, with its
/// `correlation_id`, and the request is acknowledged only once the broker confirmed the reply
/// ([`Outcome::Reply`]). The caller is typically an [`RpcClient`](crate::RpcClient) over
/// direct reply-to; any requester that sets `reply_to` works.
///
/// ```
/// use serena::worker::{Json, Reply};
///
/// #[derive(serde::Deserialize)]
/// struct Quote { sku: String }
///
/// #[serena::consumer(queue = "prices")]
/// async fn price(Json(quote): Json<Quote>) -> Result<Reply<u64>, String> {
///     match quote.sku.as_str() {
///         "A-1" => Ok(Reply(1250)),
///         other => Err(format!("no price for {other}")),
///     }
/// }
/// ```
///
/// - A request without `reply_to` is handled all the same: the reply is dropped (a WARN
///   event says so) and the request acknowledged.
/// - A reply whose caller is gone (timed out, disconnected) is dropped by the broker, and the
///   request acknowledged all the same: it was answered, and handling it again would not
///   bring its caller back.
/// - A reply that could not be published (the worker's connection failed, the broker nacked
///   it) leaves the request unacknowledged: it goes back to its queue, to be answered again.
/// - A value that cannot be encoded as JSON is a failure of the handler: the consumer's
///   [`ErrorPolicy`] decides.
/// - A handler's `Err` sends no reply; its caller sees a timeout. To let the caller see the
///   failure, reply with it: `Reply<Result<T, String>>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T>(pub T);

impl<T: serde::Serialize> IntoOutcome for Reply<T> {
    fn into_outcome(self, on_error: ErrorPolicy) -> Outcome {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Outcome::Reply { body: body.into() },
            Err(e) => {
                tracing::warn!(error = %e, ?on_error, "the handler's reply is not encodable as JSON");
                on_error.outcome(format_args!("reply not encodable as JSON: {e}"))
            }
        }
    }
}

impl<T: IntoOutcome, E: fmt::Display> IntoOutcome for std::result::Result<T, E> {
    fn into_outcome(self, on_error: ErrorPolicy) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(on_error),
            Err(e) => {
                tracing::warn!(error = %e, ?on_error, "handler failed");
                on_error.outcome(e)
            }
        }
    }
}
