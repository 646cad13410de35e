//! An operator closes the connection (`rabbitmqctl close_connection`, reply 320) while the
//! user's code is in the middle of something (publishing with confirms, consuming, a
//! get/declare loop, declaring exchanges, queues and bindings from several tasks at once, a
//! handle-style channel used elsewhere): the scope returns the 320 close, the code inside it
//! is cancelled, and every call still pending resolves with an error.
//!
//! ```text
//!   test                     scope body                      rabbitmqctl (blocking pool)
//!    | join!(scope, killer)    | set up pending calls
//!    |                         | ---- ready ---------------->  list_connections, find ours
//!    |                         | .await (pending)              close_connection <pid> test
//!    |  <-- Err(320) ----------x cancelled                     returns
//!    |  assert: 320, cancelled, within NOTICE of the close, leftovers resolve
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serena::proto::FieldTable;
use serena::{Channel, Confirmation, ConsumeOptions, Error, PublishOptions, open_connection};
use serena_tests::{rabbitmqctl, unique_name};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{Cancelled, LIMIT, assert_forced, broker_config, exclusive};

/// How soon after `rabbitmqctl close_connection` returns the scope must have ended.
const NOTICE: Duration = Duration::from_secs(3);

/// How long `rabbitmqctl` may take to list the connection once it is open.
const FIND: Duration = Duration::from_secs(10);

/// Runs `scope` and, once it signals `ready`, closes the connection named `name` with
/// `rabbitmqctl`. Returns the scope's result and how long after the close command returned
/// the scope ended (zero when it ended first).
async fn with_forced_close<T>(
    name: &str,
    ready: oneshot::Receiver<()>,
    scope: impl Future<Output = serena::Result<T>>,
) -> (serena::Result<T>, Duration) {
    let killer = async {
        ready
            .await
            .expect("the scope signals once its calls are pending");
        rabbitmqctl::close_connection_async(name, "test", FIND)
            .await
            .expect("rabbitmqctl close_connection");
        Instant::now()
    };
    let scope = async {
        let result = scope.await;
        (result, Instant::now())
    };
    let ((result, ended), closed) = timeout(LIMIT, async { tokio::join!(scope, killer) })
        .await
        .expect("the scope ends after a forced close");
    (result, ended.saturating_duration_since(closed))
}

/// Unwraps the scope's error and checks it is the forced close, noticed in time.
fn expect_forced<T: std::fmt::Debug>(result: serena::Result<T>, noticed_after: Duration) {
    let err = result.expect_err("the scope fails when the broker closes the connection");
    assert_forced(&err);
    assert!(
        err.unexpected_close()
            .is_some_and(|c| c.reply_text.contains("test")),
        "the operator's reason is kept: {err:?}"
    );
    assert!(
        noticed_after < NOTICE,
        "noticed {noticed_after:?} after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publishes_fail_and_none_hangs() {
    let name = unique_name("forced-publish");
    let q = unique_name("forced-publish");
    let cancelled = Cancelled::default();
    let confirmations: Mutex<Vec<Confirmation>> = Mutex::new(Vec::new());
    let (ready_tx, ready) = oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            let _guard = cancelled.guard();
            // Bounded, so the broker's memory is not the test's business.
            let args = FieldTable::new().with("x-max-length", 200i32);
            let options = exclusive().with_arguments(args);
            ch.queue_declare(&q, options).await?;
            // 16 KiB bodies published as fast as the write buffer takes them: the client
            // is always megabytes ahead of the broker's confirms, so whenever the close
            // comes, publishes are in flight (with 8-byte bodies and pauses, now and then
            // everything was confirmed at the close and the test proved nothing).
            let mut body = vec![0u8; 16 * 1024];
            for n in 0u64.. {
                body[..8].copy_from_slice(&n.to_be_bytes());
                let c = ch
                    .basic_publish_with(
                        "",
                        &q,
                        &body,
                        Default::default(),
                        PublishOptions::default(),
                    )
                    .await?;
                confirmations.lock().unwrap().push(c);
                if n == 1000
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), Error>(())
        })
        .await
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    assert!(
        cancelled.happened(),
        "the publishing loop is no longer running"
    );

    // Every confirmation handed out resolves: acked before the close, or failed by it.
    let pending = std::mem::take(&mut *confirmations.lock().unwrap());
    let total = pending.len();
    let results = timeout(Duration::from_secs(10), async {
        let mut results = Vec::with_capacity(total);
        for c in pending {
            results.push(c.await);
        }
        results
    })
    .await
    .expect("no confirmation hangs after the connection is gone");
    let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in &failed {
        assert_forced(e);
    }
    let acked = total - failed.len();
    eprintln!(
        "{total} publishes: {acked} confirmed, {} failed",
        failed.len()
    );
    assert!(acked > 1000, "publishes before the close were confirmed");
    assert!(
        !failed.is_empty(),
        "publishes in flight at the close fail with it"
    );
}

