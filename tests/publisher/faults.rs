//! Lost connections: cut whole, cut mid-frame, stalled until heartbeats give up, closed by an
//! operator (320, which moves the publisher to the next host), and a refused login.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serena::proto::BasicProperties;
use serena::{
    Endpoint, Error, PublisherState, ReliablePublisher, ReliablePublisherOptions,
    UnexpectedCloseError,
};
use serena_tests::proxy::{Direction, Proxy};
use serena_tests::{rabbitmqctl, unique_name, within};
use tokio::task::JoinSet;

use super::{LIMIT, check_none_lost, declare, drain};

/// Publishes ids `0..total` to `queue` from `concurrency` tasks, each awaiting its confirm;
/// returns the confirmed ids. Any publish error fails the test.
pub(crate) async fn publish_all(
    p: &ReliablePublisher,
    queue: &str,
    total: u64,
    concurrency: usize,
) -> Vec<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (p, queue, next) = (p.clone(), queue.to_owned(), next.clone());
        tasks.spawn(async move {
            let mut confirmed = Vec::new();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= total {
                    return confirmed;
                }
                p.publish("", &queue, id.to_string(), BasicProperties::default())
                    .await
                    .unwrap_or_else(|e| panic!("publish {id}: {e}"));
                confirmed.push(id);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a publishing task"));
    }
    all.sort_unstable();
    all
}

