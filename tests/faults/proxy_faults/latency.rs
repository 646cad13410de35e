//! 50 ms added each way by the proxy (100 ms round trips), with 1 s heartbeats: the
//! handshake, calls, 300 confirmed publishes in flight, an idle spell longer than two
//! heartbeat intervals and a consumer all work, and nothing times out wrongly.
//!
//! ```text
//!   serena ──(+50 ms)──► Proxy ──► RabbitMQ
//!   serena ◄──(+50 ms)── Proxy ◄── RabbitMQ
//! ```

use std::time::{Duration, Instant};

use serena::{Error, QueueDeclareOptions, open_connection};
use serena_tests::proxy::{Direction, Proxy};
use serena_tests::unique_name;
use tokio::time::timeout;

use super::{LIMIT, id_of, numbered};

const ONE_WAY: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_ms_each_way_slows_calls_but_breaks_nothing() {
    const MESSAGES: u32 = 300;
    let proxy = Proxy::start().await.expect("proxy");
    for d in Direction::BOTH {
        proxy.set_latency(d, ONE_WAY);
    }
    let config = proxy
        .client_config(&unique_name("latency"))
        .with_heartbeat(Duration::from_secs(1));
    let (rpc, publishing, stats) = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            let measured = conn
                .open_channel(async |ch| {
                    let exclusive = QueueDeclareOptions::default().with_exclusive(true);
                    let q = ch.queue_declare("", exclusive).await?.queue;
                    let passive = QueueDeclareOptions::default().with_passive(true);
                    // Calls one after another: each waits a full round trip.
                    let start = Instant::now();
                    for _ in 0..5 {
                        ch.queue_declare(&q, passive.clone()).await?;
                    }
                    let rpc = start.elapsed() / 5;

                    // Many confirmed publishes in flight at once.
                    let start = Instant::now();
                    let mut pending = Vec::new();
                    for id in 0..MESSAGES {
                        pending.push(
                            ch.basic_publish_with(
                                "",
                                &q,
                                numbered(id, 256),
                                Default::default(),
                                Default::default(),
                            )
                            .await?,
                        );
                    }
                    for c in pending {
                        c.await?;
                    }
                    let publishing = start.elapsed();

                    // Idle for more than two heartbeat intervals: heartbeats, delayed too,
                    // keep the connection alive.
                    tokio::time::sleep(Duration::from_millis(2500)).await;

                    let mut consumer = ch.basic_consume(&q, Default::default()).await?;
                    for expected in 0..MESSAGES {
                        let delivery = timeout(Duration::from_secs(10), consumer.next())
                            .await
                            .expect("deliveries keep coming")
                            .expect("the stream goes on")?;
                        assert_eq!(id_of(&delivery.body), expected, "in order");
                        delivery.ack()?;
                    }
                    Ok::<_, Error>((rpc, publishing))
                })
                .await?;
            Ok::<_, Error>((measured.0, measured.1, conn.heartbeat_stats()))
        }),
    )
    .await
    .expect("no hang")
    .expect("the connection never failed under latency and every call succeeded");
    assert!(
        rpc >= 2 * ONE_WAY,
        "the proxy delays each call by a round trip: {rpc:?}"
    );
    assert!(
        stats.received > 0,
        "the broker's heartbeats came through: {stats:?}"
    );
    assert!(stats.sent > 0, "we sent heartbeats while idle: {stats:?}");
    println!(
        "latency {ONE_WAY:?} each way: a call takes {rpc:?}, {MESSAGES} confirmed publishes {publishing:?}, \
         heartbeats sent {} received {}",
        stats.sent, stats.received
    );
}
