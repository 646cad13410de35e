//! The loss of a node under load. Two confirmed publishers and two supervised workers take the
//! cluster's host list (node 1 first, so all of them connect to node 1, which also leads the
//! quorum queue `jobs.work`). Node 1 is halted while they run: the publishers reconnect to the
//! next host and publish again what was not confirmed (at-least-once), the supervisors restart
//! on the next host by themselves, and every confirmed message is processed at least once.
//! Then node 1 is started again: it rejoins the cluster and its replica, and the workers,
//! which stayed where they were, consume what is published after.
//!
//! What RabbitMQ 3.10.8 does while the queue elects a new leader, seen in these runs: a
//! publish that reaches the queue before the election ends can crash the broker's channel
//! (`541 INTERNAL_ERROR`, a `case_clause` in `rabbit_channel:deliver_to_queues` on the call to
//! the stopped leader), and a channel whose first publish raced the election can go on to nack
//! every later publish, although the messages are enqueued (the workers receive them). A new
//! connection publishes normally. So the publishers here treat a nack like a lost connection:
//! they close it, connect again and publish again what was not confirmed; the duplicates that
//! costs are counted with the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::proto::BasicProperties;
use serena::topology::{ConnectionSettingsExt, TopologyExt};
use serena::worker::{Backoff, ConsumerSpec, Outcome, Supervisor};
use serena::{Confirmation, Connection, ConnectionConfig, Error, PublishOptions, open_connection};
use serena_tests::handlers::handler_fn;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::{
    self, CaseFuture, config, ctl_json, eventually, halt, node_name, port, queue_info, restart,
    running_nodes,
};

const QUEUE: &str = "jobs.work";
const PUBLISHERS: u64 = 2;
const WORKERS: usize = 2;
/// Unconfirmed publishes per publisher.
const WINDOW: usize = 50;
/// One new message per publisher per tick (about 400 a second each).
const TICK: Duration = Duration::from_micros(2_500);

/// The connection settings of `tests/cluster/topology.toml`, whose `url` is the cluster's host
/// list, node 1 first (the environment is left out), named `name`.
fn cluster_config(name: &str) -> ConnectionConfig {
    let config = harness::topology()
        .connection
        .resolve_with(None, |_| None)
        .expect("the topology's connection settings");
    let ports: Vec<String> = config.endpoints().iter().map(ToString::to_string).collect();
    assert_eq!(
        ports,
        (0..3)
            .map(|i| format!("127.0.0.1:{}", port(i)))
            .collect::<Vec<_>>(),
        "the topology's host list"
    );
    config
        .with_connection_name(Some(name.to_owned()))
        .with_connection_timeout(Duration::from_secs(3))
}

/// What the publishers and workers did, shared with the test.
#[derive(Default)]
struct Ledger {
    /// Ids whose publish the broker confirmed.
    confirmed: HashSet<u64>,
    /// Ids sent at least once.
    sent: HashSet<u64>,
    /// Publishes sent, republishes included.
    sends: u64,
    /// Times each id was delivered to a handler.
    consumed: HashMap<u64, u32>,
    /// Per worker, when each delivery reached its handler.
    delivered_at: Vec<Vec<Instant>>,
    /// Per publisher, when each of its connections confirmed its first message.
    first_confirms: Vec<Vec<Instant>>,
    /// Per publisher, when each of its connections failed.
    dropped: Vec<Vec<Instant>>,
    /// Per publisher, what it is doing now (for failure messages).
    doing: Vec<String>,
    /// Why publishers' connections failed or could not open, with when, in order.
    errors: Vec<(Instant, String)>,
    /// Per worker, when it stopped being ready (its connection failed).
    unready: Vec<Vec<Instant>>,
    /// Per worker, when it was ready again (its consumer registered on a new connection).
    ready_again: Vec<Vec<Instant>>,
}

type Shared = Arc<Mutex<Ledger>>;

