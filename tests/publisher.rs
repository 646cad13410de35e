//! The reliable publisher (`serena::ReliablePublisher`) against the real broker, through the
//! fault proxy ([`serena_tests::proxy`]) on the default node: cuts (whole and mid-frame),
//! stalls, an unreachable broker, an operator's forced close, messages the broker refuses,
//! and futures dropped after their first poll. Broker stops, memory alarms and a rolling
//! restart run on the test cluster instead (tests/cluster/reliable.rs), never here.
//!
//! Each case publishes numbered messages (the id in decimal as the body) into a queue of its
//! own and, when the publishes returned, takes every message out of the queue on a direct
//! connection: every confirmed id must be there (0 lost); ids found twice are the
//! duplicates that at-least-once allows, counted and printed (`--nocapture`).

#[path = "publisher/faults.rs"]
mod faults;
#[path = "publisher/limits.rs"]
mod limits;

use std::collections::BTreeMap;
use std::time::Duration;

use serena::proto::FieldTable;
use serena::{Channel, QueueDeclareOptions};

/// The longest any case may take.
const LIMIT: Duration = Duration::from_secs(90);

/// Runs `body` on a channel of a connection straight to the broker; any failure fails the
/// test.
async fn on_broker<T>(body: impl AsyncFnOnce(&Channel) -> serena::Result<T>) -> T {
    serena_tests::on_broker("serena-tests publisher direct", LIMIT, body).await
}

/// Declares `queue`: not exclusive (the publisher's connections come and go), gone a minute
/// after a failed run left it unused.
async fn declare(queue: &str) {
    let mut arguments = FieldTable::new();
    arguments.insert("x-expires", 60_000i32);
    let options = QueueDeclareOptions::default().with_arguments(arguments);
    on_broker(async |ch| ch.queue_declare(queue, options).await).await;
}

/// Takes every message out of `queue` and deletes it; how many times each id was there.
async fn drain(queue: &str) -> BTreeMap<u64, u32> {
    on_broker(async |ch| {
        let mut seen = BTreeMap::new();
        while let Some(m) = ch.basic_get(queue, true).await? {
            let id: u64 = std::str::from_utf8(&m.body)
                .expect("utf-8")
                .parse()
                .expect("a numbered body");
            *seen.entry(id).or_insert(0u32) += 1;
        }
        ch.queue_delete(queue, false, false).await?;
        Ok(seen)
    })
    .await
}

/// Checks that every id in `confirmed` is in `seen`; returns the duplicates (copies beyond
/// the first).
fn check_none_lost(confirmed: &[u64], seen: &BTreeMap<u64, u32>) -> u64 {
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed ids are not in the queue: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    seen.values().map(|n| u64::from(n - 1)).sum()
}
