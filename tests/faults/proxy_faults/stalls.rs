//! Traffic stalled by the proxy (the sockets stay open, nothing moves) from the server to the
//! client, or both ways, with 1 s heartbeats: nothing reaches serena any more, so after two
//! heartbeat intervals of silence it declares the connection dead with
//! `Error::HeartbeatTimeout`, and a publish still waiting for its confirm fails with it. The
//! bound holds while publishes stream out and fill every buffer on the way, too.
//!
//! Without heartbeats a stall goes unnoticed, so the user's own bound is all there is: a
//! publish with `PublishOptions::timeout` fails with `Error::Timeout` on time, and once the
//! link recovers the connection is still good (the late confirm is dropped, not misapplied).
//!
//! ```text
//!   t0: proxy.stall(...)            serena's reader: no byte since ≤ t0
//!   t0 + 2 s: HeartbeatTimeout(2 s) -> scope Err, body cancelled, pending confirm Err
//!   asserted: t_end - t0 <= 2 intervals (+ scheduling slack)
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serena::{Confirmation, Error, PublishOptions, QueueDeclareOptions, open_connection};
use serena_tests::proxy::{Direction, Proxy};
use serena_tests::unique_name;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{Cancelled, LIMIT};

/// The heartbeat interval asked for (the broker's default is 60 s, so ours wins).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Timer and scheduling delay allowed on top of the two intervals, on a busy machine.
const SLACK: Duration = Duration::from_millis(250);

/// What the user saw after the stall.
struct Outcome {
    error: Error,
    /// From the stall to the scope's end.
    noticed: Duration,
    /// The confirm of a publish sent after the stall began.
    pending: serena::Result<()>,
    cancelled: bool,
}

/// Opens a connection through a proxy, stalls `directions` once it works, and reports how
/// the connection ended.
async fn stall(directions: &[Direction]) -> Outcome {
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy
        .client_config(&unique_name("stall"))
        .with_heartbeat(HEARTBEAT);
    let cancelled = Cancelled::default();
    let pending: Mutex<Option<Confirmation>> = Mutex::default();
    let (ready_tx, ready) = oneshot::channel();
    let (go_tx, go) = oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let mut go = Some(go);

    let scope = open_connection(&config, async |conn| {
        assert_eq!(conn.tuning().heartbeat, 1);
        conn.open_channel(async |ch| {
            let _guard = cancelled.guard();
            let exclusive = QueueDeclareOptions::default().with_exclusive(true);
            let q = ch.queue_declare("", exclusive).await?.queue;
            ch.basic_publish("", &q, b"before", Default::default())
                .await?;
            let _ = ready_tx.take().expect("once").send(());
            go.take().expect("once").await.expect("the test stalls");
            // Sent (or queued) after the stall began: its confirm cannot come.
            let c = ch
                .basic_publish_with("", &q, b"during", Default::default(), Default::default())
                .await?;
            *pending.lock().expect("lock") = Some(c);
            std::future::pending::<()>().await;
            Ok::<(), Error>(())
        })
        .await
    });
    let staller = async {
        ready.await.expect("the connection works first");
        for &d in directions {
            proxy.stall(d);
        }
        let stalled_at = Instant::now();
        let _ = go_tx.send(());
        stalled_at
    };
    let ((result, ended), stalled_at) = timeout(LIMIT, async {
        tokio::join!(
            async {
                let r = scope.await;
                (r, Instant::now())
            },
            staller
        )
    })
    .await
    .expect("the stalled connection is given up, not waited on forever");
    let error = result.expect_err("a stalled connection fails");
    let confirmation = pending.lock().expect("lock").take();
    let pending = timeout(
        Duration::from_secs(1),
        confirmation.expect("the publish was made"),
    )
    .await
    .expect("the pending confirm resolves with the connection's end");
    Outcome {
        error,
        noticed: ended.saturating_duration_since(stalled_at),
        pending,
        cancelled: cancelled.happened(),
    }
}

