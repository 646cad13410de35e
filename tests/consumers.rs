//! `#[consumer]` handlers end to end against RabbitMQ: typed JSON bodies, shared state,
//! publishing from a handler, `on_error = "reject"` dead-lettering, and poison messages.
//!
//! The macro takes queue names as literals, so these queues have fixed names; each test
//! deletes and redeclares them first, and this binary holds only this one test.

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
                QueueDeclareOptions {
                    arguments: FieldTable::new()
                        .with("x-dead-letter-exchange", "")
                        .with("x-dead-letter-routing-key", DEAD),
                    ..Default::default()
                },
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
        .await?
    })
    .await
    .expect("connection")
    .expect("setup");
}

async fn depth(queue: &str) -> u32 {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            let ok = ch
                .queue_declare(
                    queue,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await?;
            Ok::<_, Error>(ok.message_count)
        })
        .await?
    })
    .await
    .expect("connection")
    .expect("depth")
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
        let seen = seen.clone();
        async move {
            loop {
                let changed = seen.changed.notified();
                if seen.paid.load(Ordering::SeqCst) == 40
                    && seen.receipts.load(Ordering::SeqCst) == 40
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
        .await?
    })
    .await
    .expect("connection")
    .expect("cleanup");
}
