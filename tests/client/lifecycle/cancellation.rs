//! Every public future dropped after its first poll, the way a `select!` or a timeout drops a
//! call in flight, leaves nothing behind: the request went out, and whatever it set up on the
//! broker (a channel, a consumer, a fetched message) is undone or handed back, while the channel
//! and the connection carry on and later calls get their own replies.

use serena::{ConsumeOptions, Error};
use serena_tests::cancel::poll_once;
use serena_tests::{publish_ids, unique_name};

use super::{
    SETTLE, STEP, assert_connection_works, counts, eventually, exclusive, passive, scope, within,
};

/// Drops `future` after its first poll, failing the test if that poll already finished it
/// (then nothing was cancelled and the test would prove nothing).
async fn cancel_after_first_poll<F: Future>(what: &str, future: F) {
    assert!(
        poll_once(future).await.is_none(),
        "{what} finished on its first poll: nothing to cancel"
    );
}

#[tokio::test]
async fn channel_opens_dropped_after_their_first_poll_leave_no_channel() {
    scope("cancel-open", async |conn| {
        let keep = conn.channel().await?;
        let before = conn.open_channels();
        for _ in 0..10 {
            cancel_after_first_poll("Connection::channel", conn.channel()).await;
        }
        eventually(
            "the cancelled channels gone",
            async || Ok(conn.open_channels()),
            |&n| n == before,
        )
        .await?;
        assert!(keep.is_open());
        assert_connection_works(conn).await?;
        assert_eq!(conn.open_channels(), before);
        keep.close().await
    })
    .await;
}

