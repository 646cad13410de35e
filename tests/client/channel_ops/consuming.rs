//! Consuming: the prefetch window, no head-of-line blocking between channels, dropped
//! consumers, nack / reject / ack, and ending a scope with deliveries unacknowledged.

use super::*;

/// With `channel_buffer_size`, how many of 40 messages a consumer that never acknowledges
/// gets before it goes quiet for a second; and how many are left ready.
async fn unacked_window(channel_buffer_size: u16) -> (usize, u32) {
    let cfg = config().with_channel_buffer_size(channel_buffer_size);
    with_connection(&cfg, async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        publish_numbered(&ch, &q, 40).await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let mut held = Vec::new();
        while let Ok(item) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            let d = item.expect("the consumer ended")?;
            assert_eq!(number(&d), held.len() as u32);
            held.push(d);
        }
        let left = ready(&ch, &q).await?;
        let window = held.len();
        drop((held, consumer));
        ch.close().await?;
        Ok((window, left))
    })
    .await
}

#[tokio::test]
async fn default_buffer_of_48_gives_a_prefetch_of_16() {
    assert_eq!(unacked_window(48).await, (16, 24));
}

#[tokio::test]
async fn buffer_of_9_gives_a_prefetch_of_3() {
    assert_eq!(unacked_window(9).await, (3, 37));
}

