//! Shared helpers for the integration tests: where the broker is, unique names, the broker's
//! operator tool ([`rabbitmqctl`]), a scripted fake server ([`fake_peer`]) and a blocking
//! connection speaking the raw protocol through `serena::proto` ([`wire`]) and a fault-injecting
//! TCP proxy ([`proxy`]).

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
