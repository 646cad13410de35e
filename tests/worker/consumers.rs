//! `#[consumer]` handlers end to end against RabbitMQ: typed JSON bodies, shared state,
//! publishing from a handler, `on_error = "reject"` dead-lettering, and poison messages; and
//! a handler that fails every message (default `requeue`) on a quorum queue with a delivery
//! limit: each of its messages is tried up to the limit and then dead-lettered, while a
//! second consumer of the same supervisor keeps flowing.
//!
//! The macro takes queue names as literals, so these queues have fixed names; each test
//! deletes and redeclares its own queues first, and no two tests share a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable};
use serena::worker::{Json, Publisher, State, Supervisor};
use serena::{ConnectionConfig, Error, QueueDeclareOptions, consumer, open_connection};
use tokio::sync::Notify;

const WORK: &str = "serena-test.consumers.work";
const DEAD: &str = "serena-test.consumers.dead";
const RECEIPTS: &str = "serena-test.consumers.receipts";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Payment {
    id: u64,
    cents: i64,
}

#[derive(Default)]
struct Seen {
    paid: AtomicU64,
    receipts: AtomicU64,
    changed: Notify,
}

#[consumer(
    queue = "serena-test.consumers.work",
    on_error = "reject",
    concurrency = 4
)]
async fn take_payment(
    Json(p): Json<Payment>,
    State(seen): State<Arc<Seen>>,
    publisher: Publisher,
) -> Result<(), String> {
    if p.cents < 0 {
        return Err(format!("payment {} is negative", p.id));
    }
    publisher
        .publish_json("", RECEIPTS, &serde_json::json!({ "payment": p.id }))
        .await
        .map_err(|e| e.to_string())?;
    seen.paid.fetch_add(1, Ordering::SeqCst);
    seen.changed.notify_one();
    Ok(())
}

#[consumer(queue = "serena-test.consumers.receipts")]
async fn count_receipt(body: bytes::Bytes, State(seen): State<Arc<Seen>>) {
    assert!(body.starts_with(b"{\"payment\":"));
    seen.receipts.fetch_add(1, Ordering::SeqCst);
    seen.changed.notify_one();
}

