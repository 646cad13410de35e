//! Helpers of the topology tests: the example topology under unique names, passive checks, and
//! a guard that deletes what a test created even when it fails.

use std::collections::HashMap;
use std::path::Path;

use serena::topology::{ApplyReport, Destination, Entity, EntityName, Topology, TopologyExt};
use serena::{Connection, ConnectionConfig, QueueDeclareOptions, UnexpectedCloseError};

/// The test broker; every connection of these tests has the same name.
pub(crate) fn config() -> ConnectionConfig {
    serena_tests::config("serena-tests topology")
}

/// The repository's example topology with every name prefixed by `prefix`.
pub(crate) fn example(prefix: &str) -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml");
    rename(Topology::load(path).unwrap(), prefix)
}

pub(crate) fn rename(mut t: Topology, prefix: &str) -> Topology {
    let new = |n: &str| format!("{prefix}.{n}");
    let exchanges: HashMap<String, String> = t
        .exchanges
        .iter()
        .map(|x| (x.name.clone(), new(&x.name)))
        .collect();
    let queues: HashMap<String, String> = t
        .queues
        .iter()
        .map(|q| (q.name.clone(), new(&q.name)))
        .collect();
    let x = |n: &mut String| {
        if let Some(r) = exchanges.get(n.as_str()) {
            *n = r.clone();
        }
    };
    let q = |n: &mut String| {
        if let Some(r) = queues.get(n.as_str()) {
            *n = r.clone();
        }
    };
    for e in &mut t.exchanges {
        x(&mut e.name);
        e.alternate_exchange.as_mut().map(x);
    }
    for queue in &mut t.queues {
        q(&mut queue.name);
        queue.dead_letter_exchange.as_mut().map(x);
        queue.dead_letter_routing_key.as_mut().map(q);
        if let Some(retry) = &mut queue.retry {
            retry.park.as_mut().map(q);
        }
    }
    for b in &mut t.bindings {
        x(&mut b.source);
        match &mut b.destination {
            Destination::Queue(n) => q(n),
            Destination::Exchange(n) => x(n),
        }
    }
    t.validate().unwrap();
    t
}

pub(crate) async fn queue_exists(conn: &Connection, name: &str) -> bool {
    let ch = conn.channel().await.unwrap();
    let passive = QueueDeclareOptions::default().with_passive(true);
    match ch.queue_declare(name, passive).await {
        Ok(_) => {
            ch.close().await.unwrap();
            true
        }
        Err(e) if e.reply_code() == Some(UnexpectedCloseError::NOT_FOUND) => false,
        Err(e) => panic!("passive declare of {name}: {e}"),
    }
}

pub(crate) async fn message_count(conn: &Connection, name: &str) -> u32 {
    let ch = conn.channel().await.unwrap();
    let passive = QueueDeclareOptions::default().with_passive(true);
    let ok = ch.queue_declare(name, passive).await.unwrap();
    ch.close().await.unwrap();
    ok.message_count
}

pub(crate) async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    let ch = conn.channel().await.unwrap();
    let passive = serena::ExchangeDeclareOptions::default().with_passive(true);
    match ch.exchange_declare(name, "direct", passive).await {
        Ok(()) => {
            ch.close().await.unwrap();
            true
        }
        Err(e) if e.reply_code() == Some(UnexpectedCloseError::NOT_FOUND) => false,
        Err(e) => panic!("passive declare of {name}: {e}"),
    }
}

/// Deletes every queue and exchange of its topology when dropped, even when a test fails.
pub(crate) struct Cleanup(pub(crate) Topology);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let t = self.0.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cleanup(&t));
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleanup failed");
        }
    }
}

/// Deletes every queue and exchange of `t`, the queues its retry schedules add included,
/// whatever state they are in.
pub(crate) async fn cleanup(t: &Topology) {
    let conn = Connection::open(&config()).await.unwrap();
    for q in t.queues.iter().chain(&t.retry_queues()) {
        let ch = conn.channel().await.unwrap();
        let _ = ch.queue_delete(&q.name, false, false).await;
    }
    // The broker's own amq.* exchanges are never touched.
    for x in t.exchanges.iter().filter(|x| !x.name.starts_with("amq.")) {
        let ch = conn.channel().await.unwrap();
        let _ = ch.exchange_delete(&x.name, false).await;
    }
    conn.close().await.unwrap();
}

pub(crate) async fn apply(t: &Topology) -> ApplyReport {
    let conn = Connection::open(&config()).await.unwrap();
    let report = t.apply(&conn).await;
    conn.close().await.unwrap();
    report
}

pub(crate) fn queue(name: &str) -> Entity {
    Entity::Queue(EntityName::Named(name.into()))
}

pub(crate) fn exchange(name: &str) -> Entity {
    Entity::Exchange(EntityName::Named(name.into()))
}
