//! The connection cut in the middle of a frame (the proxy forwards the frame's header and
//! half its payload, then closes both sockets), once while a consumer receives 48 KiB
//! messages and once while confirmed publishes stream out.
//!
//! ```text
//!   serena ◄── deliver, header, body[0..n/2] ✂ ── Proxy ◄── RabbitMQ     (consuming)
//!   serena ── publish, header, body[0..n/2] ✂ ──► Proxy ──► RabbitMQ     (publishing)
//!   scope: Err(Io) within NOTICE of the cut; body cancelled; confirmations all resolve;
//!   afterwards, on a direct connection: every message not acked is still in the queue,
//!   every confirmed message is in the queue.
//! ```

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serena::{Confirmation, Error, open_connection};
use serena_tests::proxy::{CutReport, Direction, Proxy};
use serena_tests::unique_name;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{
    Cancelled, LIMIT, assert_socket_closed, declare, delete, drain, fill, id_of, missing, numbered,
};

/// How soon after the cut the scope must have ended: the socket closes at the cut, so this
/// is only the time to read the end of the stream and fail everything waiting.
const NOTICE: Duration = Duration::from_secs(1);

/// Waits for the proxy's report of the cut.
async fn cut_report(rx: Option<oneshot::Receiver<CutReport>>) -> CutReport {
    let rx = rx.expect("the cut was armed");
    timeout(Duration::from_secs(10), rx)
        .await
        .expect("the cut is reported")
        .expect("the proxy reports the cut")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_frame_while_consuming_ends_the_scope_and_loses_nothing() {
    const TOTAL: u32 = 64;
    const SIZE: usize = 48 * 1024;
    let q = unique_name("cut-consume");
    declare(&q).await;
    fill(&q, 0..TOTAL, SIZE).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("cut-consume"));
    let cancelled = Cancelled::default();
    let acked: Mutex<Vec<u32>> = Mutex::default();
    let armed: Mutex<Option<oneshot::Receiver<CutReport>>> = Mutex::default();

    let result = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            conn.open_channel(async |ch| {
                let _guard = cancelled.guard();
                let mut consumer = ch.basic_consume(&q, Default::default()).await?;
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery?;
                    delivery.ack()?;
                    let count = {
                        let mut acked = acked.lock().expect("lock");
                        acked.push(id_of(&delivery.body));
                        acked.len()
                    };
                    // After ten messages, and time for their acks to reach the broker, cut
                    // inside the next 48 KiB body frame.
                    if count == 10 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        *armed.lock().expect("lock") =
                            Some(proxy.cut_mid_frame(Direction::ServerToClient, SIZE as u32 / 2));
                    }
                }
                Ok::<(), Error>(())
            })
            .await
        }),
    )
    .await
    .expect("the scope ends after the cut");
    let ended = Instant::now();

    let err = result.expect_err("the scope fails when the connection is cut");
    let kind = assert_socket_closed(&err);
    let armed = armed.lock().expect("lock").take();
    let report = cut_report(armed).await;
    let noticed = ended.saturating_duration_since(report.at);
    assert_eq!(
        (report.frame_type, report.payload_size),
        (3, SIZE as u32),
        "the cut landed in a message body: {report:?}"
    );
    assert!(noticed < NOTICE, "noticed {noticed:?} after the cut");
    assert!(cancelled.happened(), "the consuming code was cancelled");

    // Nothing lost: what was not acked went back to the queue. An ack still in the proxy at
    // the cut is lost with the socket, so such a message is in the queue as well.
    let acked: BTreeSet<u32> = acked.lock().expect("lock").iter().copied().collect();
    let requeued: BTreeSet<u32> = drain(&q).await.into_iter().collect();
    let all: BTreeSet<u32> = acked.union(&requeued).copied().collect();
    assert_eq!(missing(0..TOTAL, &all), Vec::<u32>::new(), "lost messages");
    assert_eq!(all.len(), TOTAL as usize);
    println!(
        "cut while consuming: {kind:?} (frame type {}, {} of {} payload bytes through), noticed after {noticed:?}; \
         {} acked, {} back in the queue, {} of them acked but the ack was cut",
        report.frame_type,
        report.forwarded - 7,
        report.payload_size,
        acked.len(),
        requeued.len(),
        acked.intersection(&requeued).count(),
    );
    delete(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_frame_while_publishing_fails_pending_confirms_and_keeps_confirmed_ones() {
    const SIZE: usize = 16 * 1024;
    let q = unique_name("cut-publish");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("cut-publish"));
    let cancelled = Cancelled::default();
    let confirmations: Mutex<Vec<(u32, Confirmation)>> = Mutex::default();
    let confirmed_first: Mutex<Vec<u32>> = Mutex::default();
    let armed: Mutex<Option<oneshot::Receiver<CutReport>>> = Mutex::default();

    let result = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            conn.open_channel(async |ch| {
                let _guard = cancelled.guard();
                for id in 0u32.. {
                    let confirmation = ch
                        .basic_publish_with(
                            "",
                            &q,
                            numbered(id, SIZE),
                            Default::default(),
                            Default::default(),
                        )
                        .await?;
                    confirmations.lock().expect("lock").push((id, confirmation));
                    // After 200 confirmed publishes, cut inside the next outgoing body frame
                    // while more stream out.
                    if id == 199 {
                        let first = std::mem::take(&mut *confirmations.lock().expect("lock"));
                        for (id, c) in first {
                            c.await?;
                            confirmed_first.lock().expect("lock").push(id);
                        }
                        *armed.lock().expect("lock") =
                            Some(proxy.cut_mid_frame(Direction::ClientToServer, SIZE as u32 / 2));
                    }
                    if id % 32 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Ok::<(), Error>(())
            })
            .await
        }),
    )
    .await
    .expect("the scope ends after the cut");
    let ended = Instant::now();

    let err = result.expect_err("the scope fails when the connection is cut");
    let kind = assert_socket_closed(&err);
    let armed = armed.lock().expect("lock").take();
    let report = cut_report(armed).await;
    let noticed = ended.saturating_duration_since(report.at);
    assert_eq!(
        (report.frame_type, report.payload_size),
        (3, SIZE as u32),
        "the cut landed in a message body: {report:?}"
    );
    assert!(noticed < NOTICE, "noticed {noticed:?} after the cut");
    assert!(cancelled.happened(), "the publishing loop was cancelled");

    // Every confirmation handed out resolves at once: confirmed before the cut, or failed.
    let pending = std::mem::take(&mut *confirmations.lock().expect("lock"));
    let published = 200 + pending.len();
    let results = timeout(Duration::from_secs(5), async {
        let mut results = Vec::with_capacity(pending.len());
        for (id, c) in pending {
            results.push((id, c.await));
        }
        results
    })
    .await
    .expect("no confirmation hangs after the cut");
    let mut confirmed = std::mem::take(&mut *confirmed_first.lock().expect("lock"));
    assert_eq!(
        confirmed.len(),
        200,
        "the first 200 were confirmed before the cut"
    );
    let mut failed = 0;
    for (id, result) in &results {
        match result {
            Ok(()) => confirmed.push(*id),
            Err(e) => {
                assert_socket_closed(e);
                failed += 1;
            }
        }
    }
    assert!(
        failed > 0,
        "the publish cut in half cannot have been confirmed"
    );
    assert!(
        confirmed.len() >= 100,
        "publishes before the cut were confirmed"
    );

    // Every confirmed message is in the queue; unconfirmed ones may or may not be.
    let landed: BTreeSet<u32> = drain(&q).await.into_iter().collect();
    assert_eq!(
        missing(confirmed.iter().copied(), &landed),
        Vec::<u32>::new(),
        "confirmed messages lost"
    );
    println!(
        "cut while publishing: {kind:?}, noticed after {noticed:?}; {published} published, {} confirmed, \
         {failed} failed, {} unconfirmed ones landed anyway",
        confirmed.len(),
        landed.len() - confirmed.len(),
    );
    delete(&q).await;
}
