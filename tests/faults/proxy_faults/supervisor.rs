//! A supervisor whose connection runs through the proxy survives three faults in a row,
//! each landing mid-stream: every connection cut at once, a cut in the middle of a delivered
//! message's body, and a stall both ways that starves heartbeats. After each it restarts by
//! itself and becomes ready again; in the end every message was consumed, none lost, and the
//! duplicates (messages in flight at a fault, redelivered) are counted.
//!
//! ```text
//!   fill 3,000 ──► queue ──► Proxy ──► Supervisor (prefetch 50, 4 handlers, 1 s heartbeat)
//!   at 1/4: cut_all     at 2/4: cut mid body frame     at 3/4: stall both ways until noticed
//!   each: restarts + 1, ready again;   end: seen ⊇ all ids, duplicates ≤ 3 × prefetch
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::worker::{Backoff, ConsumerSpec, Outcome, Supervisor, SupervisorHandle};
use serena_tests::handlers::handler_fn;
use serena_tests::proxy::{Direction, Proxy};
use serena_tests::unique_name;
use tokio::sync::Notify;
use tokio::time::timeout;

use super::{declare, delete, fill, id_of};

const TOTAL: u32 = 3_000;
const SIZE: usize = 1024;
const PREFETCH: u16 = 50;

#[derive(Debug, Clone, Copy)]
enum Fault {
    CutAll,
    CutMidFrame,
    Stall,
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_behind_the_proxy_restarts_after_each_fault_and_loses_nothing() {
    let q_name = unique_name("proxied-sup");
    let q = q_name.as_str();
    declare(q).await;
    fill(q, 0..TOTAL, SIZE).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy
        .client_config(&unique_name("proxied-sup"))
        .with_heartbeat(Duration::from_secs(1));

    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let spec = ConsumerSpec {
        prefetch: Some(PREFETCH),
        concurrency: Some(4),
        ..ConsumerSpec::new("proxied", q.to_owned())
    };
    let handler = {
        let (seen, done) = (seen.clone(), done.clone());
        handler_fn(spec, move |d| {
            let (seen, done) = (seen.clone(), done.clone());
            async move {
                // Slow enough that every fault lands mid-stream.
                tokio::time::sleep(Duration::from_millis(3)).await;
                let mut s = seen.lock().expect("lock");
                *s.entry(id_of(&d.body)).or_default() += 1;
                if s.len() == TOTAL as usize {
                    done.notify_one();
                }
                Outcome::Ack
            }
        })
    };
    let sup = Supervisor::new(config).consumer(handler).backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        ..Backoff::default()
    });
    let mut handle: SupervisorHandle = sup.handle();
    let waited = done.clone();
    let run = tokio::spawn(sup.run_until(async move { waited.notified().await }));
    let progress = || seen.lock().expect("lock").len();

    let mut figures = Vec::new();
    for (round, fault) in [Fault::CutAll, Fault::CutMidFrame, Fault::Stall]
        .into_iter()
        .enumerate()
    {
        timeout(Duration::from_secs(20), handle.ready())
            .await
            .expect("ready");
        let target = (round + 1) * TOTAL as usize / 4;
        until("progress", Duration::from_secs(60), || progress() >= target).await;
        let (faulted_at, noticed) = match fault {
            Fault::CutAll => {
                proxy.cut_all();
                (Instant::now(), None)
            }
            Fault::CutMidFrame => {
                let report = proxy.cut_mid_frame(Direction::ServerToClient, SIZE as u32 / 2);
                let report = timeout(Duration::from_secs(10), report)
                    .await
                    .expect("the cut happens")
                    .expect("reported");
                assert_eq!(report.frame_type, 3, "cut inside a body: {report:?}");
                (report.at, None)
            }
            Fault::Stall => {
                for d in Direction::BOTH {
                    proxy.stall(d);
                }
                let at = Instant::now();
                until("heartbeat loss noticed", Duration::from_secs(3), || {
                    !handle.is_ready()
                })
                .await;
                let noticed = at.elapsed();
                for d in Direction::BOTH {
                    proxy.resume(d);
                }
                assert!(
                    noticed <= Duration::from_millis(2250),
                    "heartbeat loss noticed {noticed:?} after the stall"
                );
                (at, Some(noticed))
            }
        };
        until("restart and ready again", Duration::from_secs(10), || {
            handle.stats().restarts == round as u64 + 1 && handle.is_ready()
        })
        .await;
        let ready_again = faulted_at.elapsed();
        assert!(
            progress() < TOTAL as usize,
            "the {fault:?} landed mid-stream"
        );
        figures.push(format!(
            "{fault:?}: {}ready again after {ready_again:?}",
            noticed.map_or(String::new(), |n| format!("noticed after {n:?}, "))
        ));
    }

    timeout(Duration::from_secs(60), run)
        .await
        .expect("every message consumed")
        .expect("join")
        .expect("clean stop");
    let seen = seen.lock().expect("lock").clone();
    let lost: Vec<u32> = (0..TOTAL).filter(|id| !seen.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "lost {} messages: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let stats = handle.stats();
    assert_eq!(stats.restarts, 3, "one restart per fault: {stats:?}");
    assert!(
        duplicates <= 3 * u32::from(PREFETCH),
        "only messages in flight at a fault come twice: {duplicates}"
    );
    println!(
        "supervisor behind the proxy: {TOTAL} consumed, 0 lost, {duplicates} duplicates, {} dropped settles; {}; proxy {:?}",
        stats.dropped,
        figures.join("; "),
        proxy.stats()
    );
    delete(q).await;
}
