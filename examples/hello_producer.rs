//! Hello world, the producer: declares the `hello` queue and publishes messages to it, each
//! confirmed by the broker.
//!
//! `cargo run --example hello_producer -- [count]` (default 1), against the broker in
//! `SERENA_URL` or `amqp://guest:guest@127.0.0.1:5672/%2f`.

#[path = "shared/logs.rs"]
mod logs;

use serena::proto::BasicProperties;
use serena::{ConnectionConfig, Error, open_connection};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = ConnectionConfig::from_uri(&url)?;
    let count: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("count must be a number"))
        .unwrap_or(1);

    open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare("hello", Default::default()).await?;
            for i in 1..=count {
                let body = format!("Hello, world! ({i})");
                ch.basic_publish(
                    "",
                    "hello",
                    &body,
                    BasicProperties::default().with_content_type("text/plain"),
                )
                .await?;
                println!("sent and confirmed: {body}");
            }
            Ok(())
        })
        .await
    })
    .await
}