#[tokio::test]
async fn scope_ends_cleanly_while_a_consumer_holds_unacknowledged_deliveries() {
    // The body returns with its channel open and 16 deliveries unacknowledged: the broker
    // requeues them while it handles connection.close, and the scope must still end with the
    // body's value, not with an I/O error. The outcome depends on timing, so a few rounds.
    for round in 0..5 {
        let result = within(
            TEST_LIMIT,
            "connection scope",
            open_connection(&config(), async |conn| {
                let ch = conn.channel().await?;
                let q = ch.queue_declare("", exclusive()).await?.queue;
                publish_numbered(&ch, &q, 40).await?;
                let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
                let mut held = Vec::new();
                for _ in 0..16 {
                    held.push(next_delivery(&mut consumer).await);
                }
                wait_ready(&ch, &q, 24).await?;
                Ok::<_, Error>(held.len())
            }),
        )
        .await;
        match result {
            Ok(16) => {}
            other => panic!("round {round}: expected Ok(16), got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unread_consumer_does_not_block_other_channels() {
    const STALLED: u32 = 1_000;
    const FLOWING: u32 = 10_000;
    with_connection(&config(), async |conn| {
        let publisher = conn.channel().await?;
        let stalled_q = publisher.queue_declare("", exclusive()).await?.queue;
        let flowing_q = publisher.queue_declare("", exclusive()).await?.queue;
        publish_numbered(&publisher, &stalled_q, STALLED).await?;

        // Channel A: a no-ack consumer, so the broker pushes all 1,000 at once; never read.
        let a = conn.channel().await?;
        let no_ack = ConsumeOptions::default().with_no_ack(true);
        let stalled = a.basic_consume(&stalled_q, no_ack).await?;
        wait_ready(&publisher, &stalled_q, 0).await?;

        // Channel B: all 10,000, published meanwhile from a third channel.
        let b = conn.channel().await?;
        let mut flowing = b
            .basic_consume(&flowing_q, ConsumeOptions::default())
            .await?;
        let started = Instant::now();
        let receive = async {
            for expected in 0..FLOWING {
                let d = next_delivery(&mut flowing).await;
                assert_eq!(number(&d), expected);
                d.ack()?;
            }
            Ok::<_, Error>(())
        };
        let (published, received) = within(
            Duration::from_secs(45),
            "10,000 deliveries on channel B",
            async { tokio::join!(publish_numbered(&publisher, &flowing_q, FLOWING), receive) },
        )
        .await;
        published?;
        received?;
        eprintln!("channel B received {FLOWING} in {:?}", started.elapsed());

        assert!(a.is_open());
        drop(stalled);
        drop(flowing);
        for ch in [a, b, publisher] {
            ch.close().await?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn dropping_a_consumer_requeues_its_buffered_deliveries() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        for i in 0..5u8 {
            publish(&ch, "", &q, &[i]).await?;
        }
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let taken = next_delivery(&mut consumer).await;
        assert_eq!((&taken.body[..], taken.redelivered), (&[0u8][..], false));

        let other = conn.channel().await?;
        // All five are with our client now: one handed out, four buffered in the consumer.
        wait_ready(&other, &q, 0).await?;
        drop(consumer);
        wait_ready(&other, &q, 4).await?;

        let mut back = Vec::new();
        while let Some(m) = other.basic_get(&q, false).await? {
            assert!(m.redelivered, "{m:?}");
            back.push(m.body[0]);
            m.ack()?;
        }
        back.sort_unstable();
        assert_eq!(back, [1, 2, 3, 4]);

        // The one handed out is still ours to settle.
        taken.ack()?;
        ch.close().await?;
        assert_eq!(ready(&other, &q).await?, 0);
        other.close().await
    })
    .await;
}

#[tokio::test]
async fn nack_requeues_reject_drops_and_ack_of_a_get_settles() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        publish(&ch, "", &q, b"once more").await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let d = next_delivery(&mut consumer).await;
        assert!(!d.redelivered);
        d.nack(true)?;
        let again = next_delivery(&mut consumer).await;
        assert_eq!(&again.body[..], b"once more");
        assert!(again.redelivered);
        again.reject(false)?;
        assert_quiet(&mut consumer, Duration::from_millis(300)).await;
        drop(consumer);
        // Closing the channel would requeue anything still unsettled: nothing comes back.
        ch.close().await?;

        let ch = conn.channel().await?;
        assert_eq!(ready(&ch, &q).await?, 0);
        publish(&ch, "", &q, b"fetched").await?;
        let m = ch.basic_get(&q, false).await?.expect("a message");
        assert!(!m.redelivered);
        m.ack()?;
        ch.close().await?;

        let ch = conn.channel().await?;
        assert!(ch.basic_get(&q, false).await?.is_none(), "the ack was lost");
        ch.close().await
    })
    .await;
}

/// Acks made in delivery order fold into one `ack(multiple)` while the previous ack still
/// waits for the socket; nacks, rejects and acks out of order between them must keep every
/// message settled exactly as the handler said. RabbitMQ checks it for us: a multiple ack that
/// covered a message nacked later, or an ack of a tag already covered, closes the channel with
/// 406; a lost ack shows as a message back in the queue when the channel closes.
#[tokio::test]
async fn acks_in_order_fold_and_every_message_is_settled_as_said() {
    const N: usize = 600;
    let cfg = config().with_channel_buffer_size(300);
    with_connection(&cfg, async |conn| {
        let ch = conn.channel().await?;
        let dead = ch.queue_declare("", exclusive()).await?.queue;
        let args = FieldTable::new()
            .with("x-dead-letter-exchange", "")
            .with("x-dead-letter-routing-key", dead.as_str());
        let q2 = ch.queue_declare("", exclusive_with(args)).await?.queue;
        for i in 0..N {
            publish(&ch, "", &q2, i.to_string().as_bytes()).await?;
        }
        let mut consumer = ch.basic_consume(&q2, ConsumeOptions::default()).await?;
        let mut held = Vec::new();
        let mut rejected = 0;
        let mut seen = 0;
        while seen < N {
            let d = next_delivery(&mut consumer).await;
            seen += 1;
            let i: usize = std::str::from_utf8(&d.body).unwrap().parse().unwrap();
            match i % 10 {
                // Held back, acked later: out of order.
                3 => held.push(d),
                // Dead-lettered between acks.
                7 => {
                    d.reject(false)?;
                    rejected += 1;
                }
                _ => d.ack()?,
            }
            if held.len() == 5 {
                for d in held.drain(..).rev() {
                    d.ack()?;
                }
            }
        }
        for d in held.drain(..) {
            d.ack()?;
        }
        drop(consumer);
        // Anything unsettled would be requeued by the close.
        ch.close().await?;
        let ch = conn.channel().await?;
        assert_eq!(ready(&ch, &q2).await?, 0, "an ack was lost");
        wait_ready(&ch, &dead, rejected).await?;
        let folded = conn.heartbeat_stats().acks_folded;
        assert!(folded > 0, "no ack was folded");
        ch.close().await
    })
    .await;
}
