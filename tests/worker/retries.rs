//! The worker's failure policy against the real RabbitMQ: a failing message comes back after
//! each delay of its queue's retry schedule and is parked after the last attempt with its
//! reason; a queue without a schedule is retried in the worker a few times and then rejected
//! to its dead-letter queue, never hot-looped; a poison message is parked at once; a handler
//! that settles its own delivery is never settled again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::proto::{FieldTable, FieldValue};
use serena::topology::RetrySchedule;
use serena::worker::{
    ATTEMPT_HEADER, Attempt, ConsumerSpec, DeliveryContext, FromDelivery, Handler, HandlerFuture,
    LAST_FAILURE_HEADER, LocalRetry, Outcome, Stats, Supervisor, SupervisorHandle,
};
use serena::{Channel, ConnectionConfig, QueueDeclareOptions, open_connection};
use serena_tests::unique_name;

/// One call of a handler: the attempt it was on and when.
type Calls = Arc<Mutex<Vec<(Attempt, Instant)>>>;

/// A handler whose behaviour is a closure over the attempt; records every call.
struct Recorder<F> {
    spec: ConsumerSpec,
    calls: Calls,
    decide: F,
}

impl<F> Handler for Recorder<F>
where
    F: Fn(&Attempt, &DeliveryContext) -> Outcome + Send + Sync + 'static,
{
    fn spec(&self) -> ConsumerSpec {
        self.spec.clone()
    }

    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let attempt = Attempt::from_delivery(ctx).expect("Attempt always extracts");
            self.calls
                .lock()
                .unwrap()
                .push((attempt.clone(), Instant::now()));
            (self.decide)(&attempt, ctx)
        })
    }
}

fn durable_with(arguments: FieldTable) -> QueueDeclareOptions {
    QueueDeclareOptions::default()
        .with_durable(true)
        .with_arguments(arguments)
}

/// Declares the work queue, the delay queues and the parking queue of `schedule` the way the
/// topology's `retry` key does: each delay queue with its TTL, dead-lettering back to the
/// work queue through the default exchange.
async fn declare_schedule(ch: &Channel, schedule: &RetrySchedule) -> serena::Result<()> {
    ch.queue_declare(&schedule.queue, durable_with(FieldTable::new()))
        .await?;
    for step in &schedule.steps {
        let arguments = FieldTable::new()
            .with("x-message-ttl", step.delay.as_millis() as i64)
            .with("x-dead-letter-exchange", "")
            .with("x-dead-letter-routing-key", schedule.queue.as_str());
        ch.queue_declare(&step.queue, durable_with(arguments))
            .await?;
    }
    ch.queue_declare(&schedule.park, durable_with(FieldTable::new()))
        .await?;
    Ok(())
}

async fn delete_all(ch: &Channel, queues: &[&str]) -> serena::Result<()> {
    for q in queues {
        ch.queue_delete(q, false, false).await?;
    }
    Ok(())
}

/// Runs `supervisor` until `done` says so (or `limit` passes), then stops it gracefully.
async fn run_until(
    supervisor: Supervisor,
    limit: Duration,
    done: impl Fn(&Stats) -> bool,
) -> Stats {
    let handle: SupervisorHandle = supervisor.handle();
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let stop = stop.clone();
        tokio::spawn(supervisor.run_until(async move { stop.notified().await }))
    };
    let started = Instant::now();
    while !done(&handle.stats()) && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.notify_one();
    task.await
        .expect("supervisor task")
        .expect("the supervisor stops cleanly");
    handle.stats()
}

/// The test broker; every connection of these tests has the same name.
fn config() -> ConnectionConfig {
    serena_tests::config("serena-tests retries")
}

