//! Publishes confirmed 64-byte messages with a window of unconfirmed publishes and prints the
//! rate: `cargo run --release --example publish_rate -- [count] [window] [channel|reliable]`
//! (defaults 100000, 1000, channel). `channel` publishes on one channel, awaiting the oldest
//! confirm when the window is full; `reliable` publishes through a `ReliablePublisher` whose
//! cap is the window, from as many tasks as the window, each awaiting its publish: the
//! price of reconnecting and republishing, next to the plain channel. The queue it fills is
//! deleted at the end.

#[path = "shared/logs.rs"]
mod logs;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serena::{
    Connection, ConnectionConfig, Error, PublishOptions, QueueDeclareOptions, ReliablePublisher,
    ReliablePublisherOptions, open_connection,
};
use tokio::task::JoinSet;

const BODY: [u8; 64] = [0x5a; 64];

/// One channel, at most `window` confirms outstanding.
async fn on_channel(
    conn: &Connection,
    queue: &str,
    count: usize,
    window: usize,
) -> Result<Duration, Error> {
    conn.open_channel(async |ch| {
        let started = Instant::now();
        let mut in_flight = VecDeque::with_capacity(window);
        for _ in 0..count {
            if in_flight.len() == window {
                in_flight.pop_front().expect("non-empty").await?;
            }
            let confirm = ch
                .basic_publish_with(
                    "",
                    queue,
                    BODY,
                    Default::default(),
                    PublishOptions::default(),
                )
                .await?;
            in_flight.push_back(confirm);
        }
        for c in in_flight {
            c.await?;
        }
        Ok(started.elapsed())
    })
    .await
}

/// A reliable publisher with a cap of `window`, fed by `window` tasks.
async fn reliable(
    config: &ConnectionConfig,
    queue: &str,
    count: usize,
    window: usize,
) -> Result<Duration, Error> {
    let options = ReliablePublisherOptions::default().with_max_messages(window);
    ReliablePublisher::scope(config, options, async |p| {
        p.connected().await?;
        let started = Instant::now();
        let left = Arc::new(AtomicUsize::new(count));
        let mut tasks = JoinSet::new();
        for _ in 0..window.min(count) {
            let (p, queue, left) = (p.clone(), queue.to_owned(), left.clone());
            tasks.spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    p.publish("", &queue, Bytes::from_static(&BODY), Default::default())
                        .await?;
                }
                Ok::<_, Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a publishing task")?;
        }
        Ok(started.elapsed())
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = ConnectionConfig::from_uri(&url)?;
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(100_000, |s| s.parse().expect("count"));
    let window: usize = args.next().map_or(1_000, |s| s.parse().expect("window"));
    let mode = args.next().unwrap_or_else(|| "channel".into());
    let queue = format!("serena-publish-rate-{}", std::process::id());

    open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            // Not auto-delete: the reliable publisher fills it from another connection. It
            // expires a minute after a run that died before deleting it.
            let mut arguments = serena::proto::FieldTable::new();
            arguments.insert("x-expires", 60_000i32);
            ch.queue_declare(&queue, QueueDeclareOptions::default().with_arguments(arguments))
                .await?;
            let elapsed = match mode.as_str() {
                "channel" => on_channel(conn, &queue, count, window).await?,
                "reliable" => reliable(&config, &queue, count, window).await?,
                other => return Err(Error::Config(format!("unknown mode {other:?}: channel or reliable"))),
            };
            let depth = ch
                .queue_declare(&queue, QueueDeclareOptions::default().with_passive(true))
                .await?
                .message_count;
            ch.queue_delete(&queue, false, false).await?;
            assert_eq!(
                depth as usize, count,
                "every confirmed message is in the queue"
            );
            println!(
                "{mode}: {count} confirmed publishes of 64 B, window {window}: {:.3} s, {:.0} msg/s",
                elapsed.as_secs_f64(),
                count as f64 / elapsed.as_secs_f64()
            );
            Ok(())
        })
        .await
    })
    .await
}
