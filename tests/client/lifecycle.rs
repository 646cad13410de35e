//! Lifecycle: what a user sees around a close and around a cancelled call, against the real
//! RabbitMQ on 127.0.0.1:5672. Acceptance tests, through the public API only: each checks what
//! a user would (a call's result, `is_open` and `error()`, whether the connection lives on,
//! what the broker still holds), and each can fail.
//!
//! - `server_close`: a server `channel.close` on a busy consuming channel leaves the connection
//!   and its other channels alone; a channel opened right after gets none of the old channel's
//!   deliveries; `Channel::error()` is set by the time a call fails with the close.
//! - `returns`: a `basic.return` fails the publish it belongs to, also when pipelined mandatory
//!   publishes share exchange and routing key (a headers exchange, a `CC` header).
//! - `after_close`: acks, nacks, rejects, cancels and publishes after (or racing) a server
//!   close fail without killing the connection; dropping a `no_ack` consumer leaves its channel
//!   open.
//! - `cancellation`: every public future dropped after its first poll (as a `select!` or a
//!   timeout drops it) leaves nothing behind: no channel, no consumer, no stranded message, no
//!   reply taken by the next call.
//!
//! Each test uses its own queues (exclusive: gone with the connection) and exchanges
//! (auto-delete, deleted at the end), so the tests run in parallel with each other and with the
//! other broker tests, and is bounded by [`LIMIT`], so a hang fails instead of blocking. The
//! tests that race a close run many rounds on a multi-threaded runtime; they catch a client
//! that leaves the race open in nearly every run alone, and in most when the whole binary runs
//! at once on a small machine.
//!
//! What RabbitMQ 3.10 was seen to do (the first four on the raw protocol, with
//! `serena_tests::wire`; the last through this client):
//!
//! - After its own `channel.close` (404 on a passive declare) it keeps sending the deliveries it
//!   had already dispatched to that channel: with prefetch 500 and a consumer acking as it
//!   goes, 30 to 200 `basic.deliver` arrived after the `channel.close` in five runs (about
//!   700 deliveries in all: the 200 acked before the declare plus the window of 500). None
//!   came after our `close-ok` once the broker had it.
//! - A frame on a channel after our `close-ok` for the server's close (an ack, a publish)
//!   closes the whole connection with 504 CHANNEL_ERROR "expected 'channel.open'" (caused by
//!   the frame's method, 60.80 for an ack), a moment later.
//! - An ack or reject of a delivery tag the channel does not know closes that channel with 406
//!   PRECONDITION_FAILED "unknown delivery tag".
//! - Replies on a channel do not always come in the order of the requests: a `basic.cancel`
//!   followed at once by a `queue.declare` got the `declare-ok` first and the `cancel-ok`
//!   after it, in every one of six runs (the queue answers the cancel, the channel the
//!   declare).
//! - A return comes before its publish's confirm, but an unroutable publish's return can come
//!   before the confirm of a routable publish sent just ahead of it on the same route.

use std::fmt::Debug;
use std::time::Duration;

use serena::proto::BasicProperties;
use serena::{Channel, CloseScope, Connection, Error, Result, open_connection};
use serena_tests::{exclusive, passive, unique_name, within};
use tokio::time::{Instant, timeout};

#[path = "lifecycle/after_close.rs"]
mod after_close;
#[path = "lifecycle/cancellation.rs"]
mod cancellation;
#[path = "lifecycle/returns.rs"]
mod returns;
#[path = "lifecycle/server_close.rs"]
mod server_close;

/// The longest a whole test may take: past it, it counts as a hang.
const LIMIT: Duration = Duration::from_secs(10);
/// The longest one awaited event may take: a delivery, a confirm, a state to settle.
const STEP: Duration = Duration::from_secs(3);
/// How long to let frames already on their way (deliveries the broker sent after its close,
/// replies to a cancelled call) arrive before checking that nothing went wrong.
const SETTLE: Duration = Duration::from_millis(300);
/// How long a test that races a close may keep starting new rounds: a few milliseconds each
/// alone, many times that when the whole binary runs at once.
const RACE_FOR: Duration = Duration::from_secs(3);