async fn reset_and_publish(count: u64) {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            for q in [WORK, DEAD, RECEIPTS] {
                ch.queue_delete(q, false, false).await?;
            }
            ch.queue_declare(DEAD, Default::default()).await?;
            ch.queue_declare(RECEIPTS, Default::default()).await?;
            ch.queue_declare(
                WORK,
                QueueDeclareOptions::default().with_arguments(
                    FieldTable::new()
                        .with("x-dead-letter-exchange", "")
                        .with("x-dead-letter-routing-key", DEAD),
                ),
            )
            .await?;
            let json = BasicProperties::default().with_content_type("application/json");
            for id in 0..count {
                let cents = if id % 5 == 0 { -1 } else { 100 };
                let body = serde_json::to_vec(&Payment { id, cents }).expect("json");
                ch.basic_publish("", WORK, body, json.clone()).await?;
            }
            // Two poison messages: not JSON, and JSON under another content type.
            ch.basic_publish("", WORK, b"{not json", json.clone())
                .await?;
            ch.basic_publish(
                "",
                WORK,
                br#"{"id":1,"cents":1}"#,
                BasicProperties::default().with_content_type("text/plain"),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

async fn depth(queue: &str) -> u32 {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            let ok = ch
                .queue_declare(queue, QueueDeclareOptions::default().with_passive(true))
                .await?;
            Ok::<_, Error>(ok.message_count)
        })
        .await
    })
    .await
    .expect("connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handlers_state_publishing_rejects_and_poison() {
    reset_and_publish(50).await;
    let seen = Arc::new(Seen::default());
    let sup = Supervisor::new(ConnectionConfig::default())
        .consumer(take_payment)
        .consumer(count_receipt)
        .state(seen.clone());
    let handle = sup.handle();
    let done = Arc::new(Notify::new());
    let waiter = done.clone();
    let watcher = {
        let (seen, handle) = (seen.clone(), handle.clone());
        async move {
            loop {
                let changed = seen.changed.notified();
                // The poison messages come last: wait for their rejects too.
                if seen.paid.load(Ordering::SeqCst) == 40
                    && seen.receipts.load(Ordering::SeqCst) == 40
                    && handle.stats().rejected == 12
                {
                    done.notify_one();
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
            }
        }
    };
    let (run, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            sup.run_until(async move { waiter.notified().await }),
            watcher
        )
    })
    .await
    .expect("all payments and receipts within 30 s");
    run.expect("clean stop");
    let stats = handle.stats();
    // 40 good payments and their 40 receipts acked; 10 negative ones and 2 poison rejected.
    assert_eq!(stats.acked, 80, "{stats:?}");
    assert_eq!(stats.rejected, 12, "{stats:?}");
    assert_eq!(stats.requeued, 0, "{stats:?}");
    assert_eq!(
        depth(DEAD).await,
        12,
        "rejected messages are dead-lettered, not redelivered"
    );
    assert_eq!(depth(WORK).await, 0);
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            for q in [WORK, DEAD, RECEIPTS] {
                ch.queue_delete(q, false, false).await?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

const FAILING: &str = "serena-test.consumers.failing";
const FAILING_DEAD: &str = "serena-test.consumers.failing-dead";
const FLOWING: &str = "serena-test.consumers.flowing";

/// Redeliveries a failing message gets before the quorum queue dead-letters it.
const DELIVERY_LIMIT: i64 = 3;

#[derive(Default)]
struct Attempts {
    failed: AtomicU64,
    flowed: AtomicU64,
}

/// Fails every message; with `on_error = "requeue"` each one is requeued at once until the
/// queue's delivery limit dead-letters it (the default, a retry later, is tested in
/// tests/worker/retries.rs).
#[consumer(queue = "serena-test.consumers.failing", on_error = "requeue")]
async fn always_fails(
    body: bytes::Bytes,
    State(attempts): State<Arc<Attempts>>,
) -> Result<(), String> {
    attempts.failed.fetch_add(1, Ordering::SeqCst);
    // Slow enough that the failures go on while the other consumer works.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Err(format!("cannot handle {}", String::from_utf8_lossy(&body)))
}

#[consumer(queue = "serena-test.consumers.flowing", concurrency = 4)]
async fn keeps_flowing(State(attempts): State<Arc<Attempts>>) {
    attempts.flowed.fetch_add(1, Ordering::SeqCst);
}

async fn reset_failing_and_flowing(failing: u32, flowing: u32) {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            for q in [FAILING, FAILING_DEAD, FLOWING] {
                ch.queue_delete(q, false, false).await?;
            }
            ch.queue_declare(FAILING_DEAD, Default::default()).await?;
            ch.queue_declare(FLOWING, Default::default()).await?;
            ch.queue_declare(
                FAILING,
                QueueDeclareOptions::default()
                    .with_durable(true)
                    .with_arguments(
                        FieldTable::new()
                            .with("x-queue-type", "quorum")
                            .with("x-delivery-limit", DELIVERY_LIMIT)
                            .with("x-dead-letter-exchange", "")
                            .with("x-dead-letter-routing-key", FAILING_DEAD),
                    ),
            )
            .await?;
            let mut pending = Vec::new();
            for (queue, count) in [(FAILING, failing), (FLOWING, flowing)] {
                for id in 0..count {
                    pending.push(
                        ch.basic_publish_with(
                            "",
                            queue,
                            id.to_string(),
                            BasicProperties::default(),
                            Default::default(),
                        )
                        .await?,
                    );
                }
            }
            for c in pending {
                c.await?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_dead_letters_its_messages_while_others_flow() {
    const FAILING_COUNT: u32 = 20;
    const FLOWING_COUNT: u32 = 500;
    reset_failing_and_flowing(FAILING_COUNT, FLOWING_COUNT).await;
    let attempts = Arc::new(Attempts::default());
    let sup = Supervisor::new(ConnectionConfig::default())
        .consumer(always_fails)
        .consumer(keeps_flowing)
        .state(attempts.clone());
    let handle = sup.handle();
    let done = Arc::new(Notify::new());
    let waiter = done.clone();
    let watcher = async {
        loop {
            let flowed = attempts.flowed.load(Ordering::SeqCst);
            if flowed == u64::from(FLOWING_COUNT) && depth(FAILING_DEAD).await == FAILING_COUNT {
                done.notify_one();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (run, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            sup.run_until(async move { waiter.notified().await }),
            watcher
        )
    })
    .await
    .expect("every failing message dead-lettered and every other one handled within 30 s");
    run.expect("clean stop");
    let stats = handle.stats();
    let failed = attempts.failed.load(Ordering::SeqCst);
    // Every failing message was tried once and then again up to the limit before it went.
    let tries = u64::from(FAILING_COUNT) * (DELIVERY_LIMIT as u64 + 1);
    assert_eq!(failed, tries, "{stats:?}");
    assert_eq!(stats.requeued, tries, "every failure requeued: {stats:?}");
    assert_eq!(stats.acked, u64::from(FLOWING_COUNT), "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(
        stats.restarts, 0,
        "failures never restart the tree: {stats:?}"
    );
    assert_eq!(depth(FAILING).await, 0);
    assert_eq!(depth(FLOWING).await, 0);
    println!(
        "always-failing handler: {FAILING_COUNT} messages, {failed} attempts, all dead-lettered; {FLOWING_COUNT} others acked"
    );
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            for q in [FAILING, FAILING_DEAD, FLOWING] {
                ch.queue_delete(q, false, false).await?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}
