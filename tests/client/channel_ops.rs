//! Every channel operation of the client against the real RabbitMQ (3.10) on 127.0.0.1:5672,
//! with its error paths. The tests live in four modules under `channel_ops/`:
//!
//! - `topology`: exchanges of every type and their options, queue and exchange bindings,
//!   purge and delete with their counts and 406s, server-named queues, QoS, recover, flow.
//! - `publishing`: mismatched redeclares, `immediate`, a full queue's nack, empty and 16 MiB
//!   bodies, unicode and 255/256-byte names, headers of every field type.
//! - `consuming`: the prefetch window, no head-of-line blocking between channels, dropped
//!   consumers, nack / reject / ack, ending a scope with deliveries unacknowledged.
//! - `channels`: channel ids and `channel_max`, the channel pool.
//!
//! Each test uses its own names and cleans up what it declares: queues are exclusive (gone with
//! the connection) or deleted, exchanges deleted or auto-deleted. Every wait is bounded by a
//! timeout, so a hang fails the test instead of blocking the run, and the tests are safe to run
//! in parallel with each other and with the other broker tests.
//!
//! What RabbitMQ 3.10 was found to do, and these tests pin down:
//!
//! - `channel.flow(active = false)`, `basic.recover(requeue = false)` and `immediate`
//!   publishing close the *connection* with 540 NOT_IMPLEMENTED, not only the channel.
//! - An exclusive queue is never durable: redeclaring it with another `durable` flag is fine.
//! - Headers of every [`FieldValue`] type come back unchanged while the broker keeps the
//!   properties as they were sent. When it has to encode them anew (it strips a `BCC` header,
//!   it dead-letters the message) an unsigned 64-bit `L` comes back as a signed `l` with the
//!   same bits, every other type unchanged; dead-lettering also sorts the top-level entries by
//!   key (nested tables keep their order).

use std::time::{Duration, Instant};

use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::{
    Channel, CloseScope, Connection, ConnectionConfig, ConsumeOptions, Consumer, Delivery, Error,
    ExchangeDeclareOptions, PublishOptions, QueueDeclareOptions, Result, UnexpectedCloseError,
    open_connection,
};
use serena_tests::{exclusive, passive, unique_name, within};

#[path = "channel_ops/channels.rs"]
mod channels;
#[path = "channel_ops/consuming.rs"]
mod consuming;
#[path = "channel_ops/publishing.rs"]
mod publishing;
#[path = "channel_ops/topology.rs"]
mod topology;
#[path = "channel_ops/unconfirmed.rs"]
mod unconfirmed;

/// Upper bound for a whole connection scope of one test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for one awaited event: a delivery, a close, a pool refill.
const STEP: Duration = Duration::from_secs(5);

/// The test broker; every connection of these tests has the same name.
fn config() -> ConnectionConfig {
    serena_tests::config("serena-tests channel_ops")
}

/// Runs `body` in a connection of its own and returns its value; any error fails the test.
async fn with_connection<T>(
    cfg: &ConnectionConfig,
    body: impl AsyncFnOnce(&Connection) -> Result<T>,
) -> T {
    within(TEST_LIMIT, "connection scope", open_connection(cfg, body))
        .await
        .expect("the connection and the test body")
}

fn exclusive_with(arguments: FieldTable) -> QueueDeclareOptions {
    exclusive().with_arguments(arguments)
}

/// A non-durable exchange that goes away with its last binding.
fn transient() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions::default()
        .with_durable(false)
        .with_auto_delete(true)
}

fn no_args() -> FieldTable {
    FieldTable::new()
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) -> Result<()> {
    ch.basic_publish(exchange, key, body, BasicProperties::default())
        .await
}

async fn publish_headers(ch: &Channel, exchange: &str, headers: FieldTable) -> Result<()> {
    let props = BasicProperties::default().with_headers(headers);
    ch.basic_publish(exchange, "", b"h", props).await
}

/// Messages ready in `queue`.
async fn ready(ch: &Channel, queue: &str) -> Result<u32> {
    Ok(ch.queue_declare(queue, passive()).await?.message_count)
}

/// Waits until `queue` has `count` ready messages.
async fn wait_ready(ch: &Channel, queue: &str, count: u32) -> Result<()> {
    let deadline = Instant::now() + STEP;
    loop {
        let n = ready(ch, queue).await?;
        if n == count {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: {n} ready, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes every ready message off `queue` without acknowledgement; the bodies, in order.
async fn drain(ch: &Channel, queue: &str) -> Result<Vec<String>> {
    let mut bodies = Vec::new();
    while let Some(m) = ch.basic_get(queue, true).await? {
        bodies.push(String::from_utf8_lossy(&m.body).into_owned());
    }
    Ok(bodies)
}

async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    within(STEP, "a delivery", consumer.next())
        .await
        .expect("the consumer ended")
        .expect("a delivery")
}

/// Fails the test if `consumer` yields anything within `quiet`.
async fn assert_quiet(consumer: &mut Consumer, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("expected no delivery for {quiet:?}, got {item:?}");
    }
}

/// The publish failed because no queue took the message (mandatory, 312 NO_ROUTE).
#[track_caller]
fn assert_unroutable(result: Result<()>) {
    match result {
        Err(Error::Returned(r)) => assert_eq!(r.reply_code, 312, "{r:?}"),
        other => panic!("expected the message back with 312, got {other:?}"),
    }
}

/// `err` is a server close of `scope` with `code`, caused by method `class_method`.
#[track_caller]
fn assert_closed(
    err: &Error,
    scope: CloseScope,
    code: u16,
    class_method: (u16, u16),
) -> &UnexpectedCloseError {
    let close = err
        .unexpected_close()
        .unwrap_or_else(|| panic!("expected a server close, got {err:?}"));
    assert_eq!(close.scope, scope, "{close:?}");
    assert_eq!(close.reply_code, code, "{close:?}");
    assert_eq!((close.class_id, close.method_id), class_method, "{close:?}");
    close
}

/// Publishes `count` numbered messages to `queue`, all in flight at once, and awaits the
/// confirms.
async fn publish_numbered(ch: &Channel, queue: &str, count: u32) -> Result<()> {
    let mut confirms = Vec::with_capacity(count as usize);
    for i in 0..count {
        let c = ch
            .basic_publish_with(
                "",
                queue,
                i.to_be_bytes(),
                BasicProperties::default(),
                PublishOptions::default(),
            )
            .await?;
        confirms.push(c);
    }
    for c in confirms {
        c.await?;
    }
    Ok(())
}

fn number(d: &Delivery) -> u32 {
    u32::from_be_bytes(d.body[..].try_into().expect("a 4-byte body"))
}
