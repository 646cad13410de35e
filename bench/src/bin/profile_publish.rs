//! A fixed amount of confirmed publishing for instruction counting: `count` (default 20,000)
//! 64-byte messages published to an exclusive queue with a window of `window` (default 256)
//! confirms, on a plain
//! confirmed channel (`channel`) or through a `ReliablePublisher` with `publish_queued`
//! (`reliable`), as the comparison program's publish_confirm and publish_reliable do. Under
//! callgrind, whose counts do not depend on what else the machine is doing, the difference is
//! what the reliable publisher costs per message:
//!
//! ```sh
//! cargo build --release --manifest-path bench/Cargo.toml --bin profile_publish
//! valgrind --tool=callgrind --callgrind-out-file=cg.ch bench/target/release/profile_publish channel
//! valgrind --tool=callgrind --callgrind-out-file=cg.rp bench/target/release/profile_publish reliable
//! ```

use std::collections::VecDeque;

use serena::proto::BasicProperties;
use serena::{
    ConnectionConfig, Error, PublishOptions, QueueDeclareOptions, ReliablePublisher, ReliablePublisherOptions,
    open_connection,
};


#[tokio::main]
async fn main() -> serena::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "channel".into());
    let count: u64 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| Error::Config(format!("not a count: {n}")))?,
        None => 20_000,
    };
    let window: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| Error::Config(format!("not a window: {n}")))?,
        None => 256,
    };
    let config = ConnectionConfig::from_uri(
        &std::env::var("SERENA_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    )?;
    let body = [7u8; 64];
    open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        let q = ch
            .queue_declare("", QueueDeclareOptions::default().with_exclusive(true))
            .await?
            .queue;
        match mode.as_str() {
            "channel" => {
                let options = PublishOptions::default().with_mandatory(false);
                let mut pending = VecDeque::with_capacity(window);
                for _ in 0..count {
                    if pending.len() == window {
                        pending.pop_front().expect("window is full").await?;
                    }
                    let c = ch
                        .basic_publish_with("", &q, &body[..], BasicProperties::default(), options)
                        .await?;
                    pending.push_back(c);
                }
                for c in pending {
                    c.await?;
                }
            }
            "reliable" => {
                let options = ReliablePublisherOptions::default()
                    .with_mandatory(false)
                    .with_max_messages(window);
                ReliablePublisher::scope(&config, options, async |rp| -> serena::Result<()> {
                    let mut pending = VecDeque::with_capacity(window);
                    for _ in 0..count {
                        if pending.len() == window {
                            pending.pop_front().expect("window is full").await?;
                        }
                        let c = rp
                            .publish_queued("", &q, &body[..], BasicProperties::default())
                            .await?;
                        pending.push_back(c);
                    }
                    for c in pending {
                        c.await?;
                    }
                    Ok(())
                })
                .await?;
            }
            other => return Err(Error::Config(format!("mode is channel or reliable, not {other}"))),
        }
        let passive = QueueDeclareOptions::default().with_passive(true);
        let held = ch.queue_declare(&q, passive).await?.message_count;
        eprintln!("{mode}: published {count}, the queue holds {held}");
        Ok(())
    })
    .await
}