#[tokio::test]
async fn a_failing_message_comes_back_after_each_delay_and_is_parked_after_the_last() {
    let queue = unique_name("retry");
    let delays = [Duration::from_millis(400), Duration::from_millis(800)];
    let schedule = RetrySchedule::new(&queue, &delays, None);
    let calls: Calls = Arc::default();
    let handler = Recorder {
        spec: ConsumerSpec::new("always_fails", queue.clone()),
        calls: calls.clone(),
        decide: |_: &Attempt, _: &DeliveryContext| Outcome::retry("the database is down"),
    };
    let parked = open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            declare_schedule(ch, &schedule).await?;
            ch.basic_publish("", &queue, b"order 1", Default::default())
                .await?;
            let stats = run_until(
                Supervisor::new(config())
                    .consumer(handler)
                    .retry(schedule.clone()),
                Duration::from_secs(15),
                |s| s.parked == 1,
            )
            .await;
            assert_eq!((stats.retried, stats.parked), (2, 1), "{stats:?}");
            let parked = ch
                .basic_get(&schedule.park, false)
                .await?
                .expect("the message is parked");
            parked.ack()?;
            let work = ch
                .queue_declare(&queue, durable_with(FieldTable::new()))
                .await?;
            assert_eq!(work.message_count, 0, "nothing left in the work queue");
            let mut names: Vec<&str> = schedule.steps.iter().map(|s| s.queue.as_str()).collect();
            names.extend([queue.as_str(), schedule.park.as_str()]);
            delete_all(ch, &names).await?;
            Ok::<_, serena::Error>(parked)
        })
        .await
    })
    .await
    .expect("connection");

    assert_eq!(&parked.body[..], b"order 1");
    let headers = parked.properties.headers.clone().expect("headers");
    assert_eq!(
        headers
            .get(LAST_FAILURE_HEADER)
            .and_then(FieldValue::as_str),
        Some("the database is down")
    );
    assert_eq!(
        headers.get(ATTEMPT_HEADER).and_then(FieldValue::as_i64),
        Some(3)
    );
    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<(u32, Option<u32>)> = calls.iter().map(|(a, _)| (a.number, a.of)).collect();
    assert_eq!(attempts, [(1, Some(3)), (2, Some(3)), (3, Some(3))]);
    assert_eq!(calls[0].0.last_failure, None);
    assert_eq!(
        calls[2].0.first_failure.as_deref(),
        Some("the database is down")
    );
    assert!(calls[2].0.is_last());
    for (i, delay) in delays.iter().enumerate() {
        let waited = calls[i + 1].1 - calls[i].1;
        println!(
            "retry {}: waited {waited:?} for a delay of {delay:?}",
            i + 1
        );
        assert!(
            waited + Duration::from_millis(50) >= *delay,
            "retry {} came back after {waited:?}, before its delay {delay:?}",
            i + 1
        );
        assert!(
            waited <= *delay + Duration::from_millis(1500),
            "retry {} came back after {waited:?}, long after its delay {delay:?}",
            i + 1
        );
    }
}

#[tokio::test]
async fn without_a_schedule_a_failure_is_retried_in_the_worker_then_dead_lettered() {
    let queue = unique_name("local");
    let dlq = format!("{queue}.dlq");
    let calls: Calls = Arc::default();
    let handler = Recorder {
        spec: ConsumerSpec::new("fails_locally", queue.clone()),
        calls: calls.clone(),
        decide: |_: &Attempt, _: &DeliveryContext| Outcome::retry("still broken"),
    };
    let local = LocalRetry {
        attempts: 3,
        first_delay: Duration::from_millis(150),
    };
    let dead = open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&dlq, durable_with(FieldTable::new()))
                .await?;
            let arguments = FieldTable::new()
                .with("x-dead-letter-exchange", "")
                .with("x-dead-letter-routing-key", dlq.as_str());
            ch.queue_declare(&queue, durable_with(arguments)).await?;
            ch.basic_publish("", &queue, b"job", Default::default())
                .await?;
            let stats = run_until(
                Supervisor::new(config())
                    .consumer(handler)
                    .local_retry(local),
                Duration::from_secs(10),
                |s| s.rejected == 1,
            )
            .await;
            assert_eq!(
                (stats.rejected, stats.requeued, stats.retried),
                (1, 0, 0),
                "{stats:?}"
            );
            let dead = ch.basic_get(&dlq, false).await?.expect("dead-lettered");
            dead.ack()?;
            delete_all(ch, &[&queue, &dlq]).await?;
            Ok::<_, serena::Error>(dead)
        })
        .await
    })
    .await
    .expect("connection");
    assert_eq!(&dead.body[..], b"job");
    let calls = calls.lock().unwrap().clone();
    let numbers: Vec<u32> = calls.iter().map(|(a, _)| a.number).collect();
    assert_eq!(numbers, [1, 2, 3], "three attempts, not a hot loop");
    assert_eq!(calls[1].0.last_failure.as_deref(), Some("still broken"));
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(gaps[0] >= Duration::from_millis(150), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(300), "{gaps:?}");
}

#[tokio::test]
async fn a_poison_message_is_parked_at_once_with_its_reason() {
    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        id: u64,
    }
    let queue = unique_name("poison");
    let schedule = RetrySchedule::new(&queue, &[Duration::from_secs(60)], None);
    let calls: Calls = Arc::default();
    let handler = Recorder {
        spec: ConsumerSpec::new("takes_json", queue.clone()),
        calls: calls.clone(),
        decide: |_: &Attempt, ctx: &DeliveryContext| {
            match serena::worker::Json::<Order>::from_delivery(ctx) {
                Ok(_) => Outcome::Ack,
                Err(rejection) => serena::worker::__private::poison(ctx, rejection),
            }
        },
    };
    let parked = open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            declare_schedule(ch, &schedule).await?;
            ch.basic_publish("", &queue, b"{not json", Default::default())
                .await?;
            let stats = run_until(
                Supervisor::new(config())
                    .consumer(handler)
                    .retry(schedule.clone()),
                Duration::from_secs(10),
                |s| s.parked == 1,
            )
            .await;
            assert_eq!((stats.parked, stats.retried), (1, 0), "{stats:?}");
            let parked = ch.basic_get(&schedule.park, false).await?.expect("parked");
            parked.ack()?;
            delete_all(ch, &[&queue, &schedule.steps[0].queue, &schedule.park]).await?;
            Ok::<_, serena::Error>(parked)
        })
        .await
    })
    .await
    .expect("connection");
    let reason = parked
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get(LAST_FAILURE_HEADER))
        .and_then(FieldValue::as_str)
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(reason.contains("not valid JSON"), "{reason:?}");
    assert_eq!(calls.lock().unwrap().len(), 1, "tried once, never retried");
}

