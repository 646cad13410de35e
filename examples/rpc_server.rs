//! Request/reply, the server: a `#[consumer]` handler that answers price quotes on the
//! `rpc.prices` queue with `Reply<T>`.
//!
//! `cargo run --example rpc_server` runs until Ctrl-C or SIGTERM; then
//! `cargo run --example rpc_client -- 20` asks it for 20 quotes at once (or
//! `serena rpc rpc.prices '{"sku":"A-1","quantity":3}'`). Broker from `SERENA_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`.

#[path = "shared/logs.rs"]
mod logs;

use serena::worker::{Json, Reply, Supervisor};
use serena::{ConnectionConfig, QueueDeclareOptions, consumer};

#[derive(Debug, serde::Deserialize)]
struct Quote {
    sku: String,
    quantity: u32,
}

#[derive(Debug, serde::Serialize)]
struct Price {
    sku: String,
    total_cents: u64,
}

/// Prices a quote. An unknown SKU is answered with an error value, so the caller learns why
/// at once; a handler's `Err` would send nothing and leave the caller to its timeout.
#[consumer(queue = "rpc.prices", concurrency = 8)]
async fn price(Json(quote): Json<Quote>) -> Reply<Result<Price, String>> {
    let unit_cents = match quote.sku.as_str() {
        "A-1" => 1_250,
        "B-2" => 499,
        other => return Reply(Err(format!("unknown sku {other:?}"))),
    };
    Reply(Ok(Price {
        total_cents: unit_cents * u64::from(quote.quantity),
        sku: quote.sku,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG=info shows the supervisor's connections; a reply that could not be sent is
    // logged at ERROR, a request without reply_to at WARN.
    logs::init(tracing_subscriber::filter::LevelFilter::INFO);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    Supervisor::new(ConnectionConfig::from_uri(&url)?)
        // Requests wait in the queue a minute at most: a caller has given up by then.
        .setup(|conn| async move {
            let arguments = serena::proto::FieldTable::new().with("x-message-ttl", 60_000_i32);
            let options = QueueDeclareOptions::default().with_arguments(arguments);
            conn.open_channel(async |ch| ch.queue_declare("rpc.prices", options).await)
                .await
                .map(drop)
        })
        .consumer(price)
        .run()
        .await?;
    Ok(())
}
