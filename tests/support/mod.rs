//! Shared helpers for the integration tests: where the broker is, unique names, the broker's
//! operator tool ([`rabbitmqctl`]), a scripted fake server ([`fake_peer`]) and a blocking
//! connection speaking the raw protocol through `serena::proto` ([`wire`]) and a fault-injecting
//! TCP proxy ([`proxy`]).

pub mod cancel;
pub mod fake_peer;
pub mod handlers;
pub mod proxy;
pub mod rabbitmqctl;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

/// Address of the broker the tests use; `SERENA_TEST_BROKER` overrides it.
pub fn broker_addr() -> String {
    std::env::var("SERENA_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:5672".to_owned())
}

/// A name no other test (or run) uses: `prefix` plus the process id and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("serena-test-{prefix}-{}-{n}", std::process::id())
}

/// Publishes one message per id in `ids` to `exchange` with `routing_key`, the id in decimal as
/// its body, keeping at most `window` publishes awaiting their confirms; returns once every
/// publish is confirmed, or with the first error.
pub async fn publish_ids(
    ch: &serena::Channel,
    exchange: &str,
    routing_key: &str,
    ids: impl IntoIterator<Item = u64>,
    window: usize,
) -> Result<(), serena::Error> {
    let mut confirms = Vec::new();
    for id in ids {
        confirms.push(
            ch.basic_publish_with(
                exchange,
                routing_key,
                id.to_string(),
                Default::default(),
                serena::PublishOptions::default(),
            )
            .await?,
        );
        if confirms.len() >= window {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms {
        c.await?;
    }
    Ok(())
}
