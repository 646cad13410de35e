//! The supervisor against the real RabbitMQ: acks, dead-lettering, panics, the concurrency
//! limit, restarts after forced closes without losing a message, graceful shutdown, and the
//! errors it must stop on instead of looping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::proto::FieldTable;
use serena::worker::{Backoff, ConsumerSpec, ErrorPolicy, Outcome, Supervisor, SupervisorError};
use serena::{ConnectionConfig, Error, QueueDeclareOptions, open_connection};
use serena_tests::handlers::handler_fn;
use serena_tests::{publish_ids, unique_name};
use tokio::sync::Notify;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn config(name: &str) -> ConnectionConfig {
    ConnectionConfig {
        connection_name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Declares `queue` (with `arguments`) and publishes `count` numbered, confirmed messages.
async fn fill(queue: &str, arguments: FieldTable, count: u32) {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(
                queue,
                QueueDeclareOptions {
                    arguments,
                    ..Default::default()
                },
            )
            .await?;
            publish_ids(ch, "", queue, 0..u64::from(count), 500).await
        })
        .await?
    })
    .await
    .expect("connection")
    .expect("fill");
}

/// Messages ready in `queue`, then deletes it.
async fn depth_and_delete(queue: &str) -> u32 {
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            let n = ch
                .queue_declare(
                    queue,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await?
                .message_count;
            ch.queue_delete(queue, false, false).await?;
            Ok::<_, Error>(n)
        })
        .await?
    })
    .await
    .expect("connection")
    .expect("depth")
}

