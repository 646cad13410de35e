//! The reliable publisher (`serena::ReliablePublisher`) through what only a broker of its own
//! can do: a node's app stopped and started under it (`stop_app` / `start_app`), a memory
//! alarm while it publishes, and a rolling restart of all three nodes, one after another,
//! while it publishes at full speed. Every case publishes numbered messages into a quorum
//! queue replicated on the three nodes, then takes them all out: every confirmed id must be
//! there (0 lost), every copy of an id carries the same `message_id`; duplicates and the
//! longest pause in confirms are printed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serena::proto::{BasicProperties, FieldTable};
use serena::worker::{Backoff, ConsumerSpec, Outcome, Supervisor};
use serena::{
    ConnectionConfig, ConsumeOptions, Endpoint, Error, PublisherState, QueueDeclareOptions,
    ReliablePublisher, ReliablePublisherOptions, open_connection,
};
use serena_tests::handlers::handler_fn;
use tokio::task::JoinSet;

use crate::harness::{
    CaseFuture, NODES, config, eventually, node_script, port, queue_info, run_script,
};

/// The memory alarm of node `i`, raised (`set_vm_memory_high_watermark 0`) until dropped,
/// which puts RabbitMQ's default watermark (0.4) back, also when the case fails.
struct MemoryAlarm {
    node: usize,
    raised: bool,
}

impl MemoryAlarm {
    async fn raise(node: usize) -> MemoryAlarm {
        let alarm = MemoryAlarm { node, raised: true };
        ctl(node, &["set_vm_memory_high_watermark", "0"]).await;
        alarm
    }

    /// Clears it now (without blocking the runtime, as a drop would).
    async fn clear(mut self) {
        ctl(self.node, &["set_vm_memory_high_watermark", "0.4"]).await;
        self.raised = false;
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if !self.raised {
            return;
        }
        let args = [
            "ctl",
            NODES[self.node],
            "-q",
            "set_vm_memory_high_watermark",
            "0.4",
        ];
        if let Err(e) = run_script("extra-node.sh", &args) {
            eprintln!("could not clear the memory alarm: {e}");
        }
    }
}

/// Reconnect quickly: the nodes come back within seconds.
fn options() -> ReliablePublisherOptions {
    ReliablePublisherOptions::default().with_backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        ..Backoff::default()
    })
}

/// The three nodes in order, named `name`.
fn all_nodes(name: &str) -> ConnectionConfig {
    config(0, name)
        .with_more_hosts(vec![
            Endpoint::new("127.0.0.1", port(1)),
            Endpoint::new("127.0.0.1", port(2)),
        ])
        .with_connection_timeout(Duration::from_secs(3))
}

/// `rabbitmqctl ARGS` against node `i`.
async fn ctl(i: usize, args: &[&str]) {
    let mut all = vec!["ctl", NODES[i], "-q"];
    all.extend_from_slice(args);
    node_script(&all).await;
}

/// Declares `queue` through node `via`: a quorum queue on all three nodes.
async fn declare_quorum(via: usize, queue: &str) {
    let mut arguments = FieldTable::new();
    arguments.insert("x-queue-type", "quorum");
    let options = QueueDeclareOptions::default()
        .with_durable(true)
        .with_arguments(arguments);
    open_connection(&config(via, "reliable-setup"), async |conn| {
        conn.open_channel(async |ch| ch.queue_declare(queue, options).await.map(drop))
            .await
    })
    .await
    .expect("the quorum queue");
}

/// Waits until all three replicas of `queue` are online, as node `via` sees it.
async fn replicas_online(via: usize, queue: &str) {
    eventually(
        "all three replicas online",
        Duration::from_secs(60),
        || async {
            queue_info(via, queue)
                .await
                .filter(|q| q.online.len() == 3)
                .map(drop)
        },
    )
    .await;
}

