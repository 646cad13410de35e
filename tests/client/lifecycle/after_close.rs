//! Frames sent after, or racing, the server's close of their channel. The broker takes any
//! frame on a channel after our `close-ok` as a connection error (504), so an ack, nack, reject
//! or cancel on a closed channel must fail in the client and never reach the socket; and a
//! consumer dropped while deliveries are in flight must not answer them in a way the broker
//! refuses.

use std::pin::pin;
use std::time::Instant;

use serena::proto::BasicProperties;
use serena::{Channel, ConsumeOptions, Delivery, Error, PublishOptions};
use serena_tests::cancel::poll_once;
use serena_tests::{publish_ids, unique_name};
use tokio::sync::oneshot;

use super::{
    RACE_FOR, SETTLE, STEP, assert_channel_close, assert_connection_works, counts, eventually,
    exclusive, fill, missing, passive, scope, server_closes, within,
};

/// Has the server close `ch` (404 on a passive declare of a missing queue), and tells `go` the
/// moment that declare is on its way: what `go` starts races the close.
async fn server_closes_after(ch: &Channel, go: oneshot::Sender<()>) {
    let missing = missing();
    let mut declare = pin!(ch.queue_declare(&missing, passive()));
    // On a multi-threaded runtime the reply can be in before the first poll returns (the
    // request leaves inline, and a preempted thread resumes after the reader handled the
    // close): that round starts the race late, which proves less but is no failure.
    let first = poll_once(declare.as_mut()).await;
    let _ = go.send(());
    let err = match first {
        Some(done) => done,
        None => within(STEP, "the passive declare", declare).await,
    }
    .expect_err("the queue does not exist");
    assert_channel_close(&err, ch.id(), 404);
}

