//! The in-memory broker on its own (no RabbitMQ): the real client and worker against it.

use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::{ConsumeOptions, PublishOptions, QueueDeclareOptions, open_connection};
use serena_testing::MemoryBroker;

#[tokio::test(start_paused = true)]
async fn publish_consume_ack_round_trip() {
    let broker = MemoryBroker::new();
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("q", QueueDeclareOptions::default())
            .await?;
        for i in 0..3 {
            ch.basic_publish("", "q", format!("m{i}"), BasicProperties::default())
                .await?;
        }
        assert_eq!(broker.message_count("q"), Some(3));
        ch.basic_qos(1, false).await?;
        let mut consumer = ch.basic_consume("q", ConsumeOptions::default()).await?;
        for i in 0..3 {
            let d = consumer.next().await.expect("delivery")?;
            assert_eq!(&d.body[..], format!("m{i}").as_bytes());
            d.ack()?;
        }
        Ok::<_, serena::Error>(())
    })
    .await
    .expect("scope");
    assert!(broker.run_until_idle(Duration::from_secs(1)).await);
    assert_eq!(broker.message_count("q"), Some(0));
    let stats = broker.stats();
    assert_eq!(
        (stats.published, stats.acked, stats.confirms_acked),
        (3, 3, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn a_publish_on_one_connection_wakes_a_consumer_on_another() {
    let broker = MemoryBroker::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let consumer_broker = broker.clone();
    let consumer = tokio::spawn(async move {
        open_connection(&consumer_broker.config(), async |conn| {
            let ch = conn.channel().await?;
            ch.queue_declare("jobs", QueueDeclareOptions::default())
                .await?;
            let mut c = ch.basic_consume("jobs", ConsumeOptions::default()).await?;
            let _ = tx.send(());
            let d = c.next().await.expect("delivery")?;
            d.ack()?;
            Ok::<_, serena::Error>(d.body)
        })
        .await
    });
    rx.await.expect("consuming");
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        ch.basic_publish("", "jobs", "work", BasicProperties::default())
            .await
    })
    .await
    .expect("published");
    let body = consumer.await.expect("joined").expect("consumed");
    assert_eq!(&body[..], b"work");
}

#[tokio::test(start_paused = true)]
async fn ttl_and_dead_letters_run_through_under_paused_time() {
    let broker = MemoryBroker::new();
    let started = tokio::time::Instant::now();
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("parked", QueueDeclareOptions::default())
            .await?;
        let delay = FieldTable::new()
            .with("x-message-ttl", 60_000i32)
            .with("x-dead-letter-exchange", "")
            .with("x-dead-letter-routing-key", "parked");
        ch.queue_declare(
            "delay",
            QueueDeclareOptions::default().with_arguments(delay),
        )
        .await?;
        ch.basic_publish("", "delay", "later", BasicProperties::default())
            .await
    })
    .await
    .expect("set up");
    assert_eq!(broker.message_count("delay"), Some(1));
    // Within 30 s nothing expires: idle, and the message is still waiting.
    assert!(broker.run_until_idle(Duration::from_secs(30)).await);
    assert_eq!(broker.message_count("delay"), Some(1));
    assert!(broker.run_until_idle(Duration::from_secs(120)).await);
    assert!(started.elapsed() >= Duration::from_secs(60));
    let parked = broker.messages("parked").expect("queue");
    assert_eq!(parked.len(), 1);
    let headers = parked[0].headers();
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        panic!("no x-death: {headers:?}");
    };
    let death = deaths[0].as_table().expect("a table");
    assert_eq!(
        death.get("reason").and_then(FieldValue::as_str),
        Some("expired")
    );
    assert_eq!(
        death.get("queue").and_then(FieldValue::as_str),
        Some("delay")
    );
    assert_eq!(broker.stats().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn stats_count_returns_nacks_and_settlements() {
    let broker = MemoryBroker::new();
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        let limited = FieldTable::new()
            .with("x-max-length", 1i32)
            .with("x-overflow", "reject-publish");
        ch.queue_declare(
            "one",
            QueueDeclareOptions::default().with_arguments(limited),
        )
        .await?;
        ch.basic_publish("", "one", "a", BasicProperties::default())
            .await?;
        let full = ch
            .basic_publish("", "one", "b", BasicProperties::default())
            .await;
        assert!(matches!(full, Err(serena::Error::Nacked)), "{full:?}");
        let options = PublishOptions::default().with_mandatory(true);
        let returned = ch
            .basic_publish_with("", "nobody", "c", BasicProperties::default(), options)
            .await?
            .await;
        assert!(
            matches!(returned, Err(serena::Error::Returned(_))),
            "{returned:?}"
        );
        let got = ch.basic_get("one", false).await?.expect("a message");
        got.delivery.reject(true)?;
        let got = ch.basic_get("one", false).await?.expect("again");
        assert!(got.delivery.redelivered);
        got.delivery.ack()?;
        Ok::<_, serena::Error>(())
    })
    .await
    .expect("scope");
    let stats = broker.stats();
    assert_eq!(stats.published, 3);
    assert_eq!(stats.confirms_acked, 2);
    assert_eq!(stats.confirms_nacked, 1);
    assert_eq!(stats.returned, 1);
    assert_eq!(stats.nacked, 1);
    assert_eq!(stats.acked, 1);
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_deliveries_keep_the_broker_busy() {
    let broker = MemoryBroker::new();
    let held = broker.clone();
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("q", QueueDeclareOptions::default())
            .await?;
        ch.basic_publish("", "q", "x", BasicProperties::default())
            .await?;
        let mut c = ch.basic_consume("q", ConsumeOptions::default()).await?;
        let d = c.next().await.expect("delivery")?;
        // Held, not settled: never idle, and run_until_idle says so when its time is up.
        assert!(!held.run_until_idle(Duration::from_secs(5)).await);
        d.ack()?;
        assert!(held.run_until_idle(Duration::from_secs(5)).await);
        Ok::<_, serena::Error>(())
    })
    .await
    .expect("scope");
}

