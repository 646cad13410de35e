//! Hello world, the consumer: receives messages from the `hello` queue and acknowledges each.
//!
//! `cargo run --example hello_consumer -- [count]` stops after `count` messages, or runs until
//! Ctrl-C without one. Broker from `SERENA_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.

#[path = "shared/logs.rs"]
mod logs;

use serena::{ConnectionConfig, Error, open_connection};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = ConnectionConfig::from_uri(&url)?;
    let limit: Option<u64> = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("count must be a number"));

    open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare("hello", Default::default()).await?;
            let mut consumer = ch.basic_consume("hello", Default::default()).await?;
            let mut received = 0;
            loop {
                let delivery = tokio::select! {
                    d = consumer.next() => match d {
                        Some(d) => d?,
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                };
                println!("received: {}", String::from_utf8_lossy(&delivery.body));
                delivery.ack()?;
                received += 1;
                if limit == Some(received) {
                    break;
                }
            }
            println!("{received} message(s) received");
            Ok(())
        })
        .await
    })
    .await
}
