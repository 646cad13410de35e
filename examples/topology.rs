//! Applies the repository's `topology.toml` (or the file given as the first argument), verifies
//! it, then sends one order through it and reads it back from the work queue.
//!
//! ```sh
//! cargo run --example topology                 # the example topology on the local broker
//! SERENA_URL=amqp://app@rabbit:5672/prod SERENA_PASSWORD=... cargo run --example topology
//! ```

#[path = "shared/logs.rs"]
mod logs;

use std::error::Error;
use std::path::PathBuf;

use serena::Connection;
use serena::proto::BasicProperties;
use serena::topology::{ConnectionSettingsExt, Destination, Topology, TopologyExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Log to stderr, filtered by RUST_LOG (without it: warnings and errors).
    logs::init(tracing_subscriber::filter::LevelFilter::WARN);
    let path = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topology.toml"),
        PathBuf::from,
    );
    // Every problem at once, as file:line:column: entity: message.
    let topology = Topology::load(&path)?;
    // The file's [connection], overridden by SERENA_URL, SERENA_PASSWORD, ...
    let config = topology.connection.resolve()?;
    let conn = Connection::open(&config).await?;

    let applied = topology.apply(&conn).await;
    println!("apply {}:\n{applied}\n", path.display());
    let verified = topology.verify(&conn).await;
    println!("verify:\n{verified}\n");
    if !applied.is_ok() || !verified.is_ok() {
        conn.close().await?;
        return Err("the broker does not match the topology".into());
    }

    // Send an order through the first exchange to the first queue bound to it.
    let Some(binding) = topology
        .bindings
        .iter()
        .find(|b| matches!(b.destination, Destination::Queue(_)))
    else {
        conn.close().await?;
        return Ok(());
    };
    let Destination::Queue(queue) = &binding.destination else {
        unreachable!("found a queue binding above")
    };
    let key = binding.routing_key.replace(['*', '#'], "created");
    let ch = conn.channel().await?;
    let properties = BasicProperties::default()
        .with_content_type("application/json")
        .with_persistent(true);
    ch.basic_publish(&binding.source, &key, br#"{"order":42}"#, properties)
        .await?;
    println!(
        "published an order to {:?} with key {key:?}",
        binding.source
    );
    if let Some(message) = ch.basic_get(queue, false).await? {
        println!(
            "{queue}: {} (routing key {:?})",
            String::from_utf8_lossy(&message.body),
            message.routing_key
        );
        message.ack()?;
    }
    ch.close().await?;
    conn.close().await?;
    Ok(())
}
