//! The main job: an order-processing worker built from `topology.toml` and three
//! `#[consumer]` handlers, run by a restarting supervisor.
//!
//! ```text
//! cargo run --example worker                  # run as a service until Ctrl-C / SIGTERM
//! cargo run --example worker -- --demo 200    # publish 200 demo orders, process them, exit
//! cargo run --example worker -- --http 127.0.0.1:9090   # and serve /metrics, /healthz, /readyz
//! ```
//!
//! `--http ADDR` (or `SERENA_HTTP_ADDR=ADDR`) serves the worker's Prometheus metrics and its
//! liveness and readiness probes on `ADDR`; it combines with `--demo`.
//!
//! The broker comes from `topology.toml`'s `[connection]` block, overridden by `SERENA_URL`.
//! In the demo, one order in ten is invalid: retrying cannot fix it, so its handler parks it in
//! `orders.parking` at once; one order in ten meets a flaky payment service on its first
//! attempt: the handler asks for a retry, `orders.work`'s retry schedule (`retry` in
//! `topology.toml`) holds it 1 s in `orders.work.retry.1s`, and it succeeds on attempt 2; one
//! message is not even JSON, a poison message parked at once; urgent orders also reach
//! `orders.urgent` through the headers exchange.

#[path = "shared/logs.rs"]
mod logs;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serena::proto::{BasicProperties, FieldTable};
use serena::topology::{ConnectionSettingsExt, Topology};
use serena::worker::{
    Attempt, Headers, Json, Outcome, Readiness, State, Supervisor, shutdown_signal,
};
use serena::{Error, consumer, open_connection};
use tokio::sync::Notify;

/// An order event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    id: u64,
    customer: String,
    amount_cents: i64,
}

/// What the demo counts, shared with the handlers as `State<Arc<Tally>>`.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    processed: AtomicU64,
    revenue_cents: AtomicU64,
    parked: AtomicU64,
    urgent: AtomicU64,
    changed: Notify,
}

/// Whether the demo's payment service fails for this order on this attempt: one order in ten,
/// on its first attempt only.
fn payment_fails(order: &Order, attempt: &Attempt) -> bool {
    order.id % 10 == 3 && attempt.number == 1
}

/// Processes an order: an invalid one is parked at once (no retry can fix it); one that meets
/// a failing payment service is retried later by `orders.work`'s retry schedule.
#[consumer(
    queue = "orders.work",
    prefetch = 50,
    concurrency = 8,
    topology = "../topology.toml"
)]
pub(crate) async fn process_order(
    Json(order): Json<Order>,
    State(tally): State<Arc<Tally>>,
    attempt: Attempt,
) -> Outcome {
    if order.amount_cents <= 0 {
        return Outcome::park(format!(
            "order {} has amount {}",
            order.id, order.amount_cents
        ));
    }
    if payment_fails(&order, &attempt) {
        return Outcome::retry(format!(
            "payment service timed out for order {} (attempt {})",
            order.id, attempt.number
        ));
    }
    tally.processed.fetch_add(1, Ordering::Relaxed);
    tally
        .revenue_cents
        .fetch_add(order.amount_cents as u64, Ordering::Relaxed);
    tally.changed.notify_one();
    Outcome::Ack
}

/// Urgent orders arrive here too, through the headers exchange.
#[consumer(queue = "orders.urgent", topology = "../topology.toml")]
pub(crate) async fn escalate(
    Json(order): Json<Order>,
    Headers(headers): Headers,
    State(tally): State<Arc<Tally>>,
) {
    let priority = headers
        .get("priority")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    tracing::info!(order = order.id, priority, "escalated");
    tally.urgent.fetch_add(1, Ordering::Relaxed);
    tally.changed.notify_one();
}

