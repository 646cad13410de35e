//! Consumers of stream queues (`ConsumerSpec::stream_offset`, `#[consumer(offset = ...)]`):
//! RabbitMQ keeps no position for an AMQP 0-9-1 consumer, so a consumer from `first` reads the
//! whole log again after a restart, one from `next` only what comes after it attached, one
//! from an offset starts there; and a stream consumer without a prefetch limit is refused, by
//! RabbitMQ and, before it is sent, by the supervisor.
//!
//! Each test declares a stream with a unique name and deletes it when it ends (a guard, so a
//! failed assertion deletes it too: streams take no `x-expires`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serena::proto::FieldTable;
use serena::worker::{ConsumerSpec, Outcome, Phase, Supervisor, SupervisorError};
use serena::{ConnectionConfig, ConsumeOptions, Error, QueueDeclareOptions, StreamOffset};
use serena_tests::handlers::handler_fn;
use serena_tests::{config, publish_ids, unique_name, within};
use tokio::sync::Notify;

use super::{body_number, fast_backoff};

/// A stream queue named `name`, deleted from the broker when dropped.
struct Stream {
    name: String,
}

impl Stream {
    /// Declares the stream and publishes `count` numbered messages to it (0, 1, ...).
    async fn with_messages(prefix: &str, count: u64) -> Stream {
        let stream = Stream {
            name: unique_name(prefix),
        };
        stream.publish(0..count).await;
        stream
    }

    async fn publish(&self, ids: std::ops::Range<u64>) {
        let conn = serena::Connection::open(&ConnectionConfig::default())
            .await
            .expect("connect");
        let ch = conn.channel().await.expect("channel");
        ch.queue_declare(
            &self.name,
            QueueDeclareOptions::default()
                .with_durable(true)
                .with_arguments(FieldTable::new().with("x-queue-type", "stream")),
        )
        .await
        .expect("declare the stream");
        publish_ids(&ch, "", &self.name, ids, 100)
            .await
            .expect("publish");
        conn.close().await.expect("close");
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Its own thread and runtime: drop may run inside the test's runtime, or unwinding.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let conn = serena::Connection::open(&ConnectionConfig::default()).await?;
                    let ch = conn.channel().await?;
                    ch.queue_delete(&name, false, false).await?;
                    conn.close().await
                })
        })
        .join();
    }
}

/// What a handler saw: each delivery's number, in order.
#[derive(Default)]
struct Seen {
    numbers: Mutex<Vec<u32>>,
    changed: Notify,
}

impl Seen {
    fn len(&self) -> usize {
        self.numbers.lock().expect("lock").len()
    }

    async fn until(&self, n: usize) {
        loop {
            let notified = self.changed.notified();
            if self.len() >= n {
                return;
            }
            notified.await;
        }
    }
}

