//! The example worker's order pipeline (`examples/worker.rs` and the root `topology.toml`) end
//! to end on the in-memory broker, without RabbitMQ: the real `#[consumer]` handlers under the
//! real supervisor, the topology's retry schedule (delay queues with a TTL) and parking, with
//! tokio's clock paused so the 1 s retry delay takes no time.

#[allow(dead_code)]
#[path = "../worker.rs"]
mod worker;

use std::sync::Arc;
use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable};
use serena::topology::Topology;
use serena::worker::Supervisor;
use serena_testing::MemoryBroker;

fn order(id: u64, amount_cents: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "customer": format!("customer-{id}"),
        "amount_cents": amount_cents,
    }))
    .expect("json")
}

#[tokio::test(start_paused = true)]
async fn orders_are_processed_retried_and_parked_in_memory() {
    let started = std::time::Instant::now();
    let broker = MemoryBroker::new();
    let topology = Topology::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
        .expect("topology.toml");
    let supervisor = Supervisor::new(broker.config())
        .topology(topology)
        .consumer(worker::process_order)
        .consumer(worker::escalate)
        .consumer(worker::park)
        .state(Arc::new(worker::Tally::default()));
    let mut handle = supervisor.handle();
    let stop = Arc::new(tokio::sync::Notify::new());
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    tokio::time::timeout(Duration::from_secs(30), handle.ready())
        .await
        .expect("ready in time");
    assert!(handle.is_ready(), "{:?}", handle.readiness());

    serena::open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        let json = || BasicProperties::default().with_content_type("application/json");
        // 1: processed at once; 3: the payment service fails on attempt 1, retried after 1 s;
        // 10: invalid, parked at once; 7: urgent, processed and escalated.
        for (id, amount) in [(1, 1_000), (3, 1_003), (10, -1)] {
            ch.basic_publish("orders", "order.created", order(id, amount), json())
                .await?;
        }
        let urgent = json().with_headers(FieldTable::new().with("priority", "urgent"));
        ch.basic_publish("orders", "order.created", order(7, 1_007), urgent)
            .await?;
        // Not JSON: a poison message, parked at once.
        ch.basic_publish("orders", "order.created", &b"not an order"[..], json())
            .await?;
        // No binding takes it: the alternate exchange keeps it in orders.unrouted.
        ch.basic_publish("orders", "invoice.paid", order(99, 1), json())
            .await?;
        Ok::<_, serena::Error>(())
    })
    .await
    .expect("published");

    assert!(
        broker.run_until_idle(Duration::from_secs(300)).await,
        "idle"
    );
    let stats = handle.stats();
    // 1, 3 (twice), 10, 7, the poison message; then the parked two through `park`; 7 through
    // `escalate`.
    assert_eq!(stats.retried, 1, "{stats:?}");
    assert_eq!(stats.parked, 2, "{stats:?}");
    assert_eq!(stats.delivered, 6 + 2 + 1, "{stats:?}");
    assert_eq!(stats.acked, 3 + 2 + 1, "{stats:?}");
    assert_eq!(broker.message_count("orders.work"), Some(0));
    assert_eq!(broker.message_count("orders.parking"), Some(0));
    assert_eq!(broker.message_count("orders.work.retry.1s"), Some(0));
    let unrouted = broker.messages("orders.unrouted").expect("declared");
    assert_eq!(unrouted.len(), 1);
    assert_eq!(unrouted[0].routing_key, "invoice.paid");
    // The audit stream (a plain queue in memory) saw every order event once, the retry not.
    assert_eq!(broker.message_count("audit.log"), Some(5));

    stop.notify_one();
    run.await.expect("joined").expect("clean stop");
    let took = started.elapsed();
    println!("pipeline on the in-memory broker: {took:?} of real time");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