/// Takes every message out of `queue` through node `via` and deletes the queue; for each
/// id, how many copies and the `message_id`s they carried.
async fn drain(via: usize, queue: &str) -> BTreeMap<u64, (u32, Vec<String>)> {
    open_connection(&config(via, "reliable-drain"), async |conn| {
        conn.open_channel(async |ch| {
            let total = ch
                .queue_declare(queue, QueueDeclareOptions::default().with_passive(true))
                .await?
                .message_count;
            let mut seen: BTreeMap<u64, (u32, Vec<String>)> = BTreeMap::new();
            let mut consumer = ch
                .basic_consume(queue, ConsumeOptions::default().with_no_ack(true))
                .await?;
            for _ in 0..total {
                let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                    .await
                    .expect("the queue's messages come")
                    .expect("a delivery")?;
                let id: u64 = std::str::from_utf8(&d.body).unwrap().parse().unwrap();
                let message_id = d.properties.message_id.as_deref().unwrap_or("").to_owned();
                let e = seen.entry(id).or_default();
                e.0 += 1;
                if !e.1.contains(&message_id) {
                    e.1.push(message_id);
                }
            }
            drop(consumer);
            ch.queue_delete(queue, false, false).await?;
            Ok::<_, Error>(seen)
        })
        .await
    })
    .await
    .expect("draining the queue")
}

/// Checks 0 lost and one `message_id` per id; returns the duplicates.
fn check(confirmed: &[u64], seen: &BTreeMap<u64, (u32, Vec<String>)>) -> u64 {
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed ids lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    for (id, (_, message_ids)) in seen {
        assert_eq!(
            message_ids.len(),
            1,
            "id {id} came with message_ids {message_ids:?}"
        );
        assert!(!message_ids[0].is_empty(), "id {id} has no message_id");
    }
    let distinct: std::collections::HashSet<&String> = seen.values().map(|(_, m)| &m[0]).collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "message_ids are unique per message"
    );
    seen.values().map(|(n, _)| u64::from(n - 1)).sum()
}

/// Publishing at full speed from `tasks` tasks until `stop`; the confirmed ids. Any publish
/// error fails the case.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<u64>>,
    /// The longest time without a new confirm, measured every 5 ms.
    longest_pause: Arc<AtomicU64>,
}

impl Load {
    fn start(p: &ReliablePublisher, queue: &str, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let longest_pause = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let (p, queue, next, stop) = (p.clone(), queue.to_owned(), next.clone(), stop.clone());
            set.spawn(async move {
                let mut confirmed = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    p.publish("", &queue, id.to_string(), BasicProperties::default())
                        .await
                        .unwrap_or_else(|e| panic!("publish {id}: {e}"));
                    confirmed.push(id);
                }
                confirmed
            });
        }
        {
            let (p, stop, longest) = (p.clone(), stop.clone(), longest_pause.clone());
            set.spawn(async move {
                let (mut last, mut since) = (0, Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    let now = p.stats().confirmed;
                    if now != last {
                        (last, since) = (now, Instant::now());
                    }
                    longest.fetch_max(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Vec::new()
            });
        }
        Load {
            stop,
            tasks: set,
            longest_pause,
        }
    }

    async fn finish(mut self) -> (Vec<u64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("a publishing task"));
        }
        all.sort_unstable();
        let pause = Duration::from_millis(self.longest_pause.load(Ordering::Relaxed));
        (all, pause)
    }
}

/// Waits until the publisher has `more` confirms beyond what it had.
async fn more_confirms(p: &ReliablePublisher, more: u64) {
    let target = p.stats().confirmed + more;
    eventually("more confirms", Duration::from_secs(60), || async {
        (p.stats().confirmed >= target).then_some(())
    })
    .await;
}

/// Node 3's app stopped and started under a publisher that knows only node 3: publishes
/// wait (within the cap) while it is down, and everything is confirmed once it is back.
pub(crate) fn stop_and_start_app() -> CaseFuture {
    Box::pin(async {
        const CAP: usize = 500;
        let queue = "reliable.stop_app";
        declare_quorum(0, queue).await;
        let config = config(2, "reliable-stop-app").with_connection_timeout(Duration::from_secs(3));
        let options = options().with_max_messages(CAP);
        let (confirmed, pause, stats) = ReliablePublisher::scope(&config, options, async |p| {
            let load = Load::start(p, queue, 32);
            more_confirms(p, 1000).await;
            ctl(2, &["stop_app"]).await;
            let mut states = p.watch_state();
            let _ = states
                .wait_for(|s| matches!(s, PublisherState::Reconnecting { .. }))
                .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let held = p.stats();
            assert!(held.in_flight <= CAP, "{held:?}");
            assert!(
                matches!(p.state(), PublisherState::Reconnecting { .. }),
                "{:?}",
                p.state()
            );
            ctl(2, &["start_app"]).await;
            more_confirms(p, 2000).await;
            let (confirmed, pause) = load.finish().await;
            Ok::<_, Error>((confirmed, pause, p.stats()))
        })
        .await
        .expect("the publisher's scope");
        replicas_online(0, queue).await;
        let seen = drain(0, queue).await;
        let duplicates = check(&confirmed, &seen);
        println!(
            "    stop_app/start_app: {} confirmed, {duplicates} duplicates, longest pause {pause:?}, {stats:?}",
            confirmed.len()
        );
        assert!(stats.reconnects >= 1, "{stats:?}");
    })
}

