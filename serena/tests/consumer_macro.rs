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
            name: "record_order".into(),
            queue: "orders".into(),
            prefetch: Some(50),
            concurrency: Some(4),
            consumer_tag: None,
            exclusive: false,
            priority: None,
            on_error: ErrorPolicy::Reject,
            stream_offset: None,
        }
    );
    assert_eq!(
        route.spec(),
        ConsumerSpec {
            consumer_tag: Some("router".into()),
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
    assert!(ctx.delivery.ack().is_err());
    assert!(
        ctx.publisher
            .publish("", "q", b"x", Default::default())
            .await
            .is_err()
    );
}

/// A library's books, shared with handlers as `State<Arc<Books>>`.
#[derive(Default)]
pub struct Books {
    lent: AtomicUsize,
}

/// Lends a book: needs the shared `Books`.
#[consumer(queue = "loans")]
async fn lend_book(body: Bytes, State(books): State<Arc<Books>>) {
    let _ = body;
    books.lent.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn handlers_list_the_state_they_take() {
    use serena::worker::StateRequirement;
    assert_eq!(
        lend_book.required_state(),
        [StateRequirement::of::<Arc<Books>>()]
    );
    assert_eq!(
        record_order.required_state(),
        [StateRequirement::of::<App>()]
    );
    assert!(route.required_state().is_empty());
    assert!(ping.required_state().is_empty());
    assert_eq!(
        lend_book.required_state()[0].type_name(),
        "alloc::sync::Arc<consumer_macro::Books>"
    );
}

/// A broker address where nothing listens: a port the system just gave out and took back.
fn closed_port() -> serena::ConnectionConfig {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    serena::ConnectionConfig::default()
        .with_host("127.0.0.1")
        .with_port(port)
}

#[tokio::test]
async fn a_missing_state_is_refused_before_connecting() {
    use serena::worker::{Supervisor, SupervisorError};
    // Nothing listens on the port: a supervisor that tried to connect would retry for ever,
    // so an error at once shows the check came first.
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        Supervisor::new(closed_port())
            .consumer(ping)
            .consumer(lend_book)
            .run_until(std::future::pending()),
    )
    .await
    .expect("refused at once")
    .expect_err("State<Arc<Books>> has no value");
    let SupervisorError::MissingState { handler, type_name } = &err else {
        panic!("expected MissingState, got {err:?}")
    };
    assert_eq!(
        (&**handler, *type_name),
        ("lend_book", "alloc::sync::Arc<consumer_macro::Books>")
    );
    assert_eq!(
        err.to_string(),
        "consumer \"lend_book\" takes State<alloc::sync::Arc<consumer_macro::Books>>, but no \
         alloc::sync::Arc<consumer_macro::Books> was registered: add .state(value) to the \
         supervisor"
    );
}

#[tokio::test]
async fn with_its_state_registered_the_supervisor_starts() {
    use serena::worker::{Phase, Readiness, Supervisor};
    let supervisor = Supervisor::new(closed_port())
        .consumer(lend_book)
        .state(Arc::new(Books::default()));
    let handle = supervisor.handle();
    let stop = Arc::new(tokio::sync::Notify::new());
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    // It got past the check and tried to connect: the refused connection is why it is not
    // ready.
    let error = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Readiness::Restarting { error, .. } = handle.readiness() {
                return error;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("tries to connect");
    assert_eq!(error.phase, Phase::Connect);
    stop.notify_one();
    run.await.expect("join").expect("a clean stop");
}
