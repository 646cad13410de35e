//! Fire-and-forget channels ([`serena::UnconfirmedChannel`]): everything published arrives,
//! in order, once `close` returned; unroutable messages are dropped by the broker without
//! failing anything; a server close and an early drop behave as on a confirming channel.

use serena::UnconfirmedChannel;

use super::*;

/// Publishes `count` numbered messages to `queue` fire-and-forget.
async fn publish_numbered_unconfirmed(
    ch: &UnconfirmedChannel,
    queue: &str,
    count: u32,
) -> Result<()> {
    for i in 0..count {
        ch.basic_publish("", queue, i.to_be_bytes(), BasicProperties::default())
            .await?;
    }
    Ok(())
}

fn numbers(bodies: &[String]) -> Vec<u32> {
    bodies
        .iter()
        .map(|b| b.parse().expect("a number"))
        .collect()
}

#[tokio::test]
async fn every_fire_and_forget_publish_arrives_in_order_beside_a_confirming_channel() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let fast = ch.queue_declare("", exclusive()).await?.queue;
        let safe = ch.queue_declare("", exclusive()).await?.queue;
        let telemetry = conn.unconfirmed_channel().await?;
        assert_ne!(telemetry.id(), ch.id());
        // Both kinds interleaved on one connection: the confirming channel's sequence
        // numbers must not see the other's publishes.
        let unconfirmed = async {
            for i in 0..5_000u32 {
                telemetry
                    .basic_publish("", &fast, i.to_string(), BasicProperties::default())
                    .await?;
            }
            telemetry.close().await
        };
        let confirmed = publish_numbered(&ch, &safe, 500);
        let (unconfirmed, confirmed) = tokio::join!(unconfirmed, confirmed);
        unconfirmed?;
        confirmed?;
        assert!(!telemetry.is_open());
        wait_ready(&ch, &fast, 5_000).await?;
        let got = numbers(&drain(&ch, &fast).await?);
        assert_eq!(got, (0..5_000).collect::<Vec<_>>(), "all of them, in order");
        assert_eq!(ready(&ch, &safe).await?, 500);
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn unroutable_fire_and_forget_publishes_are_dropped_and_routable_ones_on_the_same_key_arrive()
{
    let exchange = unique_name("ff-headers");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        ch.exchange_declare(&exchange, "headers", transient())
            .await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let binding = FieldTable::new().with("x-match", "all").with("k", "v");
        ch.queue_bind(&q, &exchange, "", binding).await?;
        let telemetry = conn.unconfirmed_channel().await?;
        for i in 0..200u32 {
            // Same exchange and key; only the headers decide whether a queue takes it.
            let k = if i % 2 == 0 { "v" } else { "other" };
            let props = BasicProperties::default().with_headers(FieldTable::new().with("k", k));
            telemetry
                .basic_publish(&exchange, "same", i.to_string(), props)
                .await?;
        }
        telemetry.close().await?;
        wait_ready(&ch, &q, 100).await?;
        let got = numbers(&drain(&ch, &q).await?);
        assert_eq!(got, (0..200).step_by(2).collect::<Vec<_>>());
        ch.exchange_delete(&exchange, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn a_server_close_fails_the_next_fire_and_forget_publish_with_its_reply_code() {
    let missing = unique_name("ff-missing");
    with_connection(&config(), async |conn| {
        let telemetry = conn.unconfirmed_channel().await?;
        // Queued at once: the publish itself cannot know the exchange is missing.
        telemetry
            .basic_publish(&missing, "k", b"lost", BasicProperties::default())
            .await?;
        let err = within(STEP, "the channel's close", telemetry.closed()).await;
        let close = assert_closed(&err, CloseScope::Channel(telemetry.id()), 404, (60, 40));
        assert!(close.reply_text.contains(&missing), "{}", close.reply_text);
        let again = telemetry
            .basic_publish("", "k", b"after", BasicProperties::default())
            .await
            .expect_err("the channel is closed");
        assert_eq!(again.unexpected_close(), Some(close));
        assert!(!telemetry.is_open());
        // The connection lives on.
        let ch = conn.channel().await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn fire_and_forget_publishes_dropped_after_their_first_poll_send_all_or_nothing() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let telemetry = conn.unconfirmed_channel().await?;
        let mut sent = Vec::new();
        for i in 0..300u32 {
            let publish =
                telemetry.basic_publish("", &q, i.to_string(), BasicProperties::default());
            // `None`: dropped while it waited for room, and then nothing was sent.
            if let Some(result) = serena_tests::cancel::poll_once(publish).await {
                result?;
                sent.push(i);
            }
        }
        assert!(
            !sent.is_empty(),
            "a channel with room takes a publish on its first poll"
        );
        // The channel is still usable after the drops, and what was sent arrives whole.
        publish_numbered_unconfirmed(&telemetry, "no-such-queue-is-fine", 3).await?;
        telemetry.close().await?;
        wait_ready(&ch, &q, sent.len() as u32).await?;
        assert_eq!(numbers(&drain(&ch, &q).await?), sent);
        // After close, a publish fails at once instead of hanging.
        let after = within(
            STEP,
            "a publish after close",
            telemetry.basic_publish("", &q, b"x", BasicProperties::default()),
        )
        .await;
        assert!(matches!(after, Err(Error::Closed("channel"))), "{after:?}");
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn the_scope_closes_the_channel_after_its_publishes_and_ends_with_a_server_close() {
    let missing = unique_name("ff-scope-missing");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        conn.open_unconfirmed_channel(async |telemetry| {
            publish_numbered_unconfirmed(telemetry, &q, 1_000).await
        })
        .await?;
        wait_ready(&ch, &q, 1_000).await?;
        // The server closing the channel cancels the body, which would publish forever.
        let scope = conn.open_unconfirmed_channel(async |telemetry| -> Result<()> {
            telemetry
                .basic_publish(&missing, "k", b"lost", BasicProperties::default())
                .await?;
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let err = within(STEP, "the scope's end", scope)
            .await
            .expect_err("the server's 404");
        let close = err.unexpected_close().expect("a server close");
        assert!(matches!(close.scope, CloseScope::Channel(_)), "{close:?}");
        assert_eq!(close.reply_code, 404, "{close:?}");
        assert!(close.reply_text.contains(&missing), "{}", close.reply_text);
        ch.close().await
    })
    .await;
}

#[test]
fn fire_and_forget_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    fn publish(ch: &UnconfirmedChannel) {
        assert_send(ch.basic_publish("", "q", b"x", BasicProperties::default()));
        assert_send(ch.close());
    }
    fn scope(conn: &serena::Connection) {
        assert_send(conn.open_unconfirmed_channel(async |ch| ch.close().await));
    }
    let _ = scope;
    let _ = publish;
}