fn body_number(d: &serena::Delivery) -> u32 {
    std::str::from_utf8(&d.body)
        .expect("utf-8")
        .parse()
        .expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_ack_and_errors_go_to_the_dead_letter_queue() {
    let q = leak(unique_name("work"));
    let dlq = unique_name("dead");
    fill(&dlq, FieldTable::new(), 0).await;
    let args = FieldTable::new()
        .with("x-dead-letter-exchange", "")
        .with("x-dead-letter-routing-key", dlq.as_str());
    fill(q, args, 100).await;

    let done = Arc::new(Notify::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let spec = ConsumerSpec {
        on_error: ErrorPolicy::Reject,
        ..ConsumerSpec::new("work", q)
    };
    let handler = {
        let (done, seen) = (done.clone(), seen.clone());
        handler_fn(spec, move |d| {
            let (done, seen) = (done.clone(), seen.clone());
            async move {
                let n = body_number(&d);
                if seen.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                    done.notify_one();
                }
                // Every tenth message fails and is dead-lettered; the rest are acked.
                if n.is_multiple_of(10) {
                    Outcome::Reject
                } else {
                    Outcome::Ack
                }
            }
        })
    };
    let sup = Supervisor::new(config(&unique_name("sup"))).consumer(handler);
    let handle = sup.handle();
    let waited = done.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        sup.run_until(async move { waited.notified().await }),
    )
    .await
    .expect("finishes")
    .expect("clean stop");
    let stats = handle.stats();
    assert_eq!(
        (stats.delivered, stats.acked, stats.rejected),
        (100, 90, 10),
        "{stats:?}"
    );
    assert_eq!(depth_and_delete(q).await, 0);
    assert_eq!(depth_and_delete(&dlq).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_handler_error_and_the_rest_keep_flowing() {
    let q = leak(unique_name("panic"));
    fill(q, FieldTable::new(), 20).await;
    let done = Arc::new(Notify::new());
    let acked = Arc::new(AtomicUsize::new(0));
    let spec = ConsumerSpec {
        on_error: ErrorPolicy::Reject,
        ..ConsumerSpec::new("panicky", q)
    };
    let handler = {
        let (done, acked) = (done.clone(), acked.clone());
        handler_fn(spec, move |d| {
            let (done, acked) = (done.clone(), acked.clone());
            async move {
                if body_number(&d) == 7 {
                    panic!("handler bug on message 7");
                }
                if acked.fetch_add(1, Ordering::SeqCst) + 1 == 19 {
                    done.notify_one();
                }
                Outcome::Ack
            }
        })
    };
    let sup = Supervisor::new(config(&unique_name("sup"))).consumer(handler);
    let handle = sup.handle();
    let waited = done.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        sup.run_until(async move { waited.notified().await }),
    )
    .await
    .expect("finishes")
    .expect("the tree survives a panic");
    let stats = handle.stats();
    assert_eq!(stats.panicked, 1, "{stats:?}");
    assert_eq!(stats.rejected, 1, "{stats:?}");
    assert_eq!(stats.acked, 19, "{stats:?}");
    assert_eq!(stats.restarts, 0, "{stats:?}");
    assert_eq!(depth_and_delete(q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_respected_independently_of_prefetch() {
    let q = leak(unique_name("conc"));
    fill(q, FieldTable::new(), 30).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let spec = ConsumerSpec {
        prefetch: Some(20),
        concurrency: Some(3),
        ..ConsumerSpec::new("conc", q)
    };
    let handler = {
        let (running, peak, finished, done) = (
            running.clone(),
            peak.clone(),
            finished.clone(),
            done.clone(),
        );
        handler_fn(spec, move |_| {
            let (running, peak, finished, done) = (
                running.clone(),
                peak.clone(),
                finished.clone(),
                done.clone(),
            );
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if finished.fetch_add(1, Ordering::SeqCst) + 1 == 30 {
                    done.notify_one();
                }
                Outcome::Ack
            }
        })
    };
    let waited = done.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        Supervisor::new(config(&unique_name("sup")))
            .consumer(handler)
            .run_until(async move { waited.notified().await }),
    )
    .await
    .expect("finishes")
    .expect("clean stop");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "never more than 3 at once, and 3 reached"
    );
    assert_eq!(depth_and_delete(q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_closes_restart_the_tree_and_lose_nothing() {
    const TOTAL: u32 = 10_000;
    let q = leak(unique_name("restart"));
    let conn_name = unique_name("restart-sup");
    fill(q, FieldTable::new(), TOTAL).await;
    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let spec = ConsumerSpec {
        prefetch: Some(50),
        concurrency: Some(4),
        ..ConsumerSpec::new("restart", q)
    };
    let handler = {
        let (seen, done) = (seen.clone(), done.clone());
        handler_fn(spec, move |d| {
            let (seen, done) = (seen.clone(), done.clone());
            async move {
                // Slow enough that the forced closes land mid-stream.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let mut s = seen.lock().expect("lock");
                *s.entry(body_number(&d)).or_default() += 1;
                if s.len() == TOTAL as usize {
                    done.notify_one();
                }
                Outcome::Ack
            }
        })
    };
    let sup = Supervisor::new(config(&conn_name))
        .consumer(handler)
        .backoff(fast_backoff());
    let mut handle = sup.handle();
    let waited = done.clone();
    let run = tokio::spawn(sup.run_until(async move { waited.notified().await }));

    let mut restart_times = Vec::new();
    for round in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), handle.ready())
            .await
            .expect("ready");
        // Let it consume a while, then force-close its connection.
        let target = (round + 1) * TOTAL as usize / 4;
        let start = Instant::now();
        while seen.lock().expect("lock").len() < target {
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        serena_tests::rabbitmqctl::close_connection_async(
            &conn_name,
            "test: forced close",
            Duration::from_secs(10),
        )
        .await
        .expect("close the supervisor's connection");
        let closed_at = Instant::now();
        // It restarts, and becomes ready again.
        tokio::time::timeout(Duration::from_secs(10), async {
            while handle.stats().restarts < round as u64 + 1 || !handle.is_ready() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("restarts");
        restart_times.push(closed_at.elapsed());
        assert!(
            seen.lock().expect("lock").len() < TOTAL as usize,
            "the close landed mid-stream"
        );
    }
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("all messages processed")
        .expect("join")
        .expect("clean stop");
    let seen = seen.lock().expect("lock").clone();
    let missing: Vec<_> = (0..TOTAL).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let stats = handle.stats();
    assert!(stats.restarts >= 2, "{stats:?}");
    // Duplicates come only from messages in flight at a close: at most prefetch per close.
    assert!(duplicates <= 2 * 50, "{duplicates} duplicates");
    println!(
        "restart test: {TOTAL} processed, {duplicates} duplicates, restarts {}, time to ready again {restart_times:?}, dropped settles {}",
        stats.restarts, stats.dropped
    );
    assert_eq!(depth_and_delete(q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_handlers_and_requeues_the_rest() {
    let q = leak(unique_name("graceful"));
    fill(q, FieldTable::new(), 10).await;
    let started = Arc::new(AtomicUsize::new(0));
    let both_started = Arc::new(Notify::new());
    let spec = ConsumerSpec {
        prefetch: Some(10),
        concurrency: Some(2),
        ..ConsumerSpec::new("graceful", q)
    };
    let handler = {
        let (started, both_started) = (started.clone(), both_started.clone());
        handler_fn(spec, move |_| {
            let (started, both_started) = (started.clone(), both_started.clone());
            async move {
                if started.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                    both_started.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Outcome::Ack
            }
        })
    };
    let sup = Supervisor::new(config(&unique_name("sup")))
        .consumer(handler)
        .shutdown_timeout(Duration::from_secs(5));
    let handle = sup.handle();
    let waited = both_started.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        sup.run_until(async move { waited.notified().await }),
    )
    .await
    .expect("finishes")
    .expect("clean stop");
    let stats = handle.stats();
    assert_eq!(
        stats.acked, 2,
        "the two in-flight handlers finished and were acked: {stats:?}"
    );
    assert_eq!(
        stats.delivered, 2,
        "no handler started after the signal: {stats:?}"
    );
    assert_eq!(
        depth_and_delete(q).await,
        8,
        "prefetched messages went back to the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_a_restart_cannot_fix_stop_the_supervisor() {
    let missing = leak(unique_name("missing"));
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        Supervisor::new(config(&unique_name("sup")))
            .consumer(handler_fn(ConsumerSpec::new("m", missing), |_| async {
                Outcome::Ack
            }))
            .backoff(fast_backoff())
            .run_until(std::future::pending()),
    )
    .await
    .expect("stops instead of looping")
    .expect_err("a missing queue is permanent");
    let SupervisorError::Permanent(e) = err else {
        panic!("expected Permanent, got {err:?}")
    };
    assert_eq!(e.reply_code(), Some(404));

    let bad_login = ConnectionConfig {
        password: serena::Password::new("wrong"),
        ..Default::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        Supervisor::new(bad_login)
            .consumer(handler_fn(ConsumerSpec::new("m", missing), |_| async {
                Outcome::Ack
            }))
            .backoff(fast_backoff())
            .run_until(std::future::pending()),
    )
    .await
    .expect("stops instead of looping")
    .expect_err("access refused is permanent");
    assert!(
        matches!(&err, SupervisorError::Permanent(e) if e.reply_code() == Some(403)),
        "{err:?}"
    );
}