fn assert_heartbeat_loss(outcome: &Outcome, what: &str) {
    match &outcome.error {
        Error::HeartbeatTimeout(after) => assert_eq!(*after, 2 * HEARTBEAT),
        other => panic!("{what}: expected HeartbeatTimeout, got {other:?}"),
    }
    assert!(
        outcome.noticed <= 2 * HEARTBEAT + SLACK,
        "{what}: noticed {:?} after the stall, more than two intervals",
        outcome.noticed
    );
    assert!(
        matches!(outcome.pending, Err(Error::HeartbeatTimeout(_))),
        "{what}: the pending confirm fails with the heartbeat loss: {:?}",
        outcome.pending
    );
    assert!(outcome.cancelled, "{what}: the user's code was cancelled");
    println!(
        "{what}: HeartbeatTimeout {:?} after the stall (heartbeat {HEARTBEAT:?})",
        outcome.noticed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_from_the_server_is_a_heartbeat_timeout_within_two_intervals() {
    let outcome = stall(&[Direction::ServerToClient]).await;
    assert_heartbeat_loss(&outcome, "server-to-client stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_both_ways_is_a_heartbeat_timeout_within_two_intervals() {
    let outcome = stall(&Direction::BOTH).await;
    assert_heartbeat_loss(&outcome, "two-way stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_heartbeats_a_user_timeout_bounds_a_publish_on_a_stalled_link() {
    const USER_TIMEOUT: Duration = Duration::from_millis(500);
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy
        .client_config(&unique_name("stall-no-heartbeat"))
        .with_heartbeat(Duration::ZERO);
    let (took, result) = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            conn.open_channel(async |ch| {
                let exclusive = QueueDeclareOptions::default().with_exclusive(true);
                let q = ch.queue_declare("", exclusive).await?.queue;
                ch.basic_publish("", &q, b"before", Default::default())
                    .await?;
                proxy.stall(Direction::ServerToClient);
                let options = PublishOptions::default().with_timeout(Some(USER_TIMEOUT));
                let start = Instant::now();
                let result = ch
                    .basic_publish_with("", &q, b"stalled", Default::default(), options)
                    .await?
                    .await;
                let took = start.elapsed();
                proxy.resume(Direction::ServerToClient);
                // The link is back: the stalled message's late confirm is dropped, and a new
                // publish gets its own.
                ch.basic_publish("", &q, b"after", Default::default())
                    .await?;
                let depth = ch
                    .queue_declare(&q, QueueDeclareOptions::default().with_passive(true))
                    .await?
                    .message_count;
                assert_eq!(depth, 3, "the stalled message was sent and landed late");
                Ok::<_, Error>((took, result))
            })
            .await
        }),
    )
    .await
    .expect("no hang")
    .expect("the connection survives the stall and the calls after it succeed");
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == USER_TIMEOUT),
        "expected Error::Timeout({USER_TIMEOUT:?}), got {result:?}"
    );
    assert!(
        took >= USER_TIMEOUT && took <= USER_TIMEOUT + SLACK,
        "the user's timeout fired after {took:?}"
    );
    println!(
        "stall without heartbeats: the publish timed out after {took:?} (timeout {USER_TIMEOUT:?})"
    );
}

/// A stall both ways while publishes stream out: the outgoing buffer and the socket fill up
/// and serena's writer waits on a socket that never drains. The heartbeat loss must still end
/// the scope within two intervals (the writer is not waited for: nobody reads any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_while_streaming_publishes_is_noticed_within_two_intervals() {
    const BODY: usize = 64 * 1024;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy
        .client_config(&unique_name("stall-stream"))
        .with_heartbeat(HEARTBEAT);
    let cancelled = Cancelled::default();
    let stalled_at: Mutex<Option<Instant>> = Mutex::default();
    let confirmations: Mutex<Vec<Confirmation>> = Mutex::default();
    let result = timeout(
        LIMIT,
        open_connection(&config, async |conn| {
            conn.open_channel(async |ch| {
                let _guard = cancelled.guard();
                // Bounded, so the broker's memory is not the test's business.
                let options = QueueDeclareOptions::default()
                    .with_exclusive(true)
                    .with_arguments(serena::proto::FieldTable::new().with("x-max-length", 100i32));
                let q = ch.queue_declare("", options).await?.queue;
                let body = vec![0x5A; BODY];
                for n in 0u32.. {
                    let c = ch
                        .basic_publish_with("", &q, &body, Default::default(), Default::default())
                        .await?;
                    let mut pending = confirmations.lock().expect("lock");
                    pending.push(c);
                    // Keep only the newest ones: the older ones are confirmed by now.
                    if pending.len() > 1000 {
                        pending.drain(..500);
                    }
                    drop(pending);
                    if n == 200 {
                        for d in Direction::BOTH {
                            proxy.stall(d);
                        }
                        *stalled_at.lock().expect("lock") = Some(Instant::now());
                    }
                }
                Ok::<(), Error>(())
            })
            .await
        }),
    )
    .await
    .expect("the stalled connection is given up, not waited on forever");
    let ended = Instant::now();
    let stalled_at = stalled_at.lock().expect("lock").take().expect("stalled");
    let noticed = ended.saturating_duration_since(stalled_at);
    let err = result.expect_err("a stalled connection fails");
    assert!(
        matches!(err, Error::HeartbeatTimeout(after) if after == 2 * HEARTBEAT),
        "expected HeartbeatTimeout, got {err:?}"
    );
    assert!(
        noticed <= 2 * HEARTBEAT + SLACK,
        "noticed {noticed:?} after the stall, more than two intervals"
    );
    assert!(cancelled.happened(), "the publishing loop was cancelled");
    let pending = std::mem::take(&mut *confirmations.lock().expect("lock"));
    let last = pending.into_iter().last().expect("publishes were made");
    let last = timeout(Duration::from_secs(1), last)
        .await
        .expect("the newest confirmation resolves with the connection's end");
    assert!(
        matches!(last, Err(Error::HeartbeatTimeout(_))),
        "the publish stuck behind the stall fails with it: {last:?}"
    );
    println!(
        "stall while streaming {} KiB publishes: HeartbeatTimeout {noticed:?} after the stall; proxy {:?}",
        BODY / 1024,
        proxy.stats()
    );
}
