//! The in-memory broker on its own (no RabbitMQ): the real client and worker against it.

use std::time::Duration;

use serena::proto::BasicProperties;
use serena::{ConsumeOptions, QueueDeclareOptions, open_connection};
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
