//! Shared helpers for the integration tests: where the broker is and a configuration for it,
//! unique names, bounded waits, the queue options most tests declare with, the broker's
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
use std::time::Duration;

use serena::{ConnectionConfig, QueueDeclareOptions};

/// Address of the broker the tests use; `SERENA_TEST_BROKER` overrides it.
pub fn broker_addr() -> String {
    std::env::var("SERENA_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:5672".to_owned())
}

/// A configuration for the broker the tests use ([`broker_addr`]) as guest, the connection
/// named `name`: the name the management UI shows and [`rabbitmqctl`] finds it by, so a test
/// that closes it by name passes a [`unique_name`].
pub fn config(name: &str) -> ConnectionConfig {
    let addr = broker_addr();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    ConnectionConfig::default()
        .with_host(host)
        .with_port(port.parse().expect("port"))
        .with_connection_name(Some(name.to_owned()))
}

/// Runs `body` on a channel of a connection straight to the broker, named `name`, for a test's
/// setup or checks; a failure, or no answer within `limit`, fails the test.
pub async fn on_broker<T>(
    name: &str,
    limit: Duration,
    body: impl AsyncFnOnce(&serena::Channel) -> serena::Result<T>,
) -> T {
    let config = config(name);
    let checked = serena::open_connection(&config, async |conn| conn.open_channel(body).await);
    within(limit, "the direct connection", checked)
        .await
        .expect("setup or check on the direct connection")
}

/// Awaits `f` for at most `limit`; a timeout fails the test naming `what`.
pub async fn within<F: IntoFuture>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

/// A queue only its connection uses, gone with it (even when the test fails).
pub fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_exclusive(true)
}

/// A passive declare: checks that the queue exists and reads its counts, changes nothing.
pub fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_passive(true)
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
