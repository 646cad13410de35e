//! The broker application stopped and started again (`rabbitmqctl stop_app`, `start_app`)
//! under a running supervisor and two confirmed publishers: the supervisor restarts by itself
//! once the broker is back, and every message the broker confirmed is consumed at least once.
//!
//! ```text
//!   publishers (2, own reconnect loop, at-least-once: unconfirmed ids are sent again)
//!        │ persistent messages, confirms
//!        ▼
//!   durable queue ──► Supervisor (prefetch 50, 4 handlers) ──► seen ids
//!        ▲
//!   rabbitmqctl stop_app ... ~1 s down ... start_app + await_startup
//!   asserted: restarts ≥ 1, ready again, confirmed ⊆ seen; reported: duplicates, recovery time
//! ```
//!
//! Messages survive the restart because the queue is durable and the messages persistent
//! (serena publishes transient messages unless `delivery_mode` 2 is set, here with
//! `BasicProperties::with_persistent`). A guard starts the application again even when the
//! test fails or panics. This test is alone in its binary, and run under the exclusive broker
//! lock, because it takes the broker away from everyone for a few seconds.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::proto::BasicProperties;
use serena::worker::{Backoff, ConsumerSpec, Outcome, Supervisor};
use serena::{Connection, ConnectionConfig, Error, PublishOptions, QueueDeclareOptions};
use serena_tests::handlers::handler_fn;
use serena_tests::{rabbitmqctl, unique_name};
use tokio::time::timeout;

/// Messages per publisher batch, and the pause between batches.
const BATCH: u32 = 20;
const PAUSE: Duration = Duration::from_millis(20);

/// The broker application, stopped for a test; dropping the guard starts it again.
struct StoppedApp {
    stopped: bool,
}

impl StoppedApp {
    /// Runs `stop_app`. The guard exists before the command runs, so even a half-done stop
    /// is undone.
    fn stop() -> io::Result<StoppedApp> {
        let guard = StoppedApp { stopped: true };
        rabbitmqctl::run(&["-q", "stop_app"])?;
        Ok(guard)
    }

    /// Runs `start_app`, then waits for the node to have booted.
    fn start(&mut self) -> io::Result<()> {
        rabbitmqctl::run(&["-q", "start_app"])?;
        rabbitmqctl::run(&["-q", "await_startup"])?;
        self.stopped = false;
        Ok(())
    }
}

impl Drop for StoppedApp {
    fn drop(&mut self) {
        if self.stopped
            && let Err(e) = self.start()
        {
            eprintln!("could not start the broker application again: {e}");
        }
    }
}

/// The test broker, the connection named `name`, connecting for at most 5 s (the broker may
/// be down).
fn config(name: &str) -> ConnectionConfig {
    serena_tests::config(name).with_connection_timeout(Duration::from_secs(5))
}

/// What a publisher did.
#[derive(Debug, Default)]
struct Published {
    /// Ids the broker confirmed.
    confirmed: BTreeSet<u32>,
    /// Publishes sent again after their connection failed before the confirm.
    resent: u32,
    /// Connections it had to open again.
    reconnects: u32,
}