/// Runs `body` in a connection of its own (named after its test), bounded by [`LIMIT`], and
/// returns its value. The connection ending (its scope's error) and any failed call fail the
/// test, saying which.
async fn scope<T>(name: &str, body: impl AsyncFnOnce(&Connection) -> Result<T>) -> T {
    let config = serena_tests::config(&unique_name(name));
    match timeout(LIMIT, open_connection(&config, body)).await {
        Err(_) => panic!("{name}: still running after {LIMIT:?}: a hang"),
        Ok(Err(e)) => panic!("{name}: the connection ended or a call failed: {e} ({e:?})"),
        Ok(Ok(v)) => v,
    }
}

/// Calls `probe` every 20 ms until `done` holds for its value, for at most [`STEP`]; past it
/// the test fails naming `what` and the last value seen.
async fn eventually<T: Debug>(
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T>,
    done: impl Fn(&T) -> bool,
) -> Result<T> {
    let deadline = Instant::now() + STEP;
    loop {
        let value = probe().await?;
        if done(&value) {
            return Ok(value);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {STEP:?}; last seen {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The name of a queue nobody declares: a passive declare of it makes the server close the
/// channel with 404.
fn missing() -> String {
    unique_name("missing")
}

/// Has the server close `ch` with 404 (a passive declare of a missing queue) and checks the
/// call fails with that close, scoped to the channel.
async fn server_closes(ch: &Channel) {
    let id = ch.id();
    let err = within(
        STEP,
        "the passive declare",
        ch.queue_declare(&missing(), passive()),
    )
    .await
    .expect_err("the queue does not exist");
    assert_channel_close(&err, id, 404);
}

/// `err` is the server's close of channel `id` with `reply_code`.
fn assert_channel_close(err: &Error, id: u16, reply_code: u16) {
    let close = err
        .unexpected_close()
        .unwrap_or_else(|| panic!("expected the server's close of channel {id}, got {err:?}"));
    assert_eq!(close.reply_code, reply_code, "{close:?}");
    assert_eq!(close.scope, CloseScope::Channel(id), "{close:?}");
}

/// (ready messages, consumers) of `queue`.
async fn counts(ch: &Channel, queue: &str) -> Result<(u32, u32)> {
    let ok = ch.queue_declare(queue, passive()).await?;
    Ok((ok.message_count, ok.consumer_count))
}

/// Publishes `count` messages of `size` bytes to `queue` and waits for their confirms.
async fn fill(ch: &Channel, queue: &str, count: usize, size: usize) -> Result<()> {
    let body = vec![b'x'; size];
    let mut confirms = Vec::with_capacity(count);
    for _ in 0..count {
        confirms.push(
            ch.basic_publish_with(
                "",
                queue,
                &body,
                BasicProperties::default(),
                Default::default(),
            )
            .await?,
        );
    }
    for c in confirms {
        within(STEP, "a confirm", c).await?;
    }
    Ok(())
}

/// The connection is alive and usable: no error, and a fresh channel can declare, publish
/// with a confirm, get the message back and close.
async fn assert_connection_works(conn: &Connection) -> Result<()> {
    assert!(
        conn.error().is_none(),
        "the connection ended: {:?}",
        conn.error()
    );
    let ch = within(STEP, "a new channel", conn.channel()).await?;
    let q = ch.queue_declare("", exclusive()).await?.queue;
    within(
        STEP,
        "a publish's confirm",
        ch.basic_publish("", &q, b"still here", BasicProperties::default()),
    )
    .await?;
    let m = ch
        .basic_get(&q, true)
        .await?
        .expect("the message just published");
    assert_eq!(&m.body[..], b"still here");
    ch.queue_delete(&q, false, false).await?;
    ch.close().await
}