#[tokio::test]
async fn a_handler_that_settles_its_own_delivery_is_not_settled_again() {
    const COUNT: u64 = 50;
    let queue = unique_name("selfack");
    let calls: Calls = Arc::default();
    let handler = Recorder {
        spec: ConsumerSpec::new("acks_itself", queue.clone()),
        calls: calls.clone(),
        decide: |_: &Attempt, ctx: &DeliveryContext| {
            // What a handler taking `Delivery` may do: settle it itself, then return Ack.
            let delivery = ctx.delivery.clone();
            let acked = delivery.ack();
            assert!(acked.is_ok(), "{acked:?}");
            assert!(matches!(
                delivery.nack(true),
                Err(serena::Error::AlreadySettled { .. })
            ));
            Outcome::Ack
        },
    };
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&queue, durable_with(FieldTable::new()))
                .await?;
            serena_tests::publish_ids(ch, "", &queue, 0..COUNT, 50).await?;
            let stats = run_until(
                Supervisor::new(config()).consumer(handler),
                Duration::from_secs(10),
                |s| s.settled_by_handler == COUNT,
            )
            .await;
            assert_eq!(stats.settled_by_handler, COUNT, "{stats:?}");
            assert_eq!(
                (stats.restarts, stats.acked, stats.dropped),
                (0, 0, 0),
                "no second ack, so no 406 and no restart: {stats:?}"
            );
            let left = ch
                .queue_declare(&queue, durable_with(FieldTable::new()))
                .await?;
            assert_eq!(left.message_count, 0);
            delete_all(ch, &[&queue]).await
        })
        .await
    })
    .await
    .expect("connection");
}

#[tokio::test]
async fn a_topology_with_a_retry_key_is_applied_and_its_schedule_followed() {
    let queue = unique_name("topo-retry");
    let park = format!("{queue}.parked");
    let toml = format!("[[queues]]\nname = \"{queue}\"\nretry = {{ delays = [\"300ms\"] }}\n");
    let topology =
        serena::topology::Topology::from_toml(&toml, "retries.toml").expect("a valid topology");
    let calls: Calls = Arc::default();
    let handler = Recorder {
        spec: ConsumerSpec::new("fails_twice", queue.clone()),
        calls: calls.clone(),
        decide: |attempt: &Attempt, _: &DeliveryContext| {
            Outcome::retry(format!("attempt {} failed", attempt.number))
        },
    };
    let supervisor = Supervisor::new(config())
        .topology(topology)
        .consumer(handler);
    let publisher = async {
        // The topology is applied when the supervisor starts: wait for the work queue.
        open_connection(&config(), async |conn| {
            for _ in 0..100 {
                let ch = conn.channel().await?;
                let passive = QueueDeclareOptions::default().with_passive(true);
                if ch.queue_declare(&queue, passive).await.is_ok() {
                    ch.basic_publish("", &queue, b"once", Default::default())
                        .await?;
                    return Ok::<_, serena::Error>(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the supervisor never applied the topology");
        })
        .await
        .expect("connection and publish");
    };
    let (stats, ()) = tokio::join!(
        run_until(supervisor, Duration::from_secs(10), |s| s.parked == 1),
        publisher
    );
    assert_eq!((stats.retried, stats.parked), (1, 1), "{stats:?}");
    let numbers: Vec<u32> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|(a, _)| a.number)
        .collect();
    assert_eq!(numbers, [1, 2]);
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            let parked = ch.basic_get(&park, false).await?.expect("parked");
            let reason = parked
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get(LAST_FAILURE_HEADER))
                .and_then(FieldValue::as_str)
                .map(str::to_owned);
            assert_eq!(reason.as_deref(), Some("attempt 2 failed"));
            parked.ack()?;
            let delay_queue =
                serena::topology::retry_queue_name(&queue, Duration::from_millis(300));
            delete_all(ch, &[&queue, &delay_queue, &park]).await
        })
        .await
    })
    .await
    .expect("connection");
}