/// One publisher: numbered messages at a steady pace through the `jobs` exchange, at most
/// [`WINDOW`] unconfirmed. When its connection dies it connects again (the host list moves it
/// to the next node) and publishes again every message that was not confirmed. It stops taking
/// new ids once `stop` is set and returns when everything it sent is confirmed.
async fn publisher(index: u64, ledger: Shared, stop: watch::Receiver<bool>) {
    let mut next_id = index << 32;
    let mut retry: VecDeque<u64> = VecDeque::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let doing = |what: String| ledger.lock().unwrap().doing[index as usize] = what;
    loop {
        doing("connecting".into());
        let conn = match Connection::open(&cluster_config(&format!("node-loss-publisher-{index}")))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push((Instant::now(), format!("publisher {index}: open: {e}")));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut first_confirm = true;
        let mut in_flight: VecDeque<(u64, Confirmation)> = VecDeque::new();
        let session: Result<(), Error> = async {
            let ch = conn.channel().await?;
            let mut sent_here = 0;
            loop {
                while in_flight.len() < WINDOW {
                    let id = if let Some(id) = retry.pop_front() {
                        id
                    } else if !*stop.borrow() {
                        tick.tick().await;
                        next_id += 1;
                        next_id
                    } else {
                        break;
                    };
                    doing(format!("publishing {id} on {}", conn.endpoint()));
                    let sent = ch
                        .basic_publish_with(
                            "jobs",
                            "work",
                            id.to_string(),
                            BasicProperties::default(),
                            PublishOptions::default(),
                        )
                        .await;
                    match sent {
                        Ok(confirm) => {
                            let mut l = ledger.lock().unwrap();
                            l.sends += 1;
                            l.sent.insert(id);
                            drop(l);
                            sent_here += 1;
                            in_flight.push_back((id, confirm));
                        }
                        Err(e) => {
                            retry.push_front(id);
                            return Err(e);
                        }
                    }
                }
                let Some((id, confirm)) = in_flight.pop_front() else {
                    return Ok(());
                };
                doing(format!(
                    "awaiting the confirm of {id} on {} ({sent_here} sent there)",
                    conn.endpoint()
                ));
                match confirm.await {
                    Ok(()) => {
                        let mut l = ledger.lock().unwrap();
                        l.confirmed.insert(id);
                        if first_confirm {
                            first_confirm = false;
                            l.first_confirms[index as usize].push(Instant::now());
                        }
                    }
                    // The broker did not take it: send it again, on a new connection (see
                    // the module docs for why not on this channel).
                    Err(e) => {
                        retry.push_back(id);
                        return Err(e);
                    }
                }
            }
        }
        .await;
        // Whatever was not confirmed on the old connection goes again, oldest first.
        for (id, _) in in_flight.drain(..).rev() {
            retry.push_front(id);
        }
        match session {
            Ok(()) => {
                let _ = conn.close().await;
                return;
            }
            Err(Error::Returned(m)) => panic!("a publish to {QUEUE} was unroutable: {m:?}"),
            Err(e) => {
                {
                    let mut l = ledger.lock().unwrap();
                    l.dropped[index as usize].push(Instant::now());
                    l.errors.push((
                        Instant::now(),
                        format!("publisher {index} on {}: {e}", conn.endpoint()),
                    ));
                }
                // A nacked publish leaves the connection open: close it before the next one.
                let _ = conn.close().await;
                if matches!(e, Error::Nacked) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A supervised worker on the host list that records every delivery and acks it.
fn worker(index: usize, ledger: Shared) -> Supervisor {
    let handler = handler_fn(
        ConsumerSpec {
            prefetch: Some(50),
            concurrency: Some(4),
            ..ConsumerSpec::new(format!("node_loss_worker_{index}"), QUEUE)
        },
        move |d| {
            let ledger = ledger.clone();
            async move {
                let id: u64 = std::str::from_utf8(&d.body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a numeric body");
                let mut l = ledger.lock().unwrap();
                *l.consumed.entry(id).or_default() += 1;
                l.delivered_at[index].push(Instant::now());
                Outcome::Ack
            }
        },
    );
    Supervisor::new(cluster_config(&format!("node-loss-worker-{index}")))
        .topology(harness::topology())
        .consumer(handler)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            ..Backoff::default()
        })
        .shutdown_timeout(Duration::from_secs(5))
}

/// The AMQP port each of our connections is on, by connection name, as node `via` lists them.
async fn connection_ports(via: usize) -> HashMap<String, u16> {
    let list = ctl_json(via, &["list_connections", "name", "client_properties"]).await;
    let mut out = HashMap::new();
    for c in list.as_array().into_iter().flatten() {
        let name = c["client_properties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p[0] == "connection_name")
            .and_then(|p| p[2].as_str());
        // "127.0.0.1:47744 -> 127.0.0.1:5702"
        let port = c["name"]
            .as_str()
            .and_then(|n| n.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        if let (Some(name), Some(port)) = (name, port)
            && (name.starts_with("node-loss-publisher") || name.starts_with("node-loss-worker"))
        {
            out.insert(name.to_owned(), port);
        }
    }
    out
}

/// Every connection on `node`: each publisher's, and each worker's two (its tree's and its
/// handlers' publisher's, named `<name> (publisher)`).
fn all_on(ports: &HashMap<String, u16>, node: usize) -> bool {
    ports.len() == PUBLISHERS as usize + 2 * WORKERS && ports.values().all(|p| *p == port(node))
}

/// The ledger's events in milliseconds from `t0` (negative: before), for failure messages.
fn timeline(ledger: &Shared, t0: Instant) -> String {
    let l = ledger.lock().unwrap();
    let ms = |ts: &[Instant]| {
        ts.iter()
            .map(|t| {
                if *t >= t0 {
                    (*t - t0).as_millis() as i64
                } else {
                    -((t0 - *t).as_millis() as i64)
                }
            })
            .collect::<Vec<_>>()
    };
    let per = |what: &str, lists: &[Vec<Instant>]| {
        lists
            .iter()
            .enumerate()
            .map(|(i, ts)| format!("{what} {i}: {:?}", ms(ts)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let last_deliveries: Vec<Vec<Instant>> = l
        .delivered_at
        .iter()
        .map(|d| d.iter().rev().take(3).rev().copied().collect())
        .collect();
    let errors: Vec<String> = l
        .errors
        .iter()
        .map(|(t, e)| format!("{} ms {e}", t.saturating_duration_since(t0).as_millis()))
        .collect();
    format!(
        "confirmed {}, consumed {}; {}; {}; {}; {}; {}; publishers now: {:?}; errors: {errors:#?}",
        l.confirmed.len(),
        l.consumed.len(),
        per("publisher dropped", &l.dropped),
        per("publisher first confirms", &l.first_confirms),
        per("worker unready", &l.unready),
        per("worker ready again", &l.ready_again),
        per("worker last deliveries", &last_deliveries),
        l.doing
    )
}

fn snapshot(ledger: &Shared) -> (usize, usize) {
    let l = ledger.lock().unwrap();
    (l.confirmed.len(), l.consumed.len())
}

pub(crate) fn node_loss() -> CaseFuture {
    Box::pin(async {
        // A fresh jobs.work declared through node 1, which therefore leads it (RabbitMQ puts a
        // new quorum queue's leader on the declaring node): losing node 1 loses the leader.
        open_connection(&config(0, "node-loss-setup"), async |conn| {
            conn.open_channel(async |ch| ch.queue_delete(QUEUE, false, false).await)
                .await?;
            let report = harness::topology().apply(conn).await;
            assert!(report.is_ok(), "{report}");
            Ok::<_, Error>(())
        })
        .await
        .expect("jobs.work declared again");
        let leader_before = queue_info(1, QUEUE).await.expect("jobs.work").leader;
        assert_eq!(leader_before, node_name(0), "jobs.work's leader");

        let ledger: Shared = Arc::new(Mutex::new(Ledger {
            first_confirms: vec![Vec::new(); PUBLISHERS as usize],
            dropped: vec![Vec::new(); PUBLISHERS as usize],
            doing: vec![String::new(); PUBLISHERS as usize],
            unready: vec![Vec::new(); WORKERS],
            ready_again: vec![Vec::new(); WORKERS],
            delivered_at: vec![Vec::new(); WORKERS],
            ..Ledger::default()
        }));
        let (stop_publishing, publishing) = watch::channel(false);
        let (stop_workers, workers_stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut handles = Vec::new();
        for w in 0..WORKERS {
            let sup = worker(w, ledger.clone());
            handles.push(sup.handle());
            let mut stop = workers_stop.clone();
            tasks.spawn(async move {
                sup.run_until(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map_err(|e| format!("worker {w}: {e}"))
            });
        }
        for h in &mut handles {
            tokio::time::timeout(Duration::from_secs(20), h.ready())
                .await
                .expect("the workers are ready within 20 s");
        }
        let mut watchers = JoinSet::new();
        // Notes when each worker stops being ready, to time its failover from there.
        for (w, h) in handles.iter().enumerate() {
            let (h, ledger) = (h.clone(), ledger.clone());
            watchers.spawn(async move {
                let mut was_ready = true;
                loop {
                    let ready = h.is_ready();
                    if was_ready != ready {
                        let mut l = ledger.lock().unwrap();
                        let list = if ready {
                            &mut l.ready_again
                        } else {
                            &mut l.unready
                        };
                        list[w].push(Instant::now());
                    }
                    was_ready = ready;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        let mut publishers = JoinSet::new();
        for p in 0..PUBLISHERS {
            publishers.spawn(publisher(p, ledger.clone(), publishing.clone()));
        }

        // Everyone runs on node 1, which leads the queue.
        eventually(
            "publishing and consuming through node 1",
            Duration::from_secs(20),
            || async {
                let (confirmed, consumed) = snapshot(&ledger);
                (confirmed >= 1_000 && consumed >= 500).then_some(())
            },
        )
        .await;
        let before = connection_ports(1).await;
        assert!(all_on(&before, 0), "not all on node 1: {before:?}");

        // Node 1 goes.
        let halted_at = Instant::now();
        halt(0).await;
        let halt_took = halted_at.elapsed();
        // Failover: from the halt, and from when each noticed its connection had gone, to
        // its first confirm (publishers) or delivery (workers) on the new connection.
        // `dropped[i]`: when party i lost its connection; `back[i]`: when it was back (a new
        // connection's first confirm; a worker's consumer registered again); `working[i]`:
        // when it did work (for a worker, the first delivery after it was back).
        let failover =
            |dropped: &[Vec<Instant>], back: &[Vec<Instant>], working: &[Vec<Instant>]| {
                (0..dropped.len())
                    .map(|i| {
                        let dropped = *dropped[i].iter().find(|t| **t >= halted_at)?;
                        let back = *back[i].iter().find(|t| **t > dropped)?;
                        let working = *working[i].iter().find(|t| **t >= back)?;
                        Some((working - halted_at, working - dropped))
                    })
                    .collect::<Option<Vec<(Duration, Duration)>>>()
            };
        let deadline = Instant::now() + Duration::from_secs(30);
        let (publisher_failover, worker_failover) = loop {
            let resumed = {
                let l = ledger.lock().unwrap();
                failover(&l.dropped, &l.first_confirms, &l.first_confirms).zip(failover(
                    &l.unready,
                    &l.ready_again,
                    &l.delivered_at,
                ))
            };
            if let Some(resumed) = resumed {
                break resumed;
            }
            assert!(
                Instant::now() < deadline,
                "publishers and workers not running again within 30 s of the halt (which took \
                 {halt_took:?}): {}",
                timeline(&ledger, halted_at)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let running = running_nodes(1).await;
        assert_eq!(running, [node_name(1), node_name(2)], "after the halt");
        // The host list's next node; a publisher may be between connections for a moment.
        eventually(
            "every publisher and worker connected to node 2",
            Duration::from_secs(10),
            || async { all_on(&connection_ports(1).await, 1).then_some(()) },
        )
        .await;
        let leader_after = queue_info(1, QUEUE).await.expect("jobs.work").leader;
        assert_ne!(leader_after, node_name(0), "the halted node still leads");
        let restarts_after_failover: Vec<u64> =
            handles.iter().map(|h| h.stats().restarts).collect();
        assert!(
            restarts_after_failover.iter().all(|r| *r >= 1),
            "{restarts_after_failover:?}"
        );

        // Node 1 comes back and rejoins, its replica too; nobody has to move.
        restart(0).await;
        let rejoined = eventually(
            "node 1 rejoins with its replica",
            Duration::from_secs(30),
            || async {
                let running = running_nodes(1).await;
                let info = queue_info(1, QUEUE).await?;
                (running.len() == 3 && info.online.len() == 3).then_some(running)
            },
        )
        .await;
        assert_eq!(rejoined, (0..3).map(node_name).collect::<Vec<_>>());

        // The same workers consume what is published after the rejoin.
        let (confirmed_at_rejoin, _) = snapshot(&ledger);
        eventually(
            "500 more messages confirmed after the rejoin",
            Duration::from_secs(20),
            || async { (snapshot(&ledger).0 >= confirmed_at_rejoin + 500).then_some(()) },
        )
        .await;
        stop_publishing.send(true).expect("publishers listen");
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(joined) = publishers.join_next().await {
                joined.expect("a publisher panicked");
            }
        })
        .await
        .expect("publishers finish within 30 s");
        let confirmed: HashSet<u64> = ledger.lock().unwrap().confirmed.clone();
        eventually(
            "every confirmed message consumed",
            Duration::from_secs(30),
            || async {
                let l = ledger.lock().unwrap();
                confirmed
                    .iter()
                    .all(|id| l.consumed.contains_key(id))
                    .then_some(())
            },
        )
        .await;
        let restarts: Vec<u64> = handles.iter().map(|h| h.stats().restarts).collect();
        stop_workers.send(true).expect("workers listen");
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(joined) = tasks.join_next().await {
                joined
                    .expect("a worker task panicked")
                    .expect("a clean stop");
            }
        })
        .await
        .expect("workers stop within 20 s");

        // The figures.
        let l = ledger.lock().unwrap();
        assert_eq!(l.sent, confirmed, "sent but never confirmed");
        let published = l.sent.len();
        let lost = confirmed
            .iter()
            .filter(|id| !l.consumed.contains_key(id))
            .count();
        let deliveries: u64 = l.consumed.values().map(|n| u64::from(*n)).sum();
        let duplicates = deliveries - l.consumed.len() as u64;
        let unknown = l
            .consumed
            .keys()
            .filter(|id| !confirmed.contains(id))
            .count();
        assert_eq!(lost, 0, "confirmed but never consumed");
        assert_eq!(unknown, 0, "consumed but never published");
        let ms = |d: &[(Duration, Duration)]| {
            d.iter()
                .map(|(from_halt, from_drop)| {
                    format!("{} ({})", from_halt.as_millis(), from_drop.as_millis())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let reasons = [
            "CONNECTION_FORCED",
            "reset by peer",
            "INTERNAL_ERROR",
            "basic.nack",
        ]
        .iter()
        .map(|r| {
            let n = l.errors.iter().filter(|(_, e)| e.contains(r)).count();
            format!("{r} {n}")
        })
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "    published {published} (sends {}, so {} republished), confirmed {}, consumed \
             {} ({deliveries} deliveries), lost {lost}, duplicates {duplicates}; publisher \
             connections ended by: {reasons} (of {})",
            l.sends,
            l.sends - published as u64,
            l.confirmed.len(),
            l.consumed.len(),
            l.errors.len()
        );
        println!(
            "    halt took {} ms; failover in ms from the halt (from the dropped connection): \
             publishers {}, workers {}; worker restarts {restarts_after_failover:?} at the \
             failover, {restarts:?} at the end; jobs.work leader \
             {leader_before} -> {leader_after}",
            halt_took.as_millis(),
            ms(&publisher_failover),
            ms(&worker_failover),
        );
    })
}