/// Waits until the publisher has `n` confirms.
async fn confirmed_at_least(p: &ReliablePublisher, n: u64) {
    within(LIMIT, "confirms", async {
        while p.stats().confirmed < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits until the publisher is connected to the broker at `port`.
async fn connected_to(p: &ReliablePublisher, port: u16) {
    let mut states = p.watch_state();
    within(
        LIMIT,
        "connected to the expected broker",
        states.wait_for(|s| matches!(s, PublisherState::Connected(e) if e.port == port)),
    )
    .await
    .expect("the publisher's state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_and_mid_frame_cuts_lose_no_confirmed_message() {
    const TOTAL: u64 = 4000;
    let q = unique_name("reliable-cuts");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("reliable-cuts"));
    let started = Instant::now();
    let (confirmed, stats) = within(
        LIMIT,
        "publishing through cuts",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            let faults = async {
                confirmed_at_least(p, 500).await;
                proxy.cut_all();
                confirmed_at_least(p, 1500).await;
                let cut = proxy.cut_mid_frame(Direction::ClientToServer, 20);
                within(LIMIT, "the mid-frame cut", cut).await.expect("cut");
                confirmed_at_least(p, 2500).await;
                let cut = proxy.cut_mid_frame(Direction::ServerToClient, 8);
                within(LIMIT, "the mid-frame cut", cut).await.expect("cut");
            };
            let (confirmed, ()) = tokio::join!(publish_all(p, &q, TOTAL, 64), faults);
            Ok::<_, Error>((confirmed, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    let seen = drain(&q).await;
    let duplicates = check_none_lost(&confirmed, &seen);
    println!(
        "{TOTAL} confirmed in {:?} through 3 cuts: {stats:?}, {duplicates} duplicates in the queue",
        started.elapsed()
    );
    assert_eq!(confirmed.len() as u64, TOTAL);
    assert_eq!(stats.confirmed, TOTAL);
    assert!(stats.reconnects >= 3, "{stats:?}");
    assert!(duplicates <= stats.republished, "{duplicates} > {stats:?}");
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_ends_in_a_heartbeat_timeout_and_everything_is_republished() {
    const TOTAL: u64 = 1500;
    let q = unique_name("reliable-stall");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy
        .client_config(&unique_name("reliable-stall"))
        .with_heartbeat(Duration::from_secs(1))
        .with_connection_timeout(Duration::from_secs(2));
    let (confirmed, stats, cause) = within(
        LIMIT,
        "publishing through a stall",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            let faults = async {
                confirmed_at_least(p, 300).await;
                for d in Direction::BOTH {
                    proxy.stall(d);
                }
                let mut states = p.watch_state();
                let state = within(
                    LIMIT,
                    "the publisher notices the stall",
                    states.wait_for(|s| matches!(s, PublisherState::Reconnecting { .. })),
                )
                .await
                .expect("state")
                .clone();
                for d in Direction::BOTH {
                    proxy.resume(d);
                }
                state
            };
            let (confirmed, state) = tokio::join!(publish_all(p, &q, TOTAL, 32), faults);
            Ok::<_, Error>((confirmed, p.stats(), state))
        }),
    )
    .await
    .expect("the scope");
    let PublisherState::Reconnecting { cause } = cause else {
        unreachable!()
    };
    assert!(
        matches!(cause, Error::HeartbeatTimeout(_)),
        "the stall ends in a heartbeat timeout, not {cause:?}"
    );
    let seen = drain(&q).await;
    let duplicates = check_none_lost(&confirmed, &seen);
    println!("stall: {stats:?}, {duplicates} duplicates in the queue");
    assert_eq!(confirmed.len() as u64, TOTAL);
    assert!(stats.reconnects >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_close_moves_to_the_next_host_and_other_losses_stay() {
    const TOTAL: u64 = 600;
    let q = unique_name("reliable-forced");
    declare(&q).await;
    // Two brokers in the list, both the default node seen through a proxy each.
    let (a, b) = (Proxy::start().await.unwrap(), Proxy::start().await.unwrap());
    let name = unique_name("reliable-forced");
    let config = a
        .client_config(&name)
        .with_more_hosts(vec![Endpoint::new("127.0.0.1", b.addr().port())]);
    let (confirmed, stats) = within(
        LIMIT,
        "publishing through a forced close",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            let moves = async {
                connected_to(p, a.addr().port()).await;
                confirmed_at_least(p, 100).await;
                rabbitmqctl::close_connection_async(&name, "node shutting down", LIMIT)
                    .await
                    .expect("rabbitmqctl close_connection");
                // 320: the next host, although the first one still answers.
                connected_to(p, b.addr().port()).await;
                confirmed_at_least(p, 300).await;
                // A cut is no node going away: the publisher stays on the same host.
                b.cut_all();
                let mut states = p.watch_state();
                within(
                    LIMIT,
                    "the cut is noticed",
                    states.wait_for(|s| matches!(s, PublisherState::Reconnecting { .. })),
                )
                .await
                .expect("state");
                connected_to(p, b.addr().port()).await;
            };
            let (confirmed, ()) = tokio::join!(publish_all(p, &q, TOTAL, 4), moves);
            Ok::<_, Error>((confirmed, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    assert_eq!(a.stats().connections, 1, "{:?}", a.stats());
    assert_eq!(b.stats().connections, 2, "{:?}", b.stats());
    let seen = drain(&q).await;
    let duplicates = check_none_lost(&confirmed, &seen);
    println!("forced close: {stats:?}, {duplicates} duplicates");
    assert_eq!(stats.reconnects, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_ends_the_scope_with_403() {
    let config = serena_tests::config(&unique_name("reliable-login"))
        .with_password(serena::Password::new("not-the-password"));
    let result: serena::Result<()> = within(
        LIMIT,
        "the refused login",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            p.publish("", "nowhere", "never", BasicProperties::default())
                .await
        }),
    )
    .await;
    let err = result.expect_err("no publisher without a login");
    assert_eq!(
        err.reply_code(),
        Some(UnexpectedCloseError::ACCESS_REFUSED),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_spreads_connections_over_the_list_without_republishing() {
    let q = unique_name("reliable-rebalance");
    declare(&q).await;
    let (a, b) = (Proxy::start().await.unwrap(), Proxy::start().await.unwrap());
    let config = a
        .client_config(&unique_name("reliable-rebalance"))
        .with_more_hosts(vec![Endpoint::new("127.0.0.1", b.addr().port())]);
    let options = ReliablePublisherOptions::default()
        .with_rebalance_interval(Some(Duration::from_millis(150)));
    let (confirmed, stats) = within(
        LIMIT,
        "publishing while rebalancing",
        ReliablePublisher::scope(&config, options, async |p| {
            let mut confirmed = Vec::new();
            let mut id = 0u64;
            // Until each proxy has carried at least two connections (the first broker
            // of each new connection is drawn at random).
            while a.stats().connections < 2 || b.stats().connections < 2 {
                let batch: Vec<u64> = (id..id + 50).collect();
                id += 50;
                let mut tasks = JoinSet::new();
                for n in batch {
                    let (p, q) = (p.clone(), q.clone());
                    tasks.spawn(async move {
                        p.publish("", &q, n.to_string(), BasicProperties::default())
                            .await
                            .map(|()| n)
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    confirmed.push(done.expect("task")?);
                }
            }
            Ok::<_, Error>((confirmed, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    let seen = drain(&q).await;
    let duplicates = check_none_lost(&confirmed, &seen);
    println!(
        "rebalancing: a {:?}, b {:?}, {stats:?}, {duplicates} duplicates",
        a.stats(),
        b.stats()
    );
    assert!(stats.reconnects >= 3, "{stats:?}");
    assert_eq!(stats.republished, 0, "a rebalance drains first: {stats:?}");
    assert_eq!(duplicates, 0);
}

/// `publish_queued` from one task keeps a window of messages in flight without a task per
/// message; a cut in the middle loses none of them, and a dropped confirmation does not
/// withdraw its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_publishes_from_one_task_survive_a_cut() {
    const TOTAL: u64 = 3000;
    const WINDOW: usize = 500;
    let q = unique_name("reliable-queued");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("reliable-queued"));
    let (confirmed, stats) = within(
        LIMIT,
        "queued publishing through a cut",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            let publishing = async {
                let mut window = std::collections::VecDeque::new();
                let mut confirmed = Vec::new();
                for id in 0..TOTAL {
                    if window.len() == WINDOW {
                        let (id, confirmation): (u64, serena::ReliableConfirmation) =
                            window.pop_front().expect("full");
                        confirmation.await?;
                        confirmed.push(id);
                    }
                    let body = id.to_string();
                    let c = p.publish_queued("", &q, body, Default::default()).await?;
                    if id == TOTAL - 1 {
                        // Dropped: the message still goes out and is confirmed.
                        drop(c);
                        continue;
                    }
                    window.push_back((id, c));
                }
                for (id, confirmation) in window {
                    confirmation.await?;
                    confirmed.push(id);
                }
                Ok::<_, Error>(confirmed)
            };
            let faults = async {
                confirmed_at_least(p, 1000).await;
                proxy.cut_all();
            };
            let (confirmed, ()) = tokio::join!(publishing, faults);
            let confirmed = confirmed?;
            within(LIMIT, "the dropped one confirmed too", async {
                while p.stats().confirmed < TOTAL {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            Ok::<_, Error>((confirmed, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    let seen = drain(&q).await;
    let duplicates = check_none_lost(&confirmed, &seen);
    assert_eq!(confirmed.len() as u64, TOTAL - 1);
    assert!(
        seen.contains_key(&(TOTAL - 1)),
        "the dropped confirmation's message"
    );
    assert_eq!(stats.confirmed, TOTAL, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(duplicates <= stats.republished, "{duplicates} > {stats:?}");
}

/// Confirmations of messages sent from the caller's task, dropped after their channel was
/// lost: the next channel sends those messages again (all confirmed, each in the queue) and
/// is not disturbed by the old channel's failed confirms (one reconnect, not two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_dropped_after_their_channel_died_do_not_disturb_the_next() {
    const TOTAL: u64 = 200;
    let q = unique_name("reliable-orphans");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("reliable-orphans"));
    let stats = within(
        LIMIT,
        "republishing what dropped confirmations left",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            p.connected().await?;
            // Confirms never come back: the messages stay held.
            proxy.stall(Direction::ServerToClient);
            let mut held = Vec::new();
            for id in 0..TOTAL {
                let body = id.to_string();
                held.push(
                    p.publish_queued("", &q, body, BasicProperties::default())
                        .await?,
                );
            }
            proxy.set_refusing(true);
            proxy.cut_all();
            while !matches!(p.state(), PublisherState::Reconnecting { .. }) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(held);
            proxy.resume(Direction::ServerToClient);
            proxy.set_refusing(false);
            while p.stats().in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, Error>(p.stats())
        }),
    )
    .await
    .expect("the scope");
    assert_eq!(stats.confirmed, TOTAL, "{stats:?}");
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    let seen = drain(&q).await;
    let ids: Vec<u64> = (0..TOTAL).collect();
    check_none_lost(&ids, &seen);
}
