//! Channel ids (lowest free, `channel_max`) and the channel pool.

use tokio::task::JoinSet;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_ids_start_at_one_reuse_the_lowest_and_stop_at_channel_max() {
    let cfg = config().with_channel_max(3);
    with_connection(&cfg, async |conn| {
        assert_eq!(conn.tuning().channel_max, 3);
        let a = conn.channel().await?;
        let b = conn.channel().await?;
        let c = conn.channel().await?;
        assert_eq!((a.id(), b.id(), c.id()), (1, 2, 3));
        assert_eq!(conn.open_channels(), 3);
        let err = conn.channel().await.expect_err("all three ids in use");
        assert!(
            matches!(err, Error::ChannelsExhausted { max: 3 }),
            "{err:?}"
        );

        b.close().await?;
        assert_eq!(conn.open_channels(), 2);
        let d = conn.channel().await?;
        assert_eq!(d.id(), 2);
        let err = conn.channel().await.expect_err("full again");
        assert!(
            matches!(err, Error::ChannelsExhausted { max: 3 }),
            "{err:?}"
        );

        // Close and reopen in a loop: the id must be free as soon as close() returns.
        let mut current = d;
        for round in 0..200 {
            current.close().await?;
            current = conn
                .channel()
                .await
                .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e:?}"));
            assert_eq!(current.id(), 2, "round {round}");
        }
        for ch in [a, c, current] {
            ch.close().await?;
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The channel pool
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_pool_serves_concurrent_callers_and_survives_a_server_closed_channel() {
    with_connection(&config(), async |conn| {
        let setup = conn.channel().await?;
        let q = setup.queue_declare("", exclusive()).await?.queue;
        setup.close().await?;

        let pool = conn.channel_pool(2).await?;
        assert_eq!(pool.idle(), 2);
        let publish_from = |tasks: &mut JoinSet<Result<()>>, range: std::ops::Range<u32>| {
            for i in range {
                let (pool, q) = (pool.clone(), q.clone());
                tasks.spawn(async move {
                    pool.with(async |ch| {
                        ch.basic_publish("", &q, i.to_be_bytes(), BasicProperties::default())
                            .await
                    })
                    .await
                });
            }
        };
        let mut tasks = JoinSet::new();
        publish_from(&mut tasks, 0..20);
        let results = within(STEP, "20 pooled publishes", tasks.join_all()).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(pool.idle(), 2);

        let missing = unique_name("missing");
        let err = pool
            .with(async |ch| ch.queue_declare(&missing, passive()).await)
            .await
            .expect_err("the queue does not exist");
        let close = err.unexpected_close().expect("a server close");
        assert!(matches!(close.scope, CloseScope::Channel(_)), "{close:?}");
        assert_eq!(
            (close.reply_code, close.class_id, close.method_id),
            (404, 50, 10)
        );

        let mut tasks = JoinSet::new();
        publish_from(&mut tasks, 20..30);
        let results = within(STEP, "10 pooled publishes after the 404", tasks.join_all()).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let deadline = Instant::now() + STEP;
        while pool.idle() != 2 {
            assert!(Instant::now() < deadline, "pool.idle() = {}", pool.idle());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Settled at its size: two idle channels and no extra ones open.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!((pool.idle(), conn.open_channels()), (2, 2));

        let check = conn.channel().await?;
        assert_eq!(ready(&check, &q).await?, 30);
        check.close().await?;

        // Dropping the pool closes its channels in the background; wait for their close-oks.
        drop(pool);
        let deadline = Instant::now() + STEP;
        while conn.open_channels() != 0 {
            assert!(
                Instant::now() < deadline,
                "{} channels still open",
                conn.open_channels()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })
    .await;
}
