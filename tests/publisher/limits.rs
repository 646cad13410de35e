//! Bounded memory and typed failures: the caps hold while no broker can be reached (publish
//! waits, or fails at once), a body over the byte cap, a caller's timeout, messages the
//! broker returns or refuses among others it confirms, and futures dropped after their
//! first poll.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serena::proto::BasicProperties;
use serena::{
    CloseScope, Error, PublisherState, ReliablePublisher, ReliablePublisherOptions, WhenFull,
};
use serena_tests::cancel::poll_once;
use serena_tests::proxy::Proxy;
use serena_tests::{unique_name, within};
use tokio::task::JoinSet;

use super::faults::publish_all;
use super::{LIMIT, check_none_lost, declare, drain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_hold_while_the_broker_is_unreachable_then_everything_goes() {
    const TOTAL: u64 = 300;
    const CAP: usize = 50;
    let q = unique_name("reliable-cap");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    proxy.set_refusing(true);
    let config = proxy.client_config(&unique_name("reliable-cap"));
    let options = ReliablePublisherOptions::default()
        .with_max_messages(CAP)
        .with_max_bytes(100_000);
    let (confirmed, highest, stats) = within(
        LIMIT,
        "publishing after the broker comes back",
        ReliablePublisher::scope(&config, options, async |p| {
            let watch = async {
                let mut highest = 0usize;
                // Sampled while publishes pile up against the cap.
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until {
                    let s = p.stats();
                    assert!(s.in_flight_bytes <= 100_000, "{s:?}");
                    highest = highest.max(s.in_flight);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert!(
                    matches!(p.state(), PublisherState::Reconnecting { .. }),
                    "{:?}",
                    p.state()
                );
                assert_eq!(p.stats().in_flight, CAP, "full, and no further");
                proxy.set_refusing(false);
                highest
            };
            let (confirmed, highest) = tokio::join!(publish_all(p, &q, TOTAL, 200), watch);
            Ok::<_, Error>((confirmed, highest, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    assert_eq!(highest, CAP, "the message cap holds");
    let seen = drain(&q).await;
    check_none_lost(&confirmed, &seen);
    assert_eq!(confirmed.len() as u64, TOTAL);
    assert_eq!(stats.in_flight, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_publisher_set_to_fail_refuses_at_once_and_bodies_over_the_cap_fail() {
    let proxy = Proxy::start().await.expect("proxy");
    proxy.set_refusing(true);
    let config = proxy.client_config(&unique_name("reliable-full"));
    let options = ReliablePublisherOptions::default()
        .with_max_messages(5)
        .with_max_bytes(1000)
        .with_when_full(WhenFull::Fail);
    within(
        LIMIT,
        "the full publisher",
        ReliablePublisher::scope(&config, options, async |p| {
            let mut waiting = JoinSet::new();
            for i in 0..5 {
                let p = p.clone();
                waiting.spawn(async move {
                    p.publish("", "q", format!("{i}"), BasicProperties::default())
                        .await
                });
            }
            within(LIMIT, "five held", async {
                while p.stats().in_flight < 5 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            let started = Instant::now();
            let full = p.publish("", "q", "6", BasicProperties::default()).await;
            assert!(
                matches!(
                    full,
                    Err(Error::PublisherFull {
                        messages: 5,
                        bytes: 5
                    })
                ),
                "{full:?}"
            );
            assert!(started.elapsed() < Duration::from_millis(100));
            let big = p
                .publish("", "q", vec![0u8; 1001], BasicProperties::default())
                .await;
            assert!(
                matches!(
                    big,
                    Err(Error::MessageTooLarge {
                        size: 1001,
                        max: 1000
                    })
                ),
                "{big:?}"
            );
            waiting.abort_all();
            while waiting.join_next().await.is_some() {}
            // The aborted publishes withdrew their messages.
            assert_eq!(p.stats().in_flight, 0);
            Ok::<_, Error>(())
        }),
    )
    .await
    .expect("the scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_timeout_fails_the_publish_and_withdraws_it() {
    let proxy = Proxy::start().await.expect("proxy");
    proxy.set_refusing(true);
    let config = proxy.client_config(&unique_name("reliable-timeout"));
    let options =
        ReliablePublisherOptions::default().with_publish_timeout(Some(Duration::from_millis(300)));
    within(
        LIMIT,
        "the timed-out publish",
        ReliablePublisher::scope(&config, options, async |p| {
            let started = Instant::now();
            let r = p.publish("", "q", "late", BasicProperties::default()).await;
            assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
            assert!(started.elapsed() >= Duration::from_millis(300));
            assert!(started.elapsed() < Duration::from_secs(2));
            let s = p.stats();
            assert_eq!((s.in_flight, s.failed), (0, 1), "{s:?}");
            Ok::<_, Error>(())
        }),
    )
    .await
    .expect("the scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_and_refused_messages_fail_typed_while_the_rest_are_confirmed() {
    const TOTAL: u64 = 400;
    let q = unique_name("reliable-refused");
    declare(&q).await;
    let config = serena_tests::config(&unique_name("reliable-refused"));
    let no_exchange = unique_name("no-such-exchange");
    let no_queue = unique_name("no-such-queue");
    let (confirmed, returned, refused, stats) = within(
        LIMIT,
        "publishing with bad messages among good ones",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            let bad = async {
                // Let good ones flow first, so the bad ones land among them.
                while p.stats().confirmed < 50 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tokio::join!(
                    p.publish("", &no_queue, "unroutable", BasicProperties::default()),
                    p.publish(&no_exchange, "x", "refused", BasicProperties::default()),
                )
            };
            let (confirmed, (returned, refused)) = tokio::join!(publish_all(p, &q, TOTAL, 16), bad);
            Ok::<_, Error>((confirmed, returned, refused, p.stats()))
        }),
    )
    .await
    .expect("the scope");
    match returned {
        Err(Error::Returned(m)) => assert_eq!(
            (m.reply_code, m.routing_key.as_str()),
            (312, no_queue.as_str())
        ),
        other => panic!("expected the message back, got {other:?}"),
    }
    let close = refused
        .as_ref()
        .err()
        .and_then(Error::unexpected_close)
        .unwrap_or_else(|| panic!("expected the broker's 404, got {refused:?}"));
    assert_eq!(close.reply_code, 404, "{close:?}");
    assert!(matches!(close.scope, CloseScope::Channel(_)), "{close:?}");
    let seen = drain(&q).await;
    check_none_lost(&confirmed, &seen);
    assert_eq!(confirmed.len() as u64, TOTAL);
    assert_eq!((stats.failed, stats.confirmed), (2, TOTAL), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_future_dropped_after_its_first_poll_leaves_nothing_behind() {
    let q = unique_name("reliable-dropped");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("reliable-dropped"));
    let kept: Mutex<Option<ReliablePublisher>> = Mutex::default();
    // The scope, dropped after its first poll: no connection stays, clones fail at once.
    let first = poll_once(ReliablePublisher::scope(
        &config,
        ReliablePublisherOptions::default(),
        async |p| {
            *kept.lock().unwrap() = Some(p.clone());
            std::future::pending::<serena::Result<()>>().await
        },
    ))
    .await;
    assert!(first.is_none(), "the scope was still running");
    let orphan = kept.lock().unwrap().take().expect("the body ran");
    assert!(matches!(orphan.state(), PublisherState::Closed));
    let r = within(
        LIMIT,
        "a publish on a closed publisher",
        orphan.publish("", "q", "x", BasicProperties::default()),
    )
    .await;
    assert!(matches!(r, Err(Error::Closed(_))), "{r:?}");
    within(LIMIT, "no connection left", async {
        while proxy.stats().open > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // Inside a live scope: a publish and a wait for the connection, each dropped after
    // its first poll, withdraw what they started.
    proxy.set_refusing(true);
    within(
        LIMIT,
        "the live scope",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            assert!(
                poll_once(p.publish("", "q", "x", BasicProperties::default()))
                    .await
                    .is_none()
            );
            assert_eq!(p.stats().in_flight, 0, "the dropped publish is withdrawn");
            assert!(poll_once(p.connected()).await.is_none());
            proxy.set_refusing(false);
            within(LIMIT, "connected", p.connected()).await?;
            assert_eq!(p.stats().sent, 0, "the withdrawn message was never sent");

            // Connected: a publish goes out from the caller's task in its first poll; dropped
            // then, it is withdrawn (sent once, never again). A queued publish's confirmation
            // dropped after its first poll still gets its message confirmed.
            assert!(
                poll_once(p.publish("", &q, "1", BasicProperties::default()))
                    .await
                    .is_none()
            );
            assert_eq!(
                (p.stats().sent, p.stats().in_flight),
                (1, 0),
                "{:?}",
                p.stats()
            );
            let queued = p
                .publish_queued("", &q, "2", BasicProperties::default())
                .await?;
            assert!(
                poll_once(queued).await.is_none(),
                "the confirm takes a round trip"
            );
            within(
                LIMIT,
                "the dropped confirmation's message confirmed",
                async {
                    while p.stats().confirmed < 1 || p.stats().in_flight > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                },
            )
            .await;
            assert_eq!(p.stats().sent, 2, "nothing sent twice: {:?}", p.stats());
            Ok::<_, Error>(())
        }),
    )
    .await
    .expect("the scope");
    let seen = drain(&q).await;
    assert_eq!(
        seen.get(&2),
        Some(&1),
        "the queued message is in the queue once: {seen:?}"
    );
    assert!(seen.get(&1).is_none_or(|n| *n == 1), "{seen:?}");
}

/// `publish_queued` waits only for room: dropped while it waits (after its first poll), it
/// leaves nothing in the outbox and nothing is ever sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_publish_dropped_while_waiting_for_room_leaves_nothing() {
    let q = unique_name("reliable-queued-drop");
    declare(&q).await;
    let config = serena_tests::config(&unique_name("reliable-queued-drop"));
    let options = ReliablePublisherOptions::default().with_max_messages(1);
    let stats = within(
        LIMIT,
        "the scope",
        ReliablePublisher::scope(&config, options, async |p| {
            within(LIMIT, "connected", p.connected()).await?;
            let first = p
                .publish_queued("", &q, "1", BasicProperties::default())
                .await?;
            // The outbox holds its one message until the broker confirms it: the second
            // waits for room, and is dropped while it waits.
            let second = poll_once(p.publish_queued("", &q, "2", BasicProperties::default()));
            assert!(second.await.is_none(), "the second publish had no room");
            first.await?;
            Ok::<_, Error>(p.stats())
        }),
    )
    .await
    .expect("the scope");
    assert_eq!(
        (stats.sent, stats.confirmed, stats.in_flight),
        (1, 1, 0),
        "{stats:?}"
    );
    let seen = drain(&q).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [1],
        "only the first was sent"
    );
}

/// Messages no channel can carry: names over 255 bytes, a NaN header, a header larger than
/// the negotiated frame size. Sent from the caller's task (connected, nothing queued) they
/// fail at once; queued for the driver (no connection) the names and the NaN still fail at
/// once and the oversized header fails through its confirmation when the driver gets to it.
/// Either way nothing is held for them, and the good messages around them are confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_no_channel_can_carry_fail_typed_on_either_path_and_hold_nothing() {
    use serena::proto::{EncodeError, FieldTable, FieldValue};
    let q = unique_name("reliable-uncarriable");
    declare(&q).await;
    let proxy = Proxy::start().await.expect("proxy");
    let config = proxy.client_config(&unique_name("reliable-uncarriable"));
    let long = "k".repeat(256);
    let mut nan = FieldTable::default();
    nan.insert("x", FieldValue::F64(f64::NAN));
    let nan = BasicProperties::default().with_headers(nan);
    let mut blob = FieldTable::default();
    blob.insert("blob", FieldValue::ByteArray(vec![0u8; 300_000].into()));
    let huge = BasicProperties::default().with_headers(blob);
    let encode_error = |r: serena::Result<()>| match r {
        Err(Error::Encode(e)) => e,
        other => panic!("expected an encoding error, got {other:?}"),
    };
    let (direct, queued, late, good, stats) = within(
        LIMIT,
        "publishing messages no channel can carry",
        ReliablePublisher::scope(&config, ReliablePublisherOptions::default(), async |p| {
            p.connected().await?;
            let try_all = async |p: &ReliablePublisher| {
                [
                    p.publish("", &long, "x", BasicProperties::default()).await,
                    p.publish(&long, "k", "x", BasicProperties::default()).await,
                    p.publish("", &q, "x", nan.clone()).await,
                ]
            };
            let mut direct = try_all(p).await.to_vec();
            direct.push(p.publish("", &q, "x", huge.clone()).await);
            // No connection: everything waits for the driver.
            proxy.set_refusing(true);
            proxy.cut_all();
            while !matches!(p.state(), PublisherState::Reconnecting { .. }) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let queued = try_all(p).await;
            let before = p.publish_queued("", &q, "1", BasicProperties::default());
            let before = before.await?;
            let late = p.publish_queued("", &q, "x", huge.clone()).await?;
            let after = p.publish_queued("", &q, "2", BasicProperties::default());
            let after = after.await?;
            assert_eq!(p.stats().in_flight, 3, "{:?}", p.stats());
            proxy.set_refusing(false);
            let (before, late, after) = tokio::join!(before, late, after);
            Ok::<_, Error>((direct, queued, late, [before, after], p.stats()))
        }),
    )
    .await
    .expect("the scope");
    let direct: Vec<_> = direct.into_iter().map(encode_error).collect();
    assert!(
        matches!(
            direct[..],
            [
                EncodeError::ShortStringTooLong { len: 256, .. },
                EncodeError::ShortStringTooLong { len: 256, .. },
                EncodeError::NonFiniteFloat { .. },
                EncodeError::FrameTooLarge { .. },
            ]
        ),
        "{direct:?}"
    );
    let queued: Vec<_> = queued.into_iter().map(encode_error).collect();
    assert!(
        matches!(
            queued[..],
            [
                EncodeError::ShortStringTooLong { .. },
                EncodeError::ShortStringTooLong { .. },
                EncodeError::NonFiniteFloat { .. },
            ]
        ),
        "{queued:?}"
    );
    assert!(
        matches!(encode_error(late), EncodeError::FrameTooLarge { .. }),
        "through the driver"
    );
    for g in good {
        g.expect("the good messages are confirmed");
    }
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!((stats.confirmed, stats.failed), (2, 8), "{stats:?}");
    let seen = drain(&q).await;
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [(1, 1), (2, 1)],
        "only the good ones reached the queue"
    );
}
