//! The server closes a channel while deliveries are in flight to it. RabbitMQ keeps sending
//! the deliveries it had dispatched after its `channel.close`: they belong to the closed
//! channel, and must neither end the connection nor reach a channel opened right after under
//! the same id. And a call that fails with the close finds the close recorded on the channel.

use serena::{Channel, Connection, ConsumeOptions, Error, Result};
use serena_tests::{publish_ids, unique_name};
use tokio::task::JoinHandle;

use super::{
    SETTLE, STEP, assert_channel_close, assert_connection_works, counts, exclusive, missing,
    passive, scope, server_closes, within,
};

/// Messages waiting for the busy consumer.
const BACKLOG: u64 = 3_000;
/// Its prefetch window: up to this many deliveries in flight when the server closes.
const PREFETCH: u16 = 500;

/// A channel whose consumer is busy: a queue of [`BACKLOG`] messages, a consumer with a
/// prefetch of [`PREFETCH`] that has had its first delivery, and a task acking each delivery
/// as it comes (it returns how many it saw, once the consumer ends).
async fn busy_consumer(conn: &Connection) -> Result<(Channel, JoinHandle<u64>)> {
    let ch = conn.channel().await?;
    ch.basic_qos(PREFETCH, false).await?;
    let q = ch.queue_declare("", exclusive()).await?.queue;
    publish_ids(&ch, "", &q, 0..BACKLOG, 500).await?;
    let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
    let first = within(STEP, "the first delivery", consumer.next())
        .await
        .expect("the consumer is open")?;
    first.ack()?;
    let acker = tokio::spawn(async move {
        let mut seen = 1;
        while let Some(Ok(d)) = consumer.next().await {
            seen += 1;
            if d.ack().is_err() {
                break;
            }
        }
        seen
    });
    Ok((ch, acker))
}

#[tokio::test]
async fn a_server_close_of_a_busy_consuming_channel_spares_the_connection() {
    scope("busy-close", async |conn| {
        let other = conn.channel().await?;
        let other_q = other.queue_declare("", exclusive()).await?.queue;
        for round in 0..3 {
            let (ch, acker) = busy_consumer(conn).await?;
            server_closes(&ch).await;
            assert!(!ch.is_open());
            let seen = within(STEP, "the consumer's end", acker)
                .await
                .expect("the acking task");
            assert!(seen < BACKLOG, "round {round}: the consumer saw everything");
            // The deliveries RabbitMQ sent after its close arrive meanwhile.
            tokio::time::sleep(SETTLE).await;
            assert!(
                conn.error().is_none(),
                "round {round}: the connection ended: {:?}",
                conn.error()
            );
            // The other channel carries on: a publish is confirmed, a declare answered.
            let body = format!("round {round}");
            within(
                STEP,
                "a publish on the other channel",
                other.basic_publish("", &other_q, &body, Default::default()),
            )
            .await?;
            let (ready, _) = counts(&other, &other_q).await?;
            assert_eq!(ready, round + 1);
            assert!(other.is_open());
        }
        assert_connection_works(conn).await
    })
    .await;
}

#[tokio::test]
async fn a_channel_opened_right_after_a_server_close_gets_only_its_own_deliveries() {
    const OWN: usize = 50;
    scope("reuse-after-close", async |conn| {
        for round in 0..3 {
            let (ch, acker) = busy_consumer(conn).await?;
            let old_id = ch.id();
            server_closes(&ch).await;
            // At once, while the closed channel's late deliveries are still on their way.
            let fresh = conn.channel().await?;
            let id = fresh.id();
            let own = async {
                let q = fresh.queue_declare("", exclusive()).await?.queue;
                for i in 0..OWN {
                    let body = format!("fresh-{i}");
                    fresh
                        .basic_publish("", &q, &body, Default::default())
                        .await?;
                }
                let mut consumer = fresh.basic_consume(&q, ConsumeOptions::default()).await?;
                for i in 0..OWN {
                    let d = within(STEP, "a delivery on the fresh channel", consumer.next())
                        .await
                        .expect("the fresh consumer is open")?;
                    assert_eq!(
                        (d.routing_key.as_str(), &d.body[..]),
                        (q.as_str(), format!("fresh-{i}").as_bytes()),
                        "round {round}: channel {id} got a delivery not from its queue (the \
                         closed channel {old_id} consumed another)"
                    );
                    d.ack()?;
                }
                tokio::time::sleep(SETTLE).await;
                assert!(fresh.is_open(), "{:?}", fresh.error());
                assert_eq!(counts(&fresh, &q).await?, (0, 1));
                consumer.cancel().await?;
                fresh.close().await
            };
            if let Err(e) = own.await {
                panic!(
                    "round {round}: the channel {id} opened right after the server closed \
                     channel {old_id} failed: {e}"
                );
            }
            within(STEP, "the closed channel's consumer to end", acker)
                .await
                .expect("the acking task");
        }
        assert_connection_works(conn).await
    })
    .await;
}

/// `Channel::error()` is already set when a call that failed with the channel's close returns,
/// with that close, and agrees with `is_open()`. Many consumers on the channel (each told of the
/// close) and a runtime with other threads give an update made in the wrong order a window to
/// show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_is_set_when_a_call_fails_with_the_close() {
    const CONSUMERS: usize = 200;
    const ROUNDS: usize = 30;
    scope("error-at-once", async |conn| {
        let q = unique_name("quiet");
        let setup = conn.channel().await?;
        setup.queue_declare(&q, exclusive()).await?;
        let mut missed = Vec::new();
        for round in 0..ROUNDS {
            let ch = conn.channel().await?;
            let mut consumers = Vec::with_capacity(CONSUMERS);
            for _ in 0..CONSUMERS {
                consumers.push(ch.basic_consume(&q, ConsumeOptions::default()).await?);
            }
            let err = ch
                .queue_declare(&missing(), passive())
                .await
                .expect_err("the queue does not exist");
            let (error, open) = (ch.error(), ch.is_open());
            assert_channel_close(&err, ch.id(), 404);
            match error {
                None => missed.push(round),
                Some(e) => assert_eq!(e.unexpected_close(), err.unexpected_close(), "{e:?}"),
            }
            assert!(!open, "round {round}: is_open() after the close");
            // closed() agrees at once too.
            let closed = within(STEP, "closed()", ch.closed()).await;
            assert_eq!(closed.unexpected_close(), err.unexpected_close());
        }
        assert!(
            missed.is_empty(),
            "Channel::error() was None right after the call failed with the close in rounds \
             {missed:?} of {ROUNDS}"
        );
        setup.queue_delete(&q, false, false).await?;
        Ok::<(), Error>(())
    })
    .await;
}
