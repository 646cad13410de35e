//! Replaying a stream: a `#[consumer]` that reads `audit.log` (a stream queue in
//! `topology.toml`) from its first message, the way an audit or a rebuilt read model would.
//!
//! ```text
//! cargo run --example audit_replay            # publish 20 audit events, replay the whole log
//! cargo run --example audit_replay -- 100     # 100 events
//! ```
//!
//! The events go to the `orders` exchange with the key `order.audit.replay`: `order.#` routes
//! them to the `audit` exchange and on to the stream (`order.*` does not match, so no order is
//! processed). The consumer starts at `offset = "first"`: a stream keeps what it delivered, and
//! RabbitMQ keeps no position for an AMQP 0-9-1 consumer, so it reads every event still in the
//! stream (those of earlier runs too, up to the stream's `max_age`), this run's last, and does
//! the same again after any restart. A stream consumer needs a prefetch limit; `prefetch = 100`
//! gives it one.

#[path = "shared/logs.rs"]
mod logs;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serena::proto::{BasicProperties, FieldTable};
use serena::topology::{ConnectionSettingsExt, Topology};
use serena::worker::{Headers, State, Supervisor};
use serena::{Error, consumer, open_connection};
use tokio::sync::Notify;

/// What the replay saw.
#[derive(Debug, Default)]
struct Replay {
    run: String,
    this_run: AtomicU64,
    earlier: AtomicU64,
    changed: Notify,
}

/// Every event in the stream, oldest first; this run's are told apart by their `run` header.
#[consumer(
    queue = "audit.log",
    offset = "first",
    prefetch = 100,
    topology = "../topology.toml"
)]
async fn read_audit_log(Headers(headers): Headers, State(replay): State<Arc<Replay>>) {
    let run = headers.get("run").and_then(|v| v.as_str());
    if run == Some(replay.run.as_str()) {
        replay.this_run.fetch_add(1, Ordering::Relaxed);
    } else {
        replay.earlier.fetch_add(1, Ordering::Relaxed);
    }
    replay.changed.notify_one();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let events: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| "the argument is a number of events")?,
        None => 20,
    };
    let topology = Topology::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))?;
    let config = topology.connection.resolve()?;
    let replay = Arc::new(Replay {
        run: format!(
            "{}",
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
        ),
        ..Replay::default()
    });
    // The supervisor applies the topology (the stream included) before it consumes; publish
    // after that, so the events have a stream to land in.
    let supervisor = Supervisor::from_topology(topology)?
        .consumer(read_audit_log)
        .state(replay.clone());
    let mut handle = supervisor.handle();
    let done = Arc::new(Notify::new());
    let run = tokio::spawn({
        let done = done.clone();
        supervisor.run_until(async move { done.notified().await })
    });
    if tokio::time::timeout(Duration::from_secs(30), handle.ready())
        .await
        .is_err()
    {
        done.notify_one();
        return Err(format!("not ready within 30 s: {:?}", handle.readiness()).into());
    }
    publish(&config, &replay.run, events).await?;

    let replayed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let notified = replay.changed.notified();
            if replay.this_run.load(Ordering::Relaxed) >= events {
                break;
            }
            notified.await;
        }
    })
    .await;
    done.notify_one();
    run.await??;
    replayed.map_err(|_| "this run's events did not all come back within 60 s")?;
    println!(
        "replayed audit.log from the first message: {} events of earlier runs, then this run's {}",
        replay.earlier.load(Ordering::Relaxed),
        replay.this_run.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Publishes `events` audit events tagged with `run`, with confirms.
async fn publish(config: &serena::ConnectionConfig, run: &str, events: u64) -> Result<(), Error> {
    open_connection(config, async |conn| {
        conn.open_channel(async |ch| {
            for id in 1..=events {
                let properties = BasicProperties::default()
                    .with_content_type("application/json")
                    .with_headers(FieldTable::new().with("run", run));
                ch.basic_publish(
                    "orders",
                    "order.audit.replay",
                    format!("{{\"event\":{id}}}"),
                    properties,
                )
                .await?;
            }
            Ok(())
        })
        .await
    })
    .await
}