/// A memory alarm on node 2 while the publisher publishes there: the broker blocks the
/// connection, the publisher holds at most its cap and stays connected, and once the alarm
/// clears everything is confirmed.
pub(crate) fn memory_alarm() -> CaseFuture {
    Box::pin(async {
        const CAP: usize = 300;
        let queue = "reliable.alarm";
        declare_quorum(0, queue).await;
        let config = config(1, "reliable-alarm");
        let options = options().with_max_messages(CAP);
        let (confirmed, pause, stats, highest) =
            ReliablePublisher::scope(&config, options, async |p| {
                // More publishing tasks than the cap, so the cap is what stops them.
                let load = Load::start(p, queue, 2 * CAP);
                more_confirms(p, 1000).await;
                let alarm = MemoryAlarm::raise(1).await;
                // Blocked: the confirms stop, the outbox fills up to its cap and no further.
                let mut highest = 0;
                let mut full_since: Option<Instant> = None;
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let s = p.stats();
                    highest = highest.max(s.in_flight);
                    assert!(s.in_flight <= CAP, "{s:?}");
                    if s.in_flight == CAP {
                        let since = *full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(2) {
                            break;
                        }
                    } else {
                        full_since = None;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "never full under the alarm: {s:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert!(
                    matches!(p.state(), PublisherState::Connected(_)),
                    "blocked, not disconnected: {:?}",
                    p.state()
                );
                // A scope that ends while the broker blocks its connection returns within
                // the clean close's bound (5 s), its waiting publishes failing with Closed.
                let ended = Instant::now();
                let waiting = ReliablePublisher::scope(
                    &config,
                    ReliablePublisherOptions::default(),
                    async |q| {
                        q.connected().await?;
                        let mut publishes = JoinSet::new();
                        // Ids far from the load's: these may still reach the queue.
                        for id in 1_000_000_000..1_000_000_020u64 {
                            let q = q.clone();
                            publishes.spawn(async move {
                                q.publish("", queue, id.to_string(), BasicProperties::default())
                                    .await
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Ok::<_, Error>(publishes)
                    },
                )
                .await
                .expect("the blocked scope");
                let outcomes = waiting.join_all().await;
                assert!(
                    ended.elapsed() < Duration::from_secs(8),
                    "the blocked scope took {:?}",
                    ended.elapsed()
                );
                assert!(
                    outcomes.iter().all(|r| matches!(r, Err(Error::Closed(_)))),
                    "{outcomes:?}"
                );
                alarm.clear().await;
                more_confirms(p, 2000).await;
                let (confirmed, pause) = load.finish().await;
                Ok::<_, Error>((confirmed, pause, p.stats(), highest))
            })
            .await
            .expect("the publisher's scope");
        let seen = drain(0, queue).await;
        let duplicates = check(&confirmed, &seen);
        println!(
            "    memory alarm: {} confirmed, highest held {highest} (cap {CAP}), {duplicates} duplicates, longest pause {pause:?}, {stats:?}",
            confirmed.len()
        );
        assert_eq!(highest, CAP);
    })
}

/// What a consumer saw: for each id, the copies that were not redeliveries (each one a
/// message enqueued once more: a republish) and the `message_id`s they carried.
type Seen = BTreeMap<u64, (u32, Vec<String>)>;

/// A supervised worker over the host list consuming `queue`, acking each message once it
/// booked it in `seen`.
fn worker(queue: &str, seen: Arc<std::sync::Mutex<Seen>>) -> Supervisor {
    let handler = handler_fn(
        ConsumerSpec {
            prefetch: Some(200),
            concurrency: Some(8),
            ..ConsumerSpec::new("rolling_worker", queue.to_owned())
        },
        move |d| {
            let seen = seen.clone();
            async move {
                let id: u64 = std::str::from_utf8(&d.body).unwrap().parse().unwrap();
                let message_id = d.properties.message_id.as_deref().unwrap_or("").to_owned();
                let mut seen = seen.lock().unwrap();
                let e = seen.entry(id).or_default();
                if !d.redelivered || e.0 == 0 {
                    e.0 += 1;
                }
                if !e.1.contains(&message_id) {
                    e.1.push(message_id);
                }
                Outcome::Ack
            }
        },
    );
    Supervisor::new(all_nodes("reliable-rolling-worker"))
        .consumer(handler)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            ..Backoff::default()
        })
        .shutdown_timeout(Duration::from_secs(5))
}

/// A rolling restart: each node's app stopped and started in turn, waiting for the queue's
/// three replicas between nodes, while the publisher publishes at full speed over the host
/// list and a supervised worker consumes. Each stop closes the connections on that node with
/// 320; the publisher moves on to the next node, the worker restarts on the next one.
pub(crate) fn rolling_restart() -> CaseFuture {
    Box::pin(async {
        let queue = "reliable.rolling";
        declare_quorum(0, queue).await;
        let config = all_nodes("reliable-rolling");
        let consumed = Arc::new(std::sync::Mutex::new(Seen::new()));
        let sup = worker(queue, consumed.clone());
        let mut worker_handle = sup.handle();
        let (stop_worker, worker_stop) = tokio::sync::oneshot::channel::<()>();
        let worker_task = tokio::spawn(sup.run_until(async move {
            let _ = worker_stop.await;
        }));
        tokio::time::timeout(Duration::from_secs(30), worker_handle.ready())
            .await
            .expect("the worker is ready");
        let started = Instant::now();
        let (confirmed, pause, stats, visited) =
            ReliablePublisher::scope(&config, options(), async |p| {
                let mut states = p.watch_state();
                let visited = std::sync::Mutex::new(Vec::new());
                let visits = async {
                    loop {
                        if let PublisherState::Connected(e) = &*states.borrow_and_update() {
                            visited.lock().unwrap().push(e.port);
                        }
                        if states.changed().await.is_err() {
                            return;
                        }
                    }
                };
                let roll = async {
                    let load = Load::start(p, queue, 64);
                    more_confirms(p, 2000).await;
                    for node in 0..NODES.len() {
                        ctl(node, &["stop_app"]).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        ctl(node, &["start_app"]).await;
                        replicas_online((node + 1) % 3, queue).await;
                        more_confirms(p, 2000).await;
                    }
                    load.finish().await
                };
                let (confirmed, pause) = tokio::select! {
                    r = roll => r,
                    () = visits => panic!("the state watch ended"),
                };
                let visited = std::mem::take(&mut *visited.lock().unwrap());
                Ok::<_, Error>((confirmed, pause, p.stats(), visited))
            })
            .await
            .expect("the publisher's scope");
        let took = started.elapsed();
        // The worker catches up; whatever it has not consumed is still in the queue.
        let last = *confirmed.last().expect("something was confirmed");
        eventually("the worker catches up", Duration::from_secs(60), || async {
            consumed.lock().unwrap().contains_key(&last).then_some(())
        })
        .await;
        let _ = stop_worker.send(());
        tokio::time::timeout(Duration::from_secs(30), worker_task)
            .await
            .expect("the worker stops")
            .expect("the worker's task")
            .expect("the worker's result");
        let worker_stats = worker_handle.stats();
        let mut seen = std::mem::take(&mut *consumed.lock().unwrap());
        let consumed_ids = seen.len();
        // Left in the queue: what the worker had prefetched when it stopped (requeued), which
        // may repeat ids it booked whose ack died with a connection: only ids it never saw
        // add copies.
        for (id, (n, message_ids)) in drain(0, queue).await {
            let e = seen.entry(id).or_default();
            if e.0 == 0 {
                e.0 = n;
            }
            for m in message_ids {
                if !e.1.contains(&m) {
                    e.1.push(m);
                }
            }
        }
        let duplicates = check(&confirmed, &seen);
        println!(
            "    rolling restart: {} confirmed in {took:.1?}, {consumed_ids} consumed by the worker ({} restarts), {duplicates} duplicates (republished copies), longest pause in confirms {pause:?}, {stats:?}, publisher connected to {visited:?}",
            confirmed.len(),
            worker_stats.restarts,
        );
        assert!(stats.reconnects >= 2, "{stats:?}");
        assert!(duplicates <= stats.republished, "{duplicates} > {stats:?}");
    })
}