#[tokio::test]
async fn a_waiting_consumer_is_cancelled() {
    let name = unique_name("forced-consume");
    let cancelled = Cancelled::default();
    let (ready_tx, ready) = oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            let q = ch.queue_declare("", exclusive()).await?.queue;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            let _guard = cancelled.guard();
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            // Nothing is ever published: this waits until the connection goes. Should the
            // stream end before the scope is cancelled, it must end with the close.
            let end = consumer
                .next()
                .await
                .expect("the stream ends with a reason");
            assert_forced(&end.expect_err("no message was published"));
            std::future::pending::<()>().await;
            Ok::<(), Error>(())
        })
        .await
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    assert!(cancelled.happened(), "the waiting consumer was dropped");
}

#[tokio::test]
async fn a_get_and_declare_loop_is_cancelled() {
    let name = unique_name("forced-loop");
    let q = unique_name("forced-loop");
    let cancelled = Cancelled::default();
    let rounds = AtomicU64::new(0);
    let (ready_tx, ready) = oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        conn.open_channel(async |ch| -> serena::Result<()> {
            let _guard = cancelled.guard();
            loop {
                ch.queue_declare(&q, exclusive()).await?;
                ch.basic_get(&q, false).await?;
                if rounds.fetch_add(1, Ordering::Relaxed) == 20
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        })
        .await
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    assert!(cancelled.happened(), "the loop is no longer running");
    assert!(rounds.load(Ordering::Relaxed) > 20, "the loop was running");
}

/// What the task using a handle-style channel saw.
#[derive(Debug)]
struct WorkerSaw {
    next: Option<serena::Result<serena::Delivery>>,
    get_loop: Error,
    closed: Error,
    after: serena::Result<serena::QueueDeclareOk>,
    after_took: Duration,
    open: bool,
}

#[tokio::test]
async fn a_channel_used_from_another_task_fails_every_pending_call() {
    let name = unique_name("forced-handle");
    let cancelled = Cancelled::default();
    let (ready_tx, ready) = oneshot::channel();
    let (channel_tx, channel_rx) = oneshot::channel::<Channel>();
    let mut channel_tx = Some(channel_tx);

    // A task outside the scope, owned by the test, that only holds the channel.
    let worker = tokio::spawn(async move {
        let ch = channel_rx.await.expect("the scope hands over a channel");
        let q = ch
            .queue_declare("", exclusive())
            .await
            .expect("declare")
            .queue;
        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::default())
            .await
            .expect("consume");
        let _ = ready_tx.send(());
        let get_loop = async {
            loop {
                if let Err(e) = ch.basic_get(&q, true).await {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let (next, get_loop, closed) = tokio::join!(consumer.next(), get_loop, ch.closed());
        let start = Instant::now();
        let after = ch.queue_declare("", exclusive()).await;
        WorkerSaw {
            next,
            get_loop,
            closed,
            after,
            after_took: start.elapsed(),
            open: ch.is_open(),
        }
    });

    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        let _guard = cancelled.guard();
        let ch = conn.channel().await?;
        if let Some(tx) = channel_tx.take() {
            let _ = tx.send(ch.clone());
        }
        std::future::pending::<()>().await;
        Ok::<(), Error>(())
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    assert!(cancelled.happened(), "the scope's body was dropped");

    let saw = timeout(Duration::from_secs(10), worker)
        .await
        .expect("every call the task made resolves")
        .expect("the task did not panic");
    let next = saw.next.expect("the consumer stream ends with a reason");
    assert_forced(&next.expect_err("no message was published"));
    assert_forced(&saw.get_loop);
    assert_forced(&saw.closed);
    assert_forced(&saw.after.expect_err("a call after the close fails"));
    assert!(
        saw.after_took < Duration::from_millis(500),
        "a call on a dead channel fails at once, took {:?}",
        saw.after_took
    );
    assert!(!saw.open, "the channel reports itself closed");
}

/// Sanity check of the helper the tests above rely on: closing a name nobody uses is an
/// error, not a silent success.
#[test]
fn closing_an_unknown_connection_is_reported() {
    let err =
        rabbitmqctl::close_connection(&unique_name("nobody"), "test", Duration::from_millis(100))
            .expect_err("no such connection");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

/// A clone of the connection held by a task outside the scope sees the same close, and a
/// channel asked of it afterwards fails at once instead of waiting for an `open-ok`.
#[tokio::test]
async fn a_connection_clone_elsewhere_sees_the_forced_close() {
    let name = unique_name("forced-clone");
    let (ready_tx, ready) = oneshot::channel();
    let (conn_tx, conn_rx) = oneshot::channel::<serena::Connection>();
    let mut conn_tx = Some(conn_tx);
    let watcher = tokio::spawn(async move {
        let conn = conn_rx.await.expect("the scope hands over a clone");
        let _ = ready_tx.send(());
        let why = conn.closed().await;
        let start = Instant::now();
        let channel = conn.channel().await;
        (why, conn.error(), channel.map(|_| ()), start.elapsed())
    });
    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        if let Some(tx) = conn_tx.take() {
            let _ = tx.send(conn.clone());
        }
        std::future::pending::<serena::Result<()>>().await
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    let (why, error, channel, took) = timeout(Duration::from_secs(10), watcher)
        .await
        .expect("closed() resolves")
        .expect("the task did not panic");
    assert_forced(&why);
    assert_forced(&error.expect("the clone knows the connection ended"));
    assert_forced(&channel.expect_err("no channel on a dead connection"));
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Declarations in flight on two channels, made by tasks outside the scope: each task's
/// pending declare, bind or exchange declare fails with the 320 close, and none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_in_flight_fail_with_the_close() {
    let name = unique_name("forced-declare");
    let exchange = unique_name("forced-declare");
    let cancelled = Cancelled::default();
    let (ready_tx, ready) = oneshot::channel();
    let (channels_tx, channels_rx) = oneshot::channel::<[Channel; 2]>();
    let mut channels_tx = Some(channels_tx);
    let rounds = std::sync::Arc::new(AtomicU64::new(0));

    // Four declaring loops, two per channel, so several declarations wait at once.
    let declarers = tokio::spawn({
        let (rounds, exchange) = (rounds.clone(), exchange.clone());
        async move {
            let channels = channels_rx
                .await
                .expect("the scope hands over its channels");
            let mut ready_tx = Some(ready_tx);
            let mut lanes = tokio::task::JoinSet::new();
            for lane in 0..4u32 {
                let ch = channels[lane as usize % 2].clone();
                let (rounds, exchange) = (rounds.clone(), exchange.clone());
                lanes.spawn(async move {
                    let auto_delete =
                        serena::ExchangeDeclareOptions::default().with_auto_delete(true);
                    for n in 0u64.. {
                        let declared = async {
                            // Auto-delete: it goes with the last exclusive queue bound to it.
                            ch.exchange_declare(&exchange, "direct", auto_delete.clone())
                                .await?;
                            let q = ch.queue_declare("", exclusive()).await?.queue;
                            ch.queue_bind(&q, &exchange, &format!("{lane}.{n}"), FieldTable::new())
                                .await
                        };
                        if let Err(e) = declared.await {
                            return e;
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    unreachable!("the loop only ends on an error")
                });
            }
            while rounds.load(Ordering::Relaxed) < 40 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = ready_tx.take().expect("once").send(());
            let mut errors = Vec::new();
            while let Some(end) = lanes.join_next().await {
                errors.push(end.expect("a declaring task did not panic"));
            }
            errors
        }
    });

    let config = broker_config(&name);
    let scope = open_connection(&config, async |conn| {
        let _guard = cancelled.guard();
        let channels = [conn.channel().await?, conn.channel().await?];
        if let Some(tx) = channels_tx.take() {
            let _ = tx.send(channels);
        }
        std::future::pending::<()>().await;
        Ok::<(), Error>(())
    });
    let (result, noticed_after) = with_forced_close(&name, ready, scope).await;
    expect_forced(result, noticed_after);
    assert!(cancelled.happened(), "the scope's body was dropped");

    let scope_ended = Instant::now();
    let errors = timeout(Duration::from_secs(10), declarers)
        .await
        .expect("every pending declaration resolves")
        .expect("the declaring tasks did not panic");
    let waited = scope_ended.elapsed();
    assert_eq!(errors.len(), 4);
    for err in &errors {
        assert_forced(err);
    }
    assert!(
        waited < NOTICE,
        "the declarations failed {waited:?} after the scope ended"
    );
    eprintln!(
        "{} declare rounds before the close; all 4 declaring tasks failed with 320",
        rounds.load(Ordering::Relaxed)
    );
}
