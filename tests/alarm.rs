//! The broker's memory alarm (`rabbitmqctl set_vm_memory_high_watermark 0`): RabbitMQ blocks
//! every connection that publishes (`connection.blocked`) until the alarm clears. serena
//! surfaces the block, publishers wait instead of failing or losing their message and go
//! through once it lifts, and a publish with a user-set timeout ([`PublishOptions::timeout`])
//! fails with [`Error::Timeout`] on time instead of waiting for the alarm, never reported
//! confirmed.
//!
//! ```text
//!  t   blocked connection (A)                 late connection (B)
//!  0   publish #0, confirmed
//!      ---- alarm raised (watermark 0) ----
//!      A has published: the broker blocks it    B has not: RabbitMQ blocks it only
//!      (connection.blocked) right away           when it next publishes
//!      publish #1 and 20 more (#2..#21) wait
//!      publish #100, timeout 1 s: waits to      publish #101, timeout 1 s: sent, no
//!        send -> Timeout, nothing sent            confirm -> Timeout (fate unknown)
//!      ---- alarm cleared (watermark restored) ----
//!      #1 and #2..#21 confirmed                 #101 lands late, never reported confirmed
//!  end: queue holds #0..#21 exactly once each, never #100
//! ```
//!
//! The watermark is put back by the [`MemoryAlarm`] guard even when the test fails. This test
//! is alone in its binary because the alarm blocks every publisher on the broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serena::{Channel, Error, PublishOptions, QueueDeclareOptions, open_connection};
use serena_tests::rabbitmqctl::MemoryAlarm;
use serena_tests::{config, unique_name};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The user's timeout on the publishes that must not wait for the alarm.
const USER_TIMEOUT: Duration = Duration::from_secs(1);

/// How late a timeout may fire on a busy machine.
const SLACK: Duration = Duration::from_millis(500);

/// Publishes left waiting while the connection is blocked.
const WAITING: u32 = 20;

/// A message published while blocked, before the user's timeout: nothing must be sent.
const UNSENT: u32 = 100;

/// A message sent before its connection was blocked, then timed out: fate unknown.
const SENT_LATE: u32 = 101;

fn with_timeout() -> PublishOptions {
    PublishOptions::default().with_timeout(Some(USER_TIMEOUT))
}

/// Asserts a timed publish failed with the user's timeout, on time.
fn assert_timed_out(result: &serena::Result<()>, took: Duration, what: &str) {
    assert!(
        matches!(result, Err(Error::Timeout(t)) if *t == USER_TIMEOUT),
        "{what}: expected Error::Timeout({USER_TIMEOUT:?}), got {result:?}"
    );
    assert!(
        took >= USER_TIMEOUT && took <= USER_TIMEOUT + SLACK,
        "{what}: the timeout fired after {took:?}"
    );
}

/// A publisher task waiting for its confirm: `(id, result)`.
fn spawn_publisher(ch: &Channel, queue: &str, id: u32) -> JoinHandle<(u32, serena::Result<()>)> {
    let (ch, queue) = (ch.clone(), queue.to_owned());
    tokio::spawn(async move {
        let r = ch
            .basic_publish("", &queue, id.to_string(), Default::default())
            .await;
        (id, r)
    })
}

