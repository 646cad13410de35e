//! The broker's memory alarm: `connection.blocked` is surfaced, a publish waits while the
//! connection is blocked instead of failing or being lost, and goes through once it is
//! unblocked. This test is alone in its binary because the alarm blocks every publisher.

use std::time::Duration;

use serena::{ConnectionConfig, Error, QueueDeclareOptions, open_connection};
use serena_tests::rabbitmqctl::MemoryAlarm;
use serena_tests::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_waits_while_blocked_and_resumes_after() {
    let q = unique_name("alarm");
    let cfg = ConnectionConfig::default();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        open_connection(&cfg, async |conn| {
            conn.open_channel(async |ch| {
                ch.queue_declare(
                    &q,
                    QueueDeclareOptions {
                        auto_delete: true,
                        ..Default::default()
                    },
                )
                .await?;
                ch.basic_publish("", &q, b"before", Default::default())
                    .await?;

                let alarm = tokio::task::spawn_blocking(MemoryAlarm::raise)
                    .await
                    .expect("join")
                    .expect("raise the alarm");
                // RabbitMQ blocks a connection when it next publishes.
                let publish = ch.basic_publish("", &q, b"during", Default::default());
                tokio::pin!(publish);
                let mut blocked_seen = false;
                for _ in 0..100 {
                    tokio::select! {
                        r = &mut publish => panic!("publish finished while blocked: {r:?}"),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    if let Some(reason) = conn.blocked() {
                        assert!(reason.to_lowercase().contains("memory"), "{reason}");
                        blocked_seen = true;
                        break;
                    }
                }
                assert!(blocked_seen, "connection.blocked was never surfaced");
                // Still waiting, not failed.
                tokio::select! {
                    r = &mut publish => panic!("publish finished while blocked: {r:?}"),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                tokio::task::spawn_blocking(move || alarm.clear())
                    .await
                    .expect("join")
                    .expect("clear the alarm");
                tokio::time::timeout(Duration::from_secs(20), &mut publish)
                    .await
                    .expect("the publish goes through once unblocked")?;
                assert_eq!(conn.blocked(), None);
                let depth = ch
                    .queue_declare(
                        &q,
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                    )
                    .await?
                    .message_count;
                assert_eq!(depth, 2, "nothing lost");
                Ok::<_, Error>(())
            })
            .await?
        }),
    )
    .await
    .expect("the test finishes");
    outcome.expect("connection").expect("channel");
}
