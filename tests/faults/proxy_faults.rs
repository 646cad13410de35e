//! Faults injected by a TCP proxy ([`serena_tests::proxy`]) between serena and the real
//! broker, each checked for what the user sees and how soon serena notices:
//!
//! - [`cuts`]: the connection cut in the middle of a frame, while a consumer receives
//!   48 KiB messages and while confirmed publishes stream out: the scope ends with the socket
//!   error, pending confirmations fail instead of hanging, the user's code is cancelled, and
//!   nothing acked or confirmed is lost.
//! - [`stalls`]: traffic stalled (sockets open, nothing moving) from the server, or both
//!   ways, with 1 s heartbeats: `Error::HeartbeatTimeout` within two intervals, also while
//!   64 KiB publishes stream out; without heartbeats, `PublishOptions::timeout` still bounds
//!   a publish.
//! - [`latency`]: 50 ms added each way: confirms, calls and heartbeats all still work and
//!   nothing times out wrongly.
//! - [`supervisor`]: a supervisor behind the proxy survives a cut, a mid-frame cut and a stall,
//!   restarting by itself each time, and consumes every message.
//!
//! ```text
//!   test ── levers ──► Proxy ◄──TCP──► RabbitMQ 127.0.0.1:5672
//!                        ▲                  ▲
//!          serena (under test)      direct connection (setup, checks)
//! ```
//!
//! Every wait is bounded, so a hang is a failure; measured times are printed (run with
//! `--nocapture` to see them).

use std::collections::BTreeSet;
use std::time::Duration;

use serena::{Channel, Error, QueueDeclareOptions};
use tokio::time::timeout;

use serena_tests::cancel::Cancelled;

#[path = "proxy_faults/cuts.rs"]
mod cuts;
#[path = "proxy_faults/latency.rs"]
mod latency;
#[path = "proxy_faults/stalls.rs"]
mod stalls;
#[path = "proxy_faults/supervisor.rs"]
mod supervisor;

/// The longest any single step may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` on a channel of a connection straight to the broker; any failure fails the
/// test.
async fn on_broker<T>(body: impl AsyncFnOnce(&Channel) -> serena::Result<T>) -> T {
    serena_tests::on_broker("serena-tests proxy_faults direct", LIMIT, body).await
}

/// Declares `queue`: not exclusive (it outlives the connection under test), not durable.
async fn declare(queue: &str) {
    on_broker(async |ch| {
        ch.queue_declare(queue, QueueDeclareOptions::default())
            .await
    })
    .await;
}

/// Deletes `queue`.
async fn delete(queue: &str) {
    on_broker(async |ch| ch.queue_delete(queue, false, false).await).await;
}

/// A body of `size` bytes (at least 4) starting with `id`.
fn numbered(id: u32, size: usize) -> Vec<u8> {
    let mut body = vec![0x5A; size.max(4)];
    body[..4].copy_from_slice(&id.to_be_bytes());
    body
}

/// The id a [`numbered`] body starts with.
fn id_of(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().expect("a numbered body"))
}

/// Publishes numbered messages `ids` of `size` bytes to `queue`, all confirmed.
async fn fill(queue: &str, ids: std::ops::Range<u32>, size: usize) {
    on_broker(async |ch| {
        let mut pending = Vec::new();
        for id in ids {
            pending.push(
                ch.basic_publish_with(
                    "",
                    queue,
                    numbered(id, size),
                    Default::default(),
                    Default::default(),
                )
                .await?,
            );
            if pending.len() == 256 {
                for c in pending.drain(..) {
                    c.await?;
                }
            }
        }
        for c in pending {
            c.await?;
        }
        Ok(())
    })
    .await;
}

/// Waits until `queue` has no consumer left (the broker has dealt with a dead connection
/// and requeued what it had unacked), then takes every message out of it; returns their ids.
async fn drain(queue: &str) -> Vec<u32> {
    on_broker(async |ch| {
        let passive = QueueDeclareOptions::default().with_passive(true);
        timeout(Duration::from_secs(10), async {
            while ch
                .queue_declare(queue, passive.clone())
                .await?
                .consumer_count
                > 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, Error>(())
        })
        .await
        .expect("the broker drops the dead connection's consumer")?;
        let mut ids = Vec::new();
        while let Some(m) = ch.basic_get(queue, true).await? {
            ids.push(id_of(&m.body));
        }
        Ok(ids)
    })
    .await
}

/// Asserts `err` is what a closed socket looks like to the user: [`Error::Io`] with the end
/// of the stream or a reset; returns its kind.
fn assert_socket_closed(err: &Error) -> std::io::ErrorKind {
    match err {
        Error::Io(e) => {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ),
                "a cut socket reads as its end or a reset, got {e:?}"
            );
            e.kind()
        }
        other => panic!("expected Error::Io for a cut connection, got {other:?}"),
    }
}

/// Ids in `expected` that `got` lacks.
fn missing(expected: impl IntoIterator<Item = u32>, got: &BTreeSet<u32>) -> Vec<u32> {
    expected
        .into_iter()
        .filter(|id| !got.contains(id))
        .collect()
}
