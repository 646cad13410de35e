//! Heartbeats against the real broker: with a 1 s interval both sides keep an idle connection
//! alive; with 0 nobody sends any and the connection still works.

use std::time::Duration;

use serena::{Error, open_connection};
use serena_tests::unique_name;
use tokio::time::{sleep, timeout};

use super::{LIMIT, broker_config, exclusive};

/// Declares, publishes to and gets from a fresh queue: the connection works.
async fn roundtrip(conn: &serena::Connection) -> serena::Result<()> {
    conn.open_channel(async |ch| {
        let q = ch.queue_declare("", exclusive()).await?.queue;
        ch.basic_publish("", &q, b"still here", Default::default())
            .await?;
        let msg = ch.basic_get(&q, true).await?.expect("the message");
        assert_eq!(&msg.body[..], b"still here");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn one_second_heartbeats_flow_both_ways_on_an_idle_connection() {
    let config = broker_config(&unique_name("heartbeat-1s")).with_heartbeat(Duration::from_secs(1));
    let stats = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            assert_eq!(conn.tuning().heartbeat, 1, "the smaller interval wins");
            sleep(Duration::from_millis(3500)).await;
            let stats = conn.heartbeat_stats();
            roundtrip(conn).await?;
            Ok::<_, Error>(stats)
        }),
    )
    .await
    .expect("no hang")
    .expect("the connection stays up on heartbeats alone and works after the idle time");
    assert_eq!(stats.interval, Duration::from_secs(1));
    assert!(stats.sent > 0, "we sent heartbeats while idle: {stats:?}");
    assert!(stats.received > 0, "the broker sent heartbeats: {stats:?}");
}

#[tokio::test]
async fn zero_turns_heartbeats_off() {
    let config = broker_config(&unique_name("heartbeat-off")).with_heartbeat(Duration::ZERO);
    let stats = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            assert_eq!(
                conn.tuning().heartbeat,
                0,
                "zero on our side turns them off"
            );
            sleep(Duration::from_secs(2)).await;
            let stats = conn.heartbeat_stats();
            roundtrip(conn).await?;
            Ok::<_, Error>(stats)
        }),
    )
    .await
    .expect("no hang")
    .expect("an idle connection without heartbeats stays up and works after the idle time");
    assert_eq!(stats.interval, Duration::ZERO);
    assert_eq!(stats.sent, 0, "{stats:?}");
    assert_eq!(stats.received, 0, "{stats:?}");
}
