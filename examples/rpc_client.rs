//! Request/reply, the client: asks `rpc_server` for quotes over direct reply-to, all in flight
//! at once on one channel, and prints each answer.
//!
//! `cargo run --example rpc_client -- [count]` (default 5) with `rpc_server` running. Broker
//! from `SERENA_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.

#[path = "shared/logs.rs"]
mod logs;

use std::time::{Duration, Instant};

use serena::{ConnectionConfig, Error, RpcOptions, open_connection};

#[derive(Debug, serde::Serialize)]
struct Quote {
    sku: &'static str,
    quantity: u32,
}

#[derive(Debug, serde::Deserialize)]
struct Price {
    sku: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = ConnectionConfig::from_uri(&url)?;
    let count: u32 = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("count must be a number"));
    let skus = ["A-1", "B-2", "Z-9"];
    open_connection(&config, async |conn| {
        let options = RpcOptions::new().with_timeout(Duration::from_secs(5));
        conn.open_rpc_with(options, async |rpc| {
            let started = Instant::now();
            // Every call is in flight at once; each resolves with its own reply.
            let mut calls = tokio::task::JoinSet::new();
            for n in 0..count {
                let rpc = rpc.clone();
                let quote = Quote {
                    sku: skus[n as usize % skus.len()],
                    quantity: n + 1,
                };
                calls.spawn(async move {
                    let answer = rpc
                        .call::<_, Result<Price, String>>("rpc.prices", &quote)
                        .await;
                    (quote, answer)
                });
            }
            while let Some(done) = calls.join_next().await {
                let (quote, answer) = done.expect("a call's task");
                match answer {
                    Ok(Ok(price)) => println!(
                        "{} x{}: {} cents",
                        price.sku, quote.quantity, price.total_cents
                    ),
                    Ok(Err(refused)) => {
                        println!("{} x{}: refused: {refused}", quote.sku, quote.quantity)
                    }
                    Err(Error::Timeout(after)) => {
                        println!("{quote:?}: no answer within {after:?}; is rpc_server running?")
                    }
                    Err(Error::Returned(_)) => {
                        println!("{quote:?}: no queue rpc.prices; start rpc_server first")
                    }
                    Err(e) => return Err(e),
                }
            }
            println!("{count} calls in {:?}", started.elapsed());
            Ok(())
        })
        .await
    })
    .await
}