/// After the server closed the channel: acking, nacking and rejecting a delivery of it, and
/// cancelling its consumer, each fail; the connection and another channel carry on, and the
/// messages are ready again in the queue.
#[tokio::test]
async fn settling_a_delivery_after_a_server_close_fails_and_spares_the_connection() {
    scope("settle-after-close", async |conn| {
        let other = conn.channel().await?;
        let other_q = other.queue_declare("", exclusive()).await?.queue;
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        publish_ids(&ch, "", &q, 0..10, 10).await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let mut held: Vec<Delivery> = Vec::new();
        for _ in 0..3 {
            let d = within(STEP, "a delivery", consumer.next())
                .await
                .expect("the consumer is open")?;
            held.push(d);
        }
        server_closes(&ch).await;

        let results = [
            ("ack", held[0].ack()),
            ("nack", held[1].nack(true)),
            ("reject", held[2].reject(false)),
            ("cancel", consumer.cancel().await),
        ];
        for (what, result) in results {
            let e = result.expect_err(what);
            assert!(
                e.reply_code() == Some(404) || matches!(e, Error::Closed(_)),
                "{what} failed with {e:?}, not the channel's close"
            );
        }
        drop(consumer);

        tokio::time::sleep(SETTLE).await;
        assert!(conn.error().is_none(), "{:?}", conn.error());
        within(
            STEP,
            "a publish on the other channel",
            other.basic_publish("", &other_q, b"after", Default::default()),
        )
        .await?;
        eventually(
            "the closed channel's messages ready again",
            async || counts(&other, &q).await,
            |&(ready, consumers)| ready == 10 && consumers == 0,
        )
        .await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// Acks racing the server's close: in each of up to 40 rounds (for at most [`RACE_FOR`]) a task
/// acks 1,000 delivered messages one by one, starting as the declare that closes their channel
/// leaves. Every ack either goes out before our `close-ok` or fails; none may follow it onto
/// the wire, where the broker answers with a 504 for the whole connection. A race with a
/// window of a few instructions: against a client that leaves one open it fails in most runs,
/// not all; the publishing variant below hits it more often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_racing_a_server_close_spare_the_connection() {
    const HELD: usize = 1_000;
    const ROUNDS: usize = 40;
    scope("acks-race-close", async |conn| {
        let (started, mut rounds, mut cut_short) = (Instant::now(), 0, 0);
        while rounds < ROUNDS && started.elapsed() < RACE_FOR {
            rounds += 1;
            let ch = conn.channel().await?;
            let q = ch.queue_declare("", exclusive()).await?.queue;
            fill(&ch, &q, HELD, 16).await?;
            // Every message delivered and unacked: no more deliveries on their way.
            ch.basic_qos(0, false).await?;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            let mut held = Vec::with_capacity(HELD);
            while held.len() < HELD {
                let d = within(STEP, "a delivery", consumer.next())
                    .await
                    .expect("the consumer is open")?;
                held.push(d);
            }
            // The acks start the moment the declare that makes the server close the channel
            // is on its way, and last longer than its round trip.
            let (go, start) = oneshot::channel::<()>();
            let acker = tokio::spawn(async move {
                let mut acked = 0;
                if start.await.is_ok() {
                    for d in held {
                        if d.ack().is_err() {
                            break;
                        }
                        acked += 1;
                        tokio::task::yield_now().await;
                    }
                }
                acked
            });
            server_closes_after(&ch, go).await;
            let acked = within(STEP, "the acks", acker).await.expect("acking task");
            cut_short += usize::from(acked < HELD);
            // A 504 would end the scope here or in the next round.
            assert!(conn.error().is_none(), "{:?}", conn.error());
        }
        tokio::time::sleep(SETTLE).await;
        assert!(
            cut_short > 0,
            "the acks never overlapped the close in {rounds} rounds: the test proved nothing"
        );
        assert_connection_works(conn).await
    })
    .await;
}

/// Publishes racing the server's close: in each of up to 200 rounds (for at most [`RACE_FOR`]) a
/// task publishes on a channel without pause from the moment the declare that closes it
/// leaves. Each publish either goes out before our `close-ok` or fails; none may follow it onto
/// the wire (a 504 for the whole connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_a_server_close_spare_the_connection() {
    const ROUNDS: usize = 200;
    let nowhere = unique_name("nowhere");
    scope("publish-race-close", async |conn| {
        let options = PublishOptions::default().with_mandatory(false);
        let (started, mut rounds) = (Instant::now(), 0);
        while rounds < ROUNDS && started.elapsed() < RACE_FOR {
            rounds += 1;
            let ch = conn.channel().await?;
            let (go, start) = oneshot::channel::<()>();
            let publisher = {
                let (ch, nowhere) = (ch.clone(), nowhere.clone());
                tokio::spawn(async move {
                    if start.await.is_err() {
                        return;
                    }
                    let body = b"racing the close";
                    let props = BasicProperties::default();
                    while let Ok(confirmation) = ch
                        .basic_publish_with("", &nowhere, body, props.clone(), options)
                        .await
                    {
                        drop(confirmation);
                        tokio::task::yield_now().await;
                    }
                })
            };
            server_closes_after(&ch, go).await;
            within(STEP, "the publisher to stop", publisher)
                .await
                .expect("publishing task");
            assert!(conn.error().is_none(), "{:?}", conn.error());
        }
        tokio::time::sleep(SETTLE).await;
        assert_connection_works(conn).await
    })
    .await;
}

/// A `no_ack` consumer dropped while the broker still pushes its backlog: the channel stays
/// open and usable (deliveries that need no ack must not be answered), and the connection too.
#[tokio::test]
async fn dropping_a_no_ack_consumer_leaves_its_channel_open() {
    const BACKLOG: usize = 2_000;
    scope("drop-no-ack", async |conn| {
        for round in 0..3 {
            let ch = conn.channel().await?;
            let q = ch.queue_declare("", exclusive()).await?.queue;
            fill(&ch, &q, BACKLOG, 1024).await?;
            let options = ConsumeOptions::default().with_no_ack(true);
            let mut consumer = ch.basic_consume(&q, options).await?;
            for _ in 0..5 {
                within(STEP, "a delivery", consumer.next())
                    .await
                    .expect("the consumer is open")?;
            }
            drop(consumer);
            tokio::time::sleep(SETTLE).await;
            assert!(
                ch.is_open(),
                "round {round}: dropping the no_ack consumer closed its channel: {:?}",
                ch.error()
            );
            let (_, consumers) = within(STEP, "a declare", counts(&ch, &q)).await?;
            assert_eq!(
                consumers, 0,
                "round {round}: the consumer is still on the queue"
            );
            ch.queue_delete(&q, false, false).await?;
            ch.close().await?;
        }
        assert_connection_works(conn).await
    })
    .await;
}