#[tokio::test]
async fn a_queue_declare_dropped_after_its_first_poll_leaves_later_replies_paired() {
    scope("cancel-declare", async |conn| {
        let ch = conn.channel().await?;
        let dropped = unique_name("dropped-declare");
        cancel_after_first_poll("queue_declare", ch.queue_declare(&dropped, exclusive())).await;
        let named = unique_name("declared");
        let ok = within(
            STEP,
            "the next declare",
            ch.queue_declare(&named, exclusive()),
        )
        .await?;
        assert_eq!(
            ok.queue, named,
            "the next declare got the cancelled one's reply"
        );
        let ok = within(
            STEP,
            "a server-named declare",
            ch.queue_declare("", exclusive()),
        )
        .await?;
        assert!(ok.queue.starts_with("amq.gen-"), "{ok:?}");
        assert!(ch.is_open());
        for q in [&dropped, &named, &ok.queue] {
            ch.queue_delete(q, false, false).await?;
        }
        ch.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// A dropped `basic_publish`, and a dropped `Confirmation`: the messages went out, and the
/// publishes after them get their own confirms; a dropped unroutable publish's return is not
/// taken for the next one's.
#[tokio::test]
async fn publishes_dropped_after_their_first_poll_leave_the_confirms_paired() {
    scope("cancel-publish", async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        cancel_after_first_poll(
            "basic_publish",
            ch.basic_publish("", &q, b"dropped", Default::default()),
        )
        .await;
        let confirmation = ch
            .basic_publish_with("", &q, b"unawaited", Default::default(), Default::default())
            .await?;
        cancel_after_first_poll("Confirmation", confirmation).await;
        within(
            STEP,
            "the next confirm",
            ch.basic_publish("", &q, b"kept", Default::default()),
        )
        .await?;

        let nowhere = unique_name("nowhere");
        cancel_after_first_poll(
            "unroutable basic_publish",
            ch.basic_publish("", &nowhere, b"dropped-return", Default::default()),
        )
        .await;
        let second = within(
            STEP,
            "the next unroutable publish",
            ch.basic_publish("", &nowhere, b"second-return", Default::default()),
        )
        .await;
        match second {
            Err(Error::Returned(r)) => assert_eq!(&r.body[..], b"second-return"),
            other => panic!("expected the second publish returned, got {other:?}"),
        }

        eventually(
            "all three messages in the queue",
            async || counts(&ch, &q).await,
            |c| c.0 == 3,
        )
        .await?;
        assert!(ch.is_open());
        ch.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// A `basic_consume` dropped after its first poll leaves no consumer on the broker: the
/// messages stay ready (and can be fetched), the queue counts no consumer.
#[tokio::test]
async fn a_consume_dropped_after_its_first_poll_leaves_no_consumer() {
    const READY: u32 = 20;
    scope("cancel-consume", async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        publish_ids(&ch, "", &q, 0..u64::from(READY), 20).await?;
        cancel_after_first_poll(
            "basic_consume",
            ch.basic_consume(&q, ConsumeOptions::default()),
        )
        .await;
        tokio::time::sleep(SETTLE).await;
        eventually(
            "(ready, consumers) back to (all, none)",
            async || counts(&ch, &q).await,
            |&c| c == (READY, 0),
        )
        .await?;
        let m = within(STEP, "a get", ch.basic_get(&q, false))
            .await?
            .expect("a message is ready");
        m.ack()?;
        assert!(ch.is_open(), "{:?}", ch.error());
        ch.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// A `basic_get` dropped after its first poll does not strand its message: it can be fetched
/// again, on the same channel, which stays open.
#[tokio::test]
async fn a_get_dropped_after_its_first_poll_leaves_its_message_gettable() {
    scope("cancel-get", async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        ch.basic_publish("", &q, b"the only one", Default::default())
            .await?;
        cancel_after_first_poll("basic_get", ch.basic_get(&q, false)).await;
        let again = eventually(
            "the message gettable again on the same channel",
            async || ch.basic_get(&q, false).await,
            Option::is_some,
        )
        .await?
        .expect("a message");
        assert_eq!(&again.body[..], b"the only one");
        again.ack()?;
        assert_eq!(counts(&ch, &q).await?, (0, 0));
        assert!(ch.is_open(), "{:?}", ch.error());
        ch.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// `Consumer::cancel` dropped after its first poll, then the consumer dropped: no consumer on
/// the broker, every message but the one acked ready again, the channel open and its next call
/// answered with its own reply. Ten rounds, as RabbitMQ sends the `cancel-ok` only after the
/// reply to the next call in some of them (see `a_cancel_and_a_declare_in_flight_together_get_their_own_replies`).
#[tokio::test]
async fn a_cancel_dropped_after_its_first_poll_leaves_no_consumer() {
    const READY: u32 = 10;
    scope("cancel-cancel", async |conn| {
        let ch = conn.channel().await?;
        for _ in 0..10 {
            let q = ch.queue_declare("", exclusive()).await?.queue;
            publish_ids(&ch, "", &q, 0..u64::from(READY), 10).await?;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            let first = within(STEP, "a delivery", consumer.next())
                .await
                .expect("the consumer is open")?;
            first.ack()?;
            cancel_after_first_poll("Consumer::cancel", consumer.cancel()).await;
            drop(consumer);
            eventually(
                "(ready, consumers) back to (all but the acked one, none)",
                async || counts(&ch, &q).await,
                |&c| c == (READY - 1, 0),
            )
            .await?;
            assert!(ch.is_open(), "{:?}", ch.error());
            ch.queue_delete(&q, false, false).await?;
        }
        ch.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}

/// A consumer's cancel and a declare in flight together on one channel (from two clones of it,
/// or `join!`): each call gets its own reply. RabbitMQ 3.10 often sends the `cancel-ok` after
/// the `declare-ok` of the declare sent behind it (the queue answers the cancel, the channel
/// the declare), so replies do not always come in the order of the requests.
#[tokio::test]
async fn a_cancel_and_a_declare_in_flight_together_get_their_own_replies() {
    scope("cancel-and-declare", async |conn| {
        let ch = conn.channel().await?;
        for round in 0..10 {
            let q = ch.queue_declare("", exclusive()).await?.queue;
            publish_ids(&ch, "", &q, 0..3, 3).await?;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            let (cancelled, declared) = within(STEP, "the cancel and the declare", async {
                tokio::join!(consumer.cancel(), ch.queue_declare(&q, passive()))
            })
            .await;
            if let Err(e) = cancelled {
                panic!("round {round}: the cancel failed: {e}");
            }
            match declared {
                Ok(ok) => assert_eq!(ok.queue, q, "round {round}"),
                Err(e) => panic!("round {round}: the declare failed: {e}"),
            }
            drop(consumer);
            ch.queue_delete(&q, false, false).await?;
        }
        assert!(ch.is_open(), "{:?}", ch.error());
        ch.close().await
    })
    .await;
}

/// `Channel::close` dropped after its first poll still closes the channel: the id is freed and
/// the message it held unacknowledged is ready again.
#[tokio::test]
async fn a_close_dropped_after_its_first_poll_still_closes_the_channel() {
    scope("cancel-close", async |conn| {
        let watcher = conn.channel().await?;
        let q = watcher.queue_declare("", exclusive()).await?.queue;
        watcher
            .basic_publish("", &q, b"held", Default::default())
            .await?;
        let before = conn.open_channels();
        let ch = conn.channel().await?;
        let held = ch.basic_get(&q, false).await?.expect("the message");
        assert_eq!(counts(&watcher, &q).await?, (0, 0));
        cancel_after_first_poll("Channel::close", ch.close()).await;
        eventually(
            "the channel closed",
            async || Ok(ch.is_open()),
            |open| !open,
        )
        .await?;
        eventually(
            "the channel's id freed",
            async || Ok(conn.open_channels()),
            |&n| n == before,
        )
        .await?;
        drop(held);
        drop(ch);
        eventually(
            "the held message ready again",
            async || counts(&watcher, &q).await,
            |&c| c == (1, 0),
        )
        .await?;
        watcher.close().await?;
        assert_connection_works(conn).await
    })
    .await;
}
