//! A fixed amount of serena work for instruction counting: `count` (default 20,000) 64-byte
//! messages published fire-and-forget to an exclusive queue, then consumed with prefetch 500
//! and one ack each. Run it under callgrind, whose instruction counts do not depend on what
//! else the machine is doing:
//!
//! ```sh
//! cargo build --release --manifest-path bench/Cargo.toml --bin profile_run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out bench/target/release/profile_run 20000
//! callgrind_annotate cg.out | head -40
//! ```

use std::time::Duration;

use serena::proto::BasicProperties;
use serena::{ConnectionConfig, ConsumeOptions, QueueDeclareOptions, open_connection};

#[tokio::main]
async fn main() -> serena::Result<()> {
    let count: u32 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| serena::Error::Config(format!("not a count: {n}")))?,
        None => 20_000,
    };
    let config = ConnectionConfig::from_uri(
        &std::env::var("SERENA_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    )?;
    open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        let q = ch
            .queue_declare("", QueueDeclareOptions::default().with_exclusive(true))
            .await?
            .queue;
        conn.open_unconfirmed_channel(async |ch| {
            for _ in 0..count {
                ch.basic_publish("", &q, [7u8; 64], BasicProperties::default())
                    .await?;
            }
            Ok::<_, serena::Error>(())
        })
        .await?;
        // The queue holds them all before the consume starts.
        let passive = QueueDeclareOptions::default().with_passive(true);
        while ch.queue_declare(&q, passive.clone()).await?.message_count < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ch.basic_qos(500, false).await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        for _ in 0..count {
            let delivery = consumer
                .next()
                .await
                .ok_or(serena::Error::Closed("consumer"))??;
            delivery.ack()?;
        }
        eprintln!("published, consumed and acked {count} messages");
        Ok(())
    })
    .await
}