fn recording(spec: ConsumerSpec, seen: &Arc<Seen>) -> impl serena::worker::Handler + use<> {
    let seen = seen.clone();
    handler_fn(spec, move |d| {
        let seen = seen.clone();
        async move {
            seen.numbers.lock().expect("lock").push(body_number(&d));
            seen.changed.notify_waiters();
            Outcome::Ack
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_from_first_reads_the_whole_stream_again_after_a_restart() {
    const COUNT: u32 = 50;
    let stream = Stream::with_messages("stream-first", COUNT.into()).await;
    let conn_name = unique_name("stream-sup");
    let seen = Arc::new(Seen::default());
    let spec = ConsumerSpec {
        prefetch: Some(10),
        stream_offset: Some(StreamOffset::First),
        ..ConsumerSpec::new("stream", stream.name.clone())
    };
    let sup = Supervisor::new(config(&conn_name))
        .consumer(recording(spec, &seen))
        .backoff(fast_backoff());
    let handle = sup.handle();
    let waiting = seen.clone();
    let run = tokio::spawn(sup.run_until(async move { waiting.until(2 * COUNT as usize).await }));

    within(
        Duration::from_secs(20),
        "the first pass",
        seen.until(COUNT as usize),
    )
    .await;
    // Acked, and still there: a stream keeps what it delivered. Restart the consumer.
    serena_tests::rabbitmqctl::close_connection_async(
        &conn_name,
        "test: restart the stream consumer",
        Duration::from_secs(10),
    )
    .await
    .expect("close the supervisor's connection");
    within(Duration::from_secs(30), "the second pass", run)
        .await
        .expect("join")
        .expect("clean stop");

    let numbers = seen.numbers.lock().expect("lock").clone();
    let pass: Vec<u32> = (0..COUNT).collect();
    assert_eq!(numbers.len(), 2 * COUNT as usize, "{numbers:?}");
    assert_eq!(&numbers[..COUNT as usize], pass, "first pass in order");
    assert_eq!(&numbers[COUNT as usize..], pass, "from the start again");
    assert!(handle.stats().restarts >= 1, "{:?}", handle.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_reads_only_what_comes_after_and_an_offset_starts_there() {
    let stream = Stream::with_messages("stream-next", 20).await;
    let from_next = Arc::new(Seen::default());
    let from_offset = Arc::new(Seen::default());
    let spec = |name: &str, offset| ConsumerSpec {
        stream_offset: Some(offset),
        ..ConsumerSpec::new(name.to_owned(), stream.name.clone())
    };
    let sup = Supervisor::new(config(&unique_name("stream-next")))
        .consumer(recording(spec("next", StreamOffset::Next), &from_next))
        .consumer(recording(
            spec("offset", StreamOffset::Offset(15)),
            &from_offset,
        ));
    let mut handle = sup.handle();
    let waiting = (from_next.clone(), from_offset.clone());
    let run = tokio::spawn(sup.run_until(async move {
        waiting.0.until(5).await;
        waiting.1.until(10).await;
    }));
    within(Duration::from_secs(20), "ready", handle.ready()).await;
    stream.publish(100..105).await;
    within(Duration::from_secs(20), "both consumers", run)
        .await
        .expect("join")
        .expect("clean stop");
    assert_eq!(
        *from_next.numbers.lock().expect("lock"),
        [100, 101, 102, 103, 104]
    );
    assert_eq!(
        *from_offset.numbers.lock().expect("lock"),
        [15, 16, 17, 18, 19, 100, 101, 102, 103, 104]
    );
}

/// What RabbitMQ does with a stream consumer that has no prefetch limit (`basic.qos` 0): it
/// refuses the consume with a channel error, 406 PRECONDITION_FAILED.
#[tokio::test]
async fn rabbitmq_refuses_a_stream_consumer_without_a_prefetch_limit() {
    let stream = Stream::with_messages("stream-noqos", 1).await;
    let conn = serena::Connection::open(&config(&unique_name("stream-noqos")))
        .await
        .expect("connect");
    let ch = conn.channel().await.expect("channel");
    ch.basic_qos(0, false).await.expect("qos 0");
    let refused = match ch
        .basic_consume(
            &stream.name,
            ConsumeOptions::default().with_arguments(StreamOffset::First.arguments()),
        )
        .await
    {
        Ok(_) => panic!("RabbitMQ took a stream consumer without a prefetch limit"),
        Err(e) => e,
    };
    assert_eq!(refused.reply_code(), Some(406), "{refused}");
    println!("RabbitMQ says: {refused}");
    conn.close().await.expect("close");

    // The supervisor refuses it before sending anything, and stops: a restart cannot help.
    let spec = ConsumerSpec {
        prefetch: Some(0),
        stream_offset: Some(StreamOffset::First),
        ..ConsumerSpec::new("unlimited", stream.name.clone())
    };
    let seen = Arc::new(Seen::default());
    let stopped = within(
        Duration::from_secs(20),
        "the supervisor stops",
        Supervisor::new(config(&unique_name("stream-noqos-sup")))
            .consumer(recording(spec, &seen))
            .run_until(std::future::pending::<()>()),
    )
    .await
    .expect_err("refused");
    match &stopped {
        SupervisorError::Permanent(tree) => {
            assert_eq!(tree.phase, Phase::StartConsumers, "{stopped}");
            assert!(
                matches!(&tree.error, Error::Config(m) if m.contains("prefetch 0")),
                "{stopped}"
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(seen.len(), 0);
}
