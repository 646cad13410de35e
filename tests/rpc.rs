//! Request/reply over direct reply-to against RabbitMQ: [`serena::RpcClient`] calls (10,000 at
//! once through one channel, timeouts, unroutable requests, a connection killed mid-call,
//! calls dropped after their first poll) answered by a plain responder, and `#[consumer]`
//! handlers that answer with `Reply<T>` through the supervisor (rpc/handlers.rs).

use std::time::{Duration, Instant};

use serena::proto::BasicProperties;
use serena::{
    Channel, Connection, ConsumeOptions, Error, RpcOptions, UnconfirmedChannel, open_connection,
};
use serena_tests::cancel::poll_once;
use serena_tests::{config, exclusive, rabbitmqctl, unique_name, within};

#[path = "rpc/handlers.rs"]
mod handlers;

/// What the responder does with each request body: `Some(reply)` answers it, `None` leaves
/// it unanswered.
type Answer = fn(&[u8]) -> Option<Vec<u8>>;

/// A request the responder holds: where its reply goes, and the reply.
struct Held {
    reply_to: String,
    correlation_id: Option<String>,
    body: Vec<u8>,
}

/// Answers the requests on `queue` (consumed on `requests`, replies published on `replies`)
/// with `answer`. The first `hold` requests are held until all of them arrived (proof that
/// their calls were in flight together) and then answered in reverse order; later ones at
/// once. Runs until its channel ends; the number of requests seen so far is in `seen`.
async fn respond(
    requests: &Channel,
    replies: &UnconfirmedChannel,
    queue: &str,
    hold: usize,
    answer: Answer,
) -> Result<(), Error> {
    let mut consumer = requests
        .basic_consume(queue, ConsumeOptions::default().with_no_ack(true))
        .await?;
    let mut held = Vec::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let reply_to = delivery.properties.reply_to.as_deref().unwrap_or_default();
        // The broker rewrote the caller's `amq.rabbitmq.reply-to` into a name of its own.
        assert!(
            reply_to.starts_with("amq.rabbitmq.reply-to."),
            "reply_to as the responder sees it: {reply_to:?}"
        );
        let Some(body) = answer(&delivery.body) else {
            continue;
        };
        held.push(Held {
            reply_to: reply_to.to_owned(),
            correlation_id: delivery
                .properties
                .correlation_id
                .as_deref()
                .map(str::to_owned),
            body,
        });
        if held.len() < hold {
            continue;
        }
        while let Some(h) = held.pop() {
            let mut properties = BasicProperties::default().with_content_type("application/json");
            if let Some(id) = h.correlation_id {
                properties = properties.with_correlation_id(id);
            }
            replies
                .basic_publish("", &h.reply_to, h.body, properties)
                .await?;
        }
    }
    Ok(())
}

/// Doubles a JSON number.
fn double(body: &[u8]) -> Option<Vec<u8>> {
    let n: u64 = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&(2 * n)).ok()
}