#[tokio::test(start_paused = true)]
async fn transactions_are_refused_with_540_and_streams_offsets_too() {
    let broker = MemoryBroker::new();
    let err = open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("q", QueueDeclareOptions::default())
            .await?;
        let offset = FieldTable::new().with("x-stream-offset", "first");
        ch.basic_consume("q", ConsumeOptions::default().with_arguments(offset))
            .await
            .map(drop)
    })
    .await
    .expect_err("refused");
    let close = err.unexpected_close().expect("a channel close");
    assert_eq!(close.reply_code, 540, "{close:?}");
}

#[tokio::test(start_paused = true)]
async fn from_topology_declares_the_example_topology() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml");
    let topology = serena::topology::Topology::load(path).expect("topology.toml");
    let broker = MemoryBroker::from_topology(&topology)
        .await
        .expect("declared");
    let queues = broker.queues();
    for q in [
        "orders.work",
        "orders.parking",
        "orders.urgent",
        "orders.work.retry.1s",
    ] {
        assert!(queues.iter().any(|n| n == q), "{q} missing from {queues:?}");
    }
    open_connection(&broker.config(), async |conn| {
        let ch = conn.channel().await?;
        let urgent = FieldTable::new().with("customer-tier", "gold");
        let props = BasicProperties::default().with_headers(urgent);
        ch.basic_publish("orders", "order.created", "{}", props)
            .await
    })
    .await
    .expect("published");
    assert_eq!(broker.message_count("orders.work"), Some(1));
    assert_eq!(broker.message_count("orders.urgent"), Some(1));
    assert_eq!(broker.message_count("audit.log"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_heartbeats_is_answered() {
    let broker = MemoryBroker::new();
    let mut config = broker.config();
    config.heartbeat = Duration::from_secs(2);
    open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("q", QueueDeclareOptions::default())
            .await?;
        // Thirty heartbeat intervals with nothing else on the wire: the connection lives.
        tokio::time::sleep(Duration::from_secs(60)).await;
        ch.basic_publish("", "q", "still here", BasicProperties::default())
            .await
    })
    .await
    .expect("alive after a minute of heartbeats");
    assert_eq!(broker.message_count("q"), Some(1));
}
