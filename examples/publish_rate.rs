//! Publishes confirmed 64-byte messages on one channel with a window of unconfirmed publishes
//! and prints the rate: `cargo run --release --example publish_rate -- [count] [window]`
//! (defaults 100000 and 1000). The queue it fills is deleted at the end.

#[path = "shared/logs.rs"]
mod logs;

use std::collections::VecDeque;
use std::time::Instant;

use serena::{ConnectionConfig, Error, PublishOptions, QueueDeclareOptions, open_connection};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = ConnectionConfig::from_uri(&url)?;
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(100_000, |s| s.parse().expect("count"));
    let window: usize = args.next().map_or(1_000, |s| s.parse().expect("window"));
    let queue = format!("serena-publish-rate-{}", std::process::id());

    open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(
                &queue,
                QueueDeclareOptions::default().with_auto_delete(true),
            )
            .await?;
            let body = [0x5au8; 64];
            let started = Instant::now();
            let mut in_flight = VecDeque::with_capacity(window);
            for _ in 0..count {
                if in_flight.len() == window {
                    in_flight.pop_front().expect("non-empty").await?;
                }
                let confirm = ch
                    .basic_publish_with(
                        "",
                        &queue,
                        body,
                        Default::default(),
                        PublishOptions::default(),
                    )
                    .await?;
                in_flight.push_back(confirm);
            }
            for c in in_flight {
                c.await?;
            }
            let elapsed = started.elapsed();
            let depth = ch
                .queue_declare(&queue, QueueDeclareOptions::default().with_passive(true))
                .await?
                .message_count;
            assert_eq!(
                depth as usize, count,
                "every confirmed message is in the queue"
            );
            ch.queue_delete(&queue, false, false).await?;
            println!(
                "{count} confirmed publishes of 64 B, window {window}: {:.3} s, {:.0} msg/s",
                elapsed.as_secs_f64(),
                count as f64 / elapsed.as_secs_f64()
            );
            Ok(())
        })
        .await
    })
    .await
}