/// Declares an exclusive request queue on `conn` and runs `client` beside a responder on
/// their own channels.
async fn with_responder<T>(
    conn: &Connection,
    hold: usize,
    answer: Answer,
    client: impl AsyncFnOnce(&str) -> Result<T, Error>,
) -> Result<T, Error> {
    let queue = unique_name("rpc");
    let requests = conn.channel().await?;
    requests.queue_declare(&queue, exclusive()).await?;
    let replies = conn.unconfirmed_channel().await?;
    tokio::select! {
        r = respond(&requests, &replies, &queue, hold, answer) => {
            r?;
            Err(Error::Closed("responder"))
        }
        v = client(&queue) => v,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_through_one_channel_all_answered() {
    const CALLS: u64 = 10_000;
    let started = Instant::now();
    let answered: Result<u64, Error> = open_connection(&config("rpc-10k"), async |conn| {
        // Every request is held until all 10,000 arrived: they are all in flight at once.
        with_responder(conn, CALLS as usize, double, async |queue| {
            let options = RpcOptions::new()
                .with_max_in_flight(CALLS as usize)
                .with_timeout(Duration::from_secs(60));
            conn.open_rpc_with(options, async |rpc| {
                let mut calls = tokio::task::JoinSet::new();
                for n in 0..CALLS {
                    let (rpc, queue) = (rpc.clone(), queue.to_owned());
                    calls.spawn(async move { (n, rpc.call::<u64, u64>(&queue, &n).await) });
                }
                let mut answered = 0;
                while let Some(done) = calls.join_next().await {
                    let (n, reply) = done.expect("call task");
                    assert_eq!(reply?, 2 * n, "the reply of call {n}");
                    answered += 1;
                }
                assert_eq!(rpc.in_flight(), 0);
                assert_eq!(rpc.late_replies(), 0);
                Ok(answered)
            })
            .await
        })
        .await
    })
    .await;
    assert_eq!(answered.expect("scope"), CALLS);
    eprintln!("10,000 concurrent calls in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_frees_its_slot_and_its_late_reply_is_dropped() {
    // The first request is held until the second arrives; then both are answered, the
    // second first. One slot: the second call can only start once the first freed it.
    let r: Result<(), Error> = open_connection(&config("rpc-timeout"), async |conn| {
        with_responder(conn, 2, double, async |queue| {
            let options = RpcOptions::new()
                .with_max_in_flight(1)
                .with_timeout(Duration::from_millis(300));
            conn.open_rpc_with(options, async |rpc| {
                let started = Instant::now();
                match rpc.call::<u64, u64>(queue, &1).await {
                    Err(Error::Timeout(after)) => assert_eq!(after, Duration::from_millis(300)),
                    other => panic!("expected a timeout, got {other:?}"),
                }
                assert!(started.elapsed() < Duration::from_secs(2));
                assert_eq!(rpc.in_flight(), 0, "the timed-out call left the table");
                let patient = rpc.with_timeout(Duration::from_secs(10));
                assert_eq!(patient.call::<u64, u64>(queue, &21).await?, 42);
                // The late reply (to request 1, sent after this one's) matches no call.
                within(Duration::from_secs(5), "the late reply", async {
                    while rpc.late_replies() == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await;
                assert_eq!((rpc.late_replies(), rpc.in_flight()), (1, 0));
                Ok(())
            })
            .await
        })
        .await
    })
    .await;
    r.expect("scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_timeout_started_later_fires_first() {
    // The scope's one timer is armed for the long call's deadline; the short call, started
    // after it, must re-arm it for its own.
    let r: Result<(), Error> = open_connection(&config("rpc-timeouts"), async |conn| {
        with_responder(
            conn,
            1,
            |_| None,
            async |queue| {
                conn.open_rpc(async |rpc| {
                    let patient = rpc.with_timeout(Duration::from_secs(3));
                    let long = patient.call::<u64, u64>(queue, &1);
                    // In a task of its own: only the re-arming wakes the scope's task, not
                    // the short call's confirm.
                    let (quick, queue_name) = (
                        rpc.with_timeout(Duration::from_millis(200)),
                        queue.to_owned(),
                    );
                    let short = tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let started = Instant::now();
                        let r = quick.call::<u64, u64>(&queue_name, &2).await;
                        (r, started.elapsed())
                    });
                    let short = async { short.await.expect("the short call's task") };
                    let started = Instant::now();
                    let (long, (short, short_took)) = tokio::join!(long, short);
                    assert!(matches!(short, Err(Error::Timeout(_))), "{short:?}");
                    assert!(short_took < Duration::from_millis(1_000), "{short_took:?}");
                    assert!(matches!(long, Err(Error::Timeout(_))), "{long:?}");
                    let long_took = started.elapsed();
                    assert!(long_took >= Duration::from_secs(3), "{long_took:?}");
                    assert!(long_took < Duration::from_secs(5), "{long_took:?}");
                    assert_eq!(rpc.in_flight(), 0);
                    Ok(())
                })
                .await
            },
        )
        .await
    })
    .await;
    r.expect("scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_request_comes_back_as_returned_at_once() {
    let r: Result<(), Error> = open_connection(&config("rpc-unroutable"), async |conn| {
        conn.open_rpc(async |rpc| {
            let started = Instant::now();
            let nowhere = unique_name("rpc-nowhere");
            match rpc.call::<_, u64>(&nowhere, &1).await {
                Err(Error::Returned(r)) => {
                    assert_eq!((r.reply_code, &*r.routing_key), (312, &*nowhere));
                    // The broker returns the request with its reply_to already rewritten.
                    let reply_to = r.properties.reply_to.as_deref().unwrap_or_default();
                    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
                }
                other => panic!("expected a return, got {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(2), "not a timeout");
            assert_eq!(rpc.in_flight(), 0);
            Ok(())
        })
        .await
    })
    .await;
    r.expect("scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_fails_every_call_in_flight_at_once() {
    let name = unique_name("rpc-killed");
    let mut stray = None;
    let started = Instant::now();
    let r: Result<(), Error> = open_connection(&config(&name), async |conn| {
        // The responder never answers.
        with_responder(
            conn,
            1,
            |_| None,
            async |queue| {
                conn.open_rpc(async |rpc| {
                    // One call from a task that outlives the scope, one inside it.
                    let (escaped, queue_name) = (rpc.clone(), queue.to_owned());
                    stray = Some(tokio::spawn(async move {
                        escaped.call::<u64, u64>(&queue_name, &1).await
                    }));
                    let inside = rpc.call::<u64, u64>(queue, &2);
                    let kill = async {
                        rabbitmqctl::close_connection_async(
                            &name,
                            "rpc test",
                            Duration::from_secs(10),
                        )
                        .await
                        .expect("rabbitmqctl close_connection");
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        r = inside => r.map(drop),
                        () = kill => unreachable!(),
                    }
                })
                .await
            },
        )
        .await
    })
    .await;
    let error = r.expect_err("the connection was killed");
    assert_eq!(error.reply_code(), Some(320), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let stray = within(
        Duration::from_secs(2),
        "the stray call",
        stray.expect("spawned"),
    )
    .await
    .expect("task");
    assert!(stray.is_err(), "{stray:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_scopes_dropped_after_their_first_poll_leave_nothing_behind() {
    let r: Result<(), Error> = open_connection(&config("rpc-cancel"), async |conn| {
        with_responder(conn, 1, double, async |queue| {
            let channels = conn.open_channels();
            // A scope dropped mid-way: its channel closes in the background.
            assert!(
                poll_once(conn.open_rpc(async |_| Ok::<_, Error>(())))
                    .await
                    .is_none()
            );
            let options = RpcOptions::new().with_max_in_flight(2);
            conn.open_rpc_with(options, async |rpc| {
                // Each call is dropped after its request went out: its slot and its entry go
                // with it, and its reply, when it comes, is dropped.
                for n in 0..10 {
                    assert!(poll_once(rpc.call::<u64, u64>(queue, &n)).await.is_none());
                    assert_eq!(rpc.in_flight(), 0);
                }
                assert_eq!(rpc.call::<u64, u64>(queue, &50).await?, 100);
                assert!(
                    poll_once(rpc.request("", queue, b"1", Default::default()))
                        .await
                        .is_none()
                );
                assert_eq!(rpc.call::<u64, u64>(queue, &60).await?, 120);
                Ok::<_, Error>(())
            })
            .await?;
            within(Duration::from_secs(5), "channels closed", async {
                while conn.open_channels() > channels {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            Ok(())
        })
        .await
    })
    .await;
    r.expect("scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_the_expected_json_is_a_json_error() {
    let r: Result<(), Error> = open_connection(&config("rpc-json"), async |conn| {
        with_responder(
            conn,
            1,
            |_| Some(b"\"text\"".to_vec()),
            async |queue| {
                conn.open_rpc(async |rpc| {
                    match rpc.call::<u64, u64>(queue, &1).await {
                        Err(Error::Json(_)) => {}
                        other => panic!("expected a JSON error, got {other:?}"),
                    }
                    // The raw reply is there for a caller that decodes it itself.
                    let reply = rpc.request("", queue, b"1", Default::default()).await?;
                    assert_eq!(&reply.body[..], b"\"text\"");
                    Ok(())
                })
                .await
            },
        )
        .await
    })
    .await;
    r.expect("scope");
}