/// Publishes ids `first..` in confirmed batches until `stop` is set, reconnecting whenever its
/// connection fails and sending again every id not yet confirmed (at-least-once). Each
/// publish is bounded by its own timeout, so nothing waits on a broker that went away.
async fn publisher(first: u32, queue: String, stop: Arc<AtomicBool>) -> Published {
    let mut out = Published::default();
    let mut next = first;
    let mut unconfirmed: Vec<u32> = Vec::new();
    let persistent = BasicProperties::default().with_persistent(true);
    let options = PublishOptions::default().with_timeout(Some(Duration::from_secs(5)));
    let name = unique_name("restart-publisher");
    let mut connected_once = false;
    loop {
        if stop.load(Ordering::SeqCst) && unconfirmed.is_empty() {
            return out;
        }
        let opened = async {
            let conn = Connection::open(&config(&name)).await?;
            let ch = conn.channel().await?;
            Ok::<_, Error>((conn, ch))
        };
        let (conn, ch) = match opened.await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connected_once {
            out.reconnects += 1;
        }
        connected_once = true;
        loop {
            if !stop.load(Ordering::SeqCst) {
                unconfirmed.extend(next..next + BATCH);
                next += BATCH;
            }
            if unconfirmed.is_empty() {
                break;
            }
            let batch = std::mem::take(&mut unconfirmed);
            let mut failed = false;
            let mut pending = Vec::new();
            for id in batch {
                if failed {
                    unconfirmed.push(id);
                    continue;
                }
                let sent = ch
                    .basic_publish_with("", &queue, id.to_string(), persistent.clone(), options)
                    .await;
                match sent {
                    Ok(confirmation) => pending.push((id, confirmation)),
                    Err(_) => {
                        failed = true;
                        unconfirmed.push(id);
                    }
                }
            }
            for (id, confirmation) in pending {
                match confirmation.await {
                    Ok(()) => {
                        out.confirmed.insert(id);
                    }
                    Err(_) => {
                        failed = true;
                        out.resent += 1;
                        unconfirmed.push(id);
                    }
                }
            }
            if failed {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        let _ = conn.close().await;
    }
}

/// Runs `body` on a fresh connection's channel (after the restart, so with retries while the
/// broker finishes booting).
async fn on_broker<T: std::fmt::Debug>(
    body: impl AsyncFn(&serena::Channel) -> serena::Result<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = serena::open_connection(&config(&unique_name("restart-check")), async |c| {
            c.open_channel(async |ch| body(ch).await).await
        })
        .await;
        match attempt {
            Ok(v) => return v,
            other if Instant::now() >= deadline => panic!("the broker is not usable: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_and_publishers_ride_out_a_broker_restart_losing_nothing() {
    let q_name = unique_name("restart");
    let q = q_name.as_str();
    let durable = QueueDeclareOptions::default().with_durable(true);
    on_broker(async |ch| ch.queue_declare(q, durable.clone()).await).await;

    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let spec = ConsumerSpec {
        prefetch: Some(50),
        concurrency: Some(4),
        ..ConsumerSpec::new("restart", q.to_owned())
    };
    let handler = {
        let seen = seen.clone();
        handler_fn(spec, move |d| {
            let seen = seen.clone();
            async move {
                let id: u32 = std::str::from_utf8(&d.body)
                    .expect("utf-8")
                    .parse()
                    .expect("an id");
                *seen.lock().expect("lock").entry(id).or_default() += 1;
                Outcome::Ack
            }
        })
    };
    let sup = Supervisor::new(config(&unique_name("restart-sup")))
        .consumer(handler)
        .backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..Backoff::default()
        });
    let mut handle = sup.handle();
    let stop_consuming = Arc::new(tokio::sync::Notify::new());
    let run = tokio::spawn({
        let stop = stop_consuming.clone();
        sup.run_until(async move { stop.notified().await })
    });
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = [0u32, 1_000_000]
        .into_iter()
        .map(|first| tokio::spawn(publisher(first, q.to_owned(), stop_publishing.clone())))
        .collect();
    let count = || seen.lock().expect("lock").len();

    timeout(Duration::from_secs(20), handle.ready())
        .await
        .expect("the supervisor is ready");
    timeout(Duration::from_secs(20), async {
        while count() < 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("messages flow before the restart");

    // When the supervisor stops being ready, and when it is ready again.
    let outage = tokio::spawn({
        let handle = handle.clone();
        async move {
            while handle.is_ready() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let down = Instant::now();
            while !handle.is_ready() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (down, Instant::now())
        }
    });

    // Take the broker away for a moment, then bring it back.
    let before = count();
    let stopping = Instant::now();
    let mut app = tokio::task::spawn_blocking(StoppedApp::stop)
        .await
        .expect("join")
        .expect("rabbitmqctl stop_app");
    let stop_took = stopping.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !handle.is_ready(),
        "the supervisor noticed the broker went away"
    );
    let starting = Instant::now();
    let app = tokio::task::spawn_blocking(move || app.start().map(|()| app))
        .await
        .expect("join")
        .expect("rabbitmqctl start_app");
    drop(app);
    let start_took = starting.elapsed();
    timeout(Duration::from_secs(20), handle.ready())
        .await
        .expect("the supervisor recovers by itself");
    let outage = outage.await.expect("join");
    let restarts = handle.stats().restarts;
    assert!(restarts >= 1, "it restarted: {:?}", handle.stats());

    // More traffic after the restart, then the publishers finish what they have in flight.
    let after = count();
    timeout(Duration::from_secs(20), async {
        while count() < after + 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("messages flow again after the restart");
    stop_publishing.store(true, Ordering::SeqCst);
    let mut confirmed = BTreeSet::new();
    let (mut resent, mut reconnects) = (0, 0);
    for p in publishers {
        let published = timeout(Duration::from_secs(20), p)
            .await
            .expect("the publishers finish")
            .expect("join");
        confirmed.extend(published.confirmed);
        resent += published.resent;
        reconnects += published.reconnects;
    }
    assert!(reconnects >= 2, "both publishers reconnected");

    // Every confirmed message is consumed at least once.
    timeout(Duration::from_secs(20), async {
        loop {
            let missing = {
                let seen = seen.lock().expect("lock");
                confirmed.iter().filter(|id| !seen.contains_key(id)).count()
            };
            if missing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let seen = seen.lock().expect("lock");
        let lost: Vec<_> = confirmed
            .iter()
            .filter(|id| !seen.contains_key(id))
            .collect();
        panic!(
            "lost {} confirmed messages: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        )
    });
    stop_consuming.notify_one();
    timeout(Duration::from_secs(20), run)
        .await
        .expect("the supervisor stops")
        .expect("join")
        .expect("clean stop");
    let seen = seen.lock().expect("lock").clone();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let unconfirmed_seen = seen.keys().filter(|id| !confirmed.contains(id)).count();
    let stats = handle.stats();
    println!(
        "broker restart: stop_app took {stop_took:?}, start_app + await_startup {start_took:?}; supervisor not ready for {:?}, \
         ready again {:?} after start_app began; \
         {} confirmed, all consumed ({} consumed before the stop), {duplicates} duplicates, {unconfirmed_seen} consumed without a confirm, \
         {resent} publishes sent again, {reconnects} publisher reconnects, supervisor restarts {}, dropped settles {}",
        outage.1 - outage.0,
        outage.1.saturating_duration_since(starting),
        confirmed.len(),
        before,
        stats.restarts,
        stats.dropped,
    );
    on_broker(async |ch| ch.queue_delete(q, false, false).await).await;
}