/// Orders that could not be processed, kept for a person to look at.
#[consumer(queue = "orders.parking", topology = "../topology.toml")]
pub(crate) async fn park(body: bytes::Bytes, State(tally): State<Arc<Tally>>) {
    tracing::info!(body = %String::from_utf8_lossy(&body), "parked");
    tally.parked.fetch_add(1, Ordering::Relaxed);
    tally.changed.notify_one();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Log to stderr, filtered by RUST_LOG (without it: info and up: connected, ready, restarts and why).
    logs::init(tracing_subscriber::filter::LevelFilter::INFO);
    let mut demo: Option<u64> = None;
    let mut http: Option<std::net::SocketAddr> = None;
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--demo" => {
                let n = args.next_if(|n| !n.starts_with("--"));
                demo = Some(
                    n.map_or(Ok(200), |n| n.parse())
                        .map_err(|_| "--demo takes a number of orders")?,
                );
            }
            "--http" => {
                let addr = args
                    .next()
                    .ok_or("--http takes an address such as 127.0.0.1:9090")?;
                http = Some(addr.parse().map_err(|_| {
                    format!("--http {addr:?} is not an address such as 127.0.0.1:9090")
                })?);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; try --demo 200 or --http 127.0.0.1:9090"
                )
                .into());
            }
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml");
    let topology = Topology::load(path)?;
    let tally = Arc::new(Tally::default());
    let supervisor = Supervisor::from_topology(topology)?
        .consumer(process_order)
        .consumer(escalate)
        .consumer(park)
        .state(tally.clone());
    // Without --http, SERENA_HTTP_ADDR turns the endpoint on (the supervisor reads it).
    let supervisor = match http {
        Some(addr) => supervisor.http(addr),
        None => supervisor,
    };
    let mut handle = supervisor.handle();

    let Some(orders) = demo else {
        println!("worker running; Ctrl-C to stop");
        supervisor.run().await?;
        println!("stopped: {:?}", handle.stats());
        return Ok(());
    };

    let started = Instant::now();
    let done = Arc::new(Notify::new());
    let run = tokio::spawn({
        let done = done.clone();
        supervisor.run_until(async move {
            tokio::select! {
                () = done.notified() => {}
                () = shutdown_signal() => {}
            }
        })
    });
    // `ready` also returns when the supervisor gave up; either way, say why it is not ready.
    let _ = tokio::time::timeout(Duration::from_secs(30), handle.ready()).await;
    if !handle.is_ready() {
        let why = match handle.readiness() {
            Readiness::Restarting { error, .. } => {
                format!("not ready within 30 s, still retrying: {error}")
            }
            Readiness::Stopped => match run.await? {
                Err(e) => format!("the worker gave up: {e}"),
                Ok(()) => "the worker was stopped".to_owned(),
            },
            other => format!("not ready within 30 s: {other:?}"),
        };
        done.notify_one();
        return Err(why.into());
    }
    let expected = publish_demo(orders).await?;
    println!(
        "published {orders} orders and one poison message; expecting {} processed ({} after a retry), {} parked, {} urgent",
        expected.processed, expected.retried, expected.parked, expected.urgent
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let notified = tally.changed.notified();
        let (p, k, u) = (
            tally.processed.load(Ordering::Relaxed),
            tally.parked.load(Ordering::Relaxed),
            tally.urgent.load(Ordering::Relaxed),
        );
        if p >= expected.processed && k >= expected.parked && u >= expected.urgent {
            break;
        }
        if Instant::now() > deadline {
            done.notify_one();
            return Err(format!("timed out with {p} processed, {k} parked, {u} urgent").into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    done.notify_one();
    run.await??;
    let stats = handle.stats();
    println!(
        "done in {:.2} s: {} processed ({:.2} revenue), {} parked, {} urgent",
        started.elapsed().as_secs_f64(),
        tally.processed.load(Ordering::Relaxed),
        tally.revenue_cents.load(Ordering::Relaxed) as f64 / 100.0,
        tally.parked.load(Ordering::Relaxed),
        tally.urgent.load(Ordering::Relaxed),
    );
    println!(
        "supervisor: delivered {}, acked {}, retried {}, parked {}, requeued {}, rejected {}, panicked {}, restarts {}",
        stats.delivered,
        stats.acked,
        stats.retried,
        stats.parked,
        stats.requeued,
        stats.rejected,
        stats.panicked,
        stats.restarts
    );
    Ok(())
}

/// How many outcomes the demo batch should produce.
struct Expected {
    processed: u64,
    retried: u64,
    parked: u64,
    urgent: u64,
}

/// Publishes `orders` demo orders to the `orders` exchange (every tenth invalid, every tenth
/// meeting the flaky payment service, every seventh urgent) plus one message that is not
/// JSON, all with confirms.
async fn publish_demo(orders: u64) -> Result<Expected, Error> {
    let config = Topology::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
        .map_err(|e| Error::Config(e.to_string()))?
        .connection
        .resolve()?;
    open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            let mut expected = Expected {
                processed: 0,
                retried: 0,
                parked: 1,
                urgent: 0,
            };
            let mut confirms = Vec::new();
            for id in 1..=orders {
                let invalid = id % 10 == 0;
                let urgent = id % 7 == 0;
                let order = Order {
                    id,
                    customer: format!("customer-{}", id % 13),
                    amount_cents: if invalid { -1 } else { 1_000 + id as i64 },
                };
                let mut headers = FieldTable::new();
                if urgent {
                    headers.insert("priority", "urgent");
                    expected.urgent += 1;
                }
                if invalid {
                    expected.parked += 1;
                } else {
                    expected.processed += 1;
                    if id % 10 == 3 {
                        expected.retried += 1;
                    }
                }
                let props = BasicProperties::default()
                    .with_content_type("application/json")
                    .with_message_id(format!("order-{id}"))
                    .with_headers(headers);
                let body = serde_json::to_vec(&order).expect("an order serializes");
                confirms.push(
                    ch.basic_publish_with(
                        "orders",
                        "order.created",
                        body,
                        props,
                        Default::default(),
                    )
                    .await?,
                );
            }
            confirms.push(
                ch.basic_publish_with(
                    "orders",
                    "order.created",
                    b"this is not an order".as_slice(),
                    BasicProperties::default().with_content_type("application/json"),
                    Default::default(),
                )
                .await?,
            );
            for c in confirms {
                c.await?;
            }
            Ok(expected)
        })
        .await
    })
    .await
}
