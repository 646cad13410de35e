//! What `#[consumer]` generates, seen from a user's crate: the spec each attribute declares,
//! the handler struct's traits, and the function kept as `name::handler`.
//!
//! The function is checked through `name::handler`, the outcome through `IntoOutcome` with the
//! spec's error policy, and `Handler::call` end to end on a `DeliveryContext::detached`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serena::consumer;
use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::worker::{
    ConsumerSpec, ErrorPolicy, Handler, Headers, IntoOutcome, Json, Outcome, Properties, State,
};

/// An order message (public, like the handler that takes it).
#[derive(Debug, serde::Deserialize, PartialEq)]
pub struct Order {
    id: u64,
    amount_cents: u64,
}

/// The shared state.
#[derive(Clone, Default)]
pub struct App {
    handled: Arc<AtomicUsize>,
}

/// Why an order was refused.
#[derive(Debug)]
pub enum ShopError {
    /// The order has nothing in it.
    Empty(u64),
}

impl fmt::Display for ShopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShopError::Empty(id) => write!(f, "order {id} is empty"),
        }
    }
}

/// Records an order; an empty one is refused for good.
#[consumer(queue = "orders", prefetch = 50, concurrency = 4, on_error = "reject")]
pub async fn record_order(
    Json(order): Json<Order>,
    State(app): State<App>,
) -> Result<(), ShopError> {
    if order.amount_cents == 0 {
        return Err(ShopError::Empty(order.id));
    }
    app.handled.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Routes on a header: a retry header asks for another try.
#[consumer(queue = "routing", tag = "router", exclusive, priority = -3)]
async fn route(Headers(headers): Headers, Properties(props): Properties) -> Outcome {
    if headers.contains_key("x-retry") {
        Outcome::Requeue
    } else if props.content_type.as_deref() == Some("application/json") {
        Outcome::Ack
    } else {
        Outcome::Reject
    }
}

/// Fails with the default policy.
#[consumer(queue = "audit")]
pub(crate) async fn audit(body: Bytes) -> Result<Outcome, String> {
    if body.is_empty() {
        Err("empty audit record".to_owned())
    } else {
        Ok(Outcome::Ack)
    }
}

#[consumer(queue = "pings", on_error = "requeue", exclusive = false)]
async fn ping() {}

/// What `call` does with the function's value: convert it under the spec's policy.
fn outcome_of<H: Handler>(handler: H, value: impl IntoOutcome) -> Outcome {
    value.into_outcome(handler.spec().on_error)
}

fn made_by_default<H: Handler + Default>() -> H {
    H::default()
}

#[test]
fn specs_follow_the_attributes() {
    assert_eq!(
        record_order.spec(),
        ConsumerSpec {
            name: "record_order",
            queue: "orders",
            prefetch: Some(50),
            concurrency: Some(4),
            consumer_tag: None,
            exclusive: false,
            priority: None,
            on_error: ErrorPolicy::Reject,
        }
    );
    assert_eq!(
        route.spec(),
        ConsumerSpec {
            consumer_tag: Some("router"),
            exclusive: true,
            priority: Some(-3),
            ..ConsumerSpec::new("route", "routing")
        }
    );
    assert_eq!(audit.spec(), ConsumerSpec::new("audit", "audit"));
    assert_eq!(
        ping.spec(),
        ConsumerSpec {
            on_error: ErrorPolicy::Requeue,
            ..ConsumerSpec::new("ping", "pings")
        }
    );
}

#[test]
fn handlers_are_plain_values() {
    // Unit structs: Copy, Default, Debug (by name), usable as trait objects.
    let all: Vec<Box<dyn Handler>> = vec![
        Box::new(record_order),
        Box::new(route),
        Box::new(audit),
        Box::new(made_by_default::<ping>()),
    ];
    let queues: Vec<_> = all.iter().map(|h| h.spec().queue).collect();
    assert_eq!(queues, ["orders", "routing", "audit", "pings"]);
    let copy = record_order;
    assert_eq!(
        format!("{copy:?} {:?}", record_order),
        "record_order record_order"
    );
}

#[tokio::test]
async fn the_function_runs_as_written() {
    let app = App::default();
    let good = Order {
        id: 1,
        amount_cents: 250,
    };
    let value = record_order::handler(Json(good), State(app.clone())).await;
    assert!(value.is_ok());
    assert_eq!(app.handled.load(Ordering::SeqCst), 1);
    assert_eq!(outcome_of(record_order, value), Outcome::Ack);

    let empty = Order {
        id: 2,
        amount_cents: 0,
    };
    let value = record_order::handler(Json(empty), State(app.clone())).await;
    assert_eq!(value.as_ref().unwrap_err().to_string(), "order 2 is empty");
    assert_eq!(app.handled.load(Ordering::SeqCst), 1);
    // on_error = "reject": a failed order is dead-lettered, not retried.
    assert_eq!(outcome_of(record_order, value), Outcome::Reject);
}

#[tokio::test]
async fn outcomes_pass_through() {
    let json = BasicProperties::default().with_content_type("application/json");
    let retry = FieldTable::new().with("x-retry", FieldValue::Bool(true));

    let value = route::handler(Headers(retry), Properties(json.clone())).await;
    assert_eq!(outcome_of(route, value), Outcome::Requeue);
    let value = route::handler(Headers(FieldTable::new()), Properties(json)).await;
    assert_eq!(outcome_of(route, value), Outcome::Ack);
    let value = route::handler(Headers::default(), Properties::default()).await;
    assert_eq!(outcome_of(route, value), Outcome::Reject);
}

#[tokio::test]
async fn errors_follow_the_default_policy() {
    let value = audit::handler(Bytes::from_static(b"entry")).await;
    assert_eq!(outcome_of(audit, value), Outcome::Ack);
    let value = audit::handler(Bytes::new()).await;
    // No on_error: retry later, with the error as the reason.
    assert_eq!(
        outcome_of(audit, value),
        Outcome::retry("empty audit record")
    );

    let () = ping::handler().await;
    assert_eq!(outcome_of(ping, ()), Outcome::Ack);
}

/// A detached context carrying `body` as JSON and the shared `App`.
fn json_context(body: &'static [u8], app: App) -> serena::worker::DeliveryContext {
    let mut state = serena::worker::StateMap::default();
    state.insert(app);
    serena::worker::DeliveryContext::detached(
        serena::Delivery::detached(
            "shop",
            "order.created",
            BasicProperties::default().with_content_type("application/json"),
            body,
        ),
        state,
    )
}

#[tokio::test]
async fn call_runs_extraction_the_function_and_the_policy_end_to_end() {
    let app = App::default();
    // A good order is handled and acked.
    let ctx = json_context(br#"{"id":1,"amount_cents":250}"#, app.clone());
    assert_eq!(record_order.call(&ctx).await, Outcome::Ack);
    assert_eq!(app.handled.load(Ordering::SeqCst), 1);
    // A body that is not JSON is poison: parked without running the function (rejected
    // when its queue has no retry schedule), never retried.
    let ctx = json_context(b"{oops", app.clone());
    assert!(matches!(
        record_order.call(&ctx).await,
        Outcome::Park { reason } if reason.contains("not valid JSON")
    ));
    assert_eq!(app.handled.load(Ordering::SeqCst), 1);
    // A missing state is refused the same way.
    let ctx = serena::worker::DeliveryContext::detached(
        serena::Delivery::detached(
            "shop",
            "k",
            Default::default(),
            &br#"{"id":2,"amount_cents":1}"#[..],
        ),
        serena::worker::StateMap::default(),
    );
    assert!(matches!(
        record_order.call(&ctx).await,
        Outcome::Park { reason } if reason.contains("no state of type")
    ));
    // Settling a detached delivery fails instead of pretending.
    assert!(ctx.delivery.ack().await.is_err());
    assert!(
        ctx.publisher
            .publish("", "q", b"x", Default::default())
            .await
            .is_err()
    );
}