/// Takes every message out of `queue` and deletes it; returns how often each id came.
async fn drain_and_delete(queue: &str) -> BTreeMap<u32, u32> {
    timeout(
        Duration::from_secs(30),
        open_connection(&config(&unique_name("alarm-check")), async |conn| {
            conn.open_channel(async |ch| {
                let mut ids = BTreeMap::new();
                while let Some(m) = ch.basic_get(queue, true).await? {
                    let id: u32 = std::str::from_utf8(&m.body)
                        .expect("utf-8")
                        .parse()
                        .expect("an id");
                    *ids.entry(id).or_default() += 1;
                }
                ch.queue_delete(queue, false, false).await?;
                Ok::<_, Error>(ids)
            })
            .await
        }),
    )
    .await
    .expect("no hang")
    .expect("the connection and the drain")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_wait_while_blocked_resume_after_and_user_timeouts_fire() {
    let q = unique_name("alarm");
    let figures = timeout(
        Duration::from_secs(90),
        open_connection(&config(&unique_name("alarm-a")), async |conn_a| {
            open_connection(&config(&unique_name("alarm-b")), async |conn_b| {
                let a = conn_a.channel().await?;
                let b = conn_b.channel().await?;
                a.queue_declare(&q, QueueDeclareOptions::default()).await?;
                a.basic_publish("", &q, b"0", Default::default()).await?;

                let alarm = tokio::task::spawn_blocking(MemoryAlarm::raise)
                    .await
                    .expect("join")
                    .expect("raise the alarm");
                // RabbitMQ blocks a connection that has published (A) at once, and one that
                // has not (B) when it first publishes.
                let start = Instant::now();
                let first = spawn_publisher(&a, &q, 1);
                let reason = loop {
                    if let Some(reason) = conn_a.blocked() {
                        break reason;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "connection.blocked was never surfaced"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert!(reason.to_lowercase().contains("memory"), "{reason}");
                let blocked_after = start.elapsed();
                let waiting: Vec<_> = (2..2 + WAITING)
                    .map(|id| spawn_publisher(&a, &q, id))
                    .collect();

                // A user-bounded publish on the blocked connection: it waits to be sent, then
                // gives up at its timeout; nothing went out.
                let start = Instant::now();
                let unsent = match a
                    .basic_publish_with(
                        "",
                        &q,
                        UNSENT.to_string(),
                        Default::default(),
                        with_timeout(),
                    )
                    .await
                {
                    Ok(confirmation) => {
                        panic!("sent while the connection is blocked: {confirmation:?}")
                    }
                    Err(e) => Err(e),
                };
                let unsent_took = start.elapsed();
                assert_timed_out(&unsent, unsent_took, "publish on the blocked connection");

                // A user-bounded publish on a connection not yet blocked: it is sent, the broker
                // holds it, and the confirmation gives up at the timeout.
                let start = Instant::now();
                let confirmation = b
                    .basic_publish_with(
                        "",
                        &q,
                        SENT_LATE.to_string(),
                        Default::default(),
                        with_timeout(),
                    )
                    .await?;
                let sent_late = confirmation.await;
                let late_took = start.elapsed();
                assert_timed_out(
                    &sent_late,
                    late_took,
                    "confirm of a publish the broker holds",
                );

                // The publishers without a timeout are still waiting, not failed.
                assert!(
                    !first.is_finished(),
                    "the first publish finished while blocked"
                );
                assert!(
                    waiting.iter().all(|p| !p.is_finished()),
                    "a publisher finished while blocked"
                );

                tokio::task::spawn_blocking(move || alarm.clear())
                    .await
                    .expect("join")
                    .expect("clear the alarm");
                let cleared = Instant::now();
                for publisher in std::iter::once(first).chain(waiting) {
                    let (id, result) = timeout(Duration::from_secs(20), publisher)
                        .await
                        .expect("every waiting publish goes through once unblocked")
                        .expect("join");
                    result.unwrap_or_else(|e| panic!("publish {id} after the alarm: {e:?}"));
                }
                let resumed_after = cleared.elapsed();
                assert_eq!(conn_a.blocked(), None);
                Ok::<_, Error>((blocked_after, resumed_after, unsent_took, late_took))
            })
            .await
        }),
    )
    .await
    .expect("the test finishes")
    .expect("both connections and the test's calls");

    // Both connections closed cleanly, so the broker has handled everything they sent.
    let ids = drain_and_delete(&q).await;
    for id in 0..2 + WAITING {
        assert_eq!(
            ids.get(&id),
            Some(&1),
            "message {id} is in the queue once: {ids:?}"
        );
    }
    assert!(
        !ids.contains_key(&UNSENT),
        "a publish that timed out before it was sent went out"
    );
    let late_landed = ids.contains_key(&SENT_LATE);
    println!(
        "memory alarm: connection.blocked surfaced {:?} after the alarm was set, {} publishes waited and all went through {:?} after the alarm cleared; \
         publishes with a {USER_TIMEOUT:?} timeout failed after {:?} (waiting to send) and {:?} (waiting for the confirm); \
         the one sent before the block {} after the alarm",
        figures.0,
        WAITING + 1,
        figures.1,
        figures.2,
        figures.3,
        if late_landed {
            "landed"
        } else {
            "did not land"
        },
    );
}
