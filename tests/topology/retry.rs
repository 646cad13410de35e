//! Retry schedules on the broker: apply declares each delay queue and the park queue right
//! after their work queue, classic and quorum alike; a message sent to a delay queue through
//! the default exchange (as the worker sends a failed one) comes back to the work queue after
//! its delay, with `x-death` naming the delay queue; applying again changes nothing; verify
//! checks them; a delay queue that exists with another TTL is a 406 naming `x-message-ttl`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::topology::{ApplyStatus, Topology, TopologyExt, VerifyStatus};
use serena::{Connection, ConsumeOptions, Consumer, QueueDeclareOptions, UnexpectedCloseError};
use serena_tests::unique_name;

use super::helpers::{Cleanup, apply, config, queue, queue_exists};

/// A classic work queue parking in its default park queue, and a quorum one parking in a queue
/// it lists, all named after `p`.
fn retry_topology(p: &str) -> Topology {
    let text = format!(
        r#"
[[queues]]
name = "{p}.classic"
retry = {{ delays = ["500ms", "2s", "500ms"] }}

[[queues]]
name = "{p}.quorum"
type = "quorum"

[queues.retry]
delays = ["1s"]
park = "{p}.parked"

[[queues]]
name = "{p}.parked"
type = "quorum"
message_ttl = 60_000
"#
    );
    Topology::from_toml(&text, "retry.toml").unwrap()
}

/// What a report says, one `entity: status` line per entity.
fn lines<S: std::fmt::Display>(entries: &[serena::topology::EntityReport<S>]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{}: {}", e.entity, e.status))
        .collect()
}

/// Waits for `count` deliveries on `consumer`, each with the time it arrived.
async fn arrivals(consumer: &mut Consumer, count: usize) -> Vec<(serena::Delivery, Instant)> {
    let mut got = Vec::new();
    while got.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message back within 10 s")
            .expect("the consumer is open")
            .expect("a delivery");
        got.push((delivery, Instant::now()));
    }
    got
}

fn x_death_queue(headers: Option<&FieldTable>) -> (String, String) {
    let deaths = headers
        .and_then(|h| h.get("x-death"))
        .expect("an x-death header");
    let FieldValue::Array(deaths) = deaths else {
        panic!("x-death is not an array: {deaths:?}")
    };
    let first = deaths[0].as_table().expect("a table per death");
    let field = |k: &str| {
        first
            .get(k)
            .and_then(FieldValue::as_str)
            .unwrap()
            .to_owned()
    };
    (field("queue"), field("reason"))
}

#[tokio::test]
async fn delay_queues_send_a_message_back_after_its_delay() {
    let p = unique_name("topo-retry");
    let t = retry_topology(&p);
    let _cleanup = Cleanup(t.clone());
    let (classic, quorum) = (format!("{p}.classic"), format!("{p}.quorum"));

    let first = apply(&t).await;
    assert!(first.is_ok(), "{first}");
    let created: Vec<String> = [
        "classic",
        "classic.retry.500ms",
        "classic.retry.2s",
        "classic.parked",
        "quorum",
        "quorum.retry.1s",
        "parked",
    ]
    .iter()
    .map(|n| format!("queue \"{p}.{n}\": created"))
    .collect();
    assert_eq!(lines(&first.entries), created);

    // The worker's part, by hand: a failed message goes to its delay queue through the default
    // exchange, and waits there.
    let conn = Connection::open(&config()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    let no_ack = || ConsumeOptions::default().with_no_ack(true);
    let mut classic_back = ch.basic_consume(&classic, no_ack()).await.unwrap();
    let mut quorum_back = ch.basic_consume(&quorum, no_ack()).await.unwrap();
    let mut sent = HashMap::new();
    for (schedule, delay) in [
        (t.retry_schedule(&classic).unwrap(), 0),
        (t.retry_schedule(&classic).unwrap(), 1),
        (t.retry_schedule(&quorum).unwrap(), 0),
    ] {
        let step = &schedule.steps[delay];
        let props = BasicProperties::default().with_persistent(true);
        sent.insert(step.queue.clone(), (step.delay, Instant::now()));
        ch.basic_publish("", &step.queue, step.queue.as_bytes(), props)
            .await
            .unwrap();
    }
    let (mut back, quorum_arrivals) = tokio::join!(
        arrivals(&mut classic_back, 2),
        arrivals(&mut quorum_back, 1)
    );
    back.extend(quorum_arrivals);
    assert_eq!(back.len(), 3);
    for (delivery, arrived) in &back {
        let delay_queue = std::str::from_utf8(&delivery.body).unwrap();
        let (delay, published) = sent[delay_queue];
        let waited = arrived.duration_since(published);
        eprintln!("{delay_queue}: delay {delay:?}, back after {waited:?}");
        assert!(
            waited + Duration::from_millis(50) >= delay,
            "{delay_queue}: back after {waited:?}, before its {delay:?}"
        );
        assert!(
            waited <= delay + Duration::from_secs(2),
            "{delay_queue}: back only after {waited:?}, for a {delay:?} delay"
        );
        assert_eq!(
            x_death_queue(delivery.properties.headers.as_ref()),
            (delay_queue.to_owned(), "expired".to_owned())
        );
        let work = if delay_queue.starts_with(&classic) {
            &classic
        } else {
            &quorum
        };
        assert_eq!(delivery.routing_key.as_str(), work.as_str());
    }

    // Applying again changes nothing, and verify finds every queue, the added ones included.
    let second = apply(&t).await;
    assert!(second.is_ok(), "{second}");
    let present: Vec<String> = created
        .iter()
        .map(|l| l.replace(": created", ": already present"))
        .collect();
    assert_eq!(lines(&second.entries), present);
    let verified = t.verify(&conn).await;
    assert!(verified.is_ok(), "{verified}");
    assert_eq!(verified.entries.len(), 7, "{verified}");
    assert!(
        verified
            .entries
            .iter()
            .all(|e| matches!(e.status, VerifyStatus::Present))
    );

    // Verify misses a delay queue deleted behind our back; apply puts it back.
    let gone = format!("{p}.classic.retry.2s");
    ch.queue_delete(&gone, false, false).await.unwrap();
    let drift = t.verify(&conn).await;
    let missing: Vec<_> = drift.failures().map(|e| e.entity.clone()).collect();
    assert_eq!(missing, [queue(&gone)], "{drift}");
    let repair = t.apply(&conn).await;
    assert!(matches!(
        repair.status_of(&queue(&gone)),
        Some(ApplyStatus::Created)
    ));
    assert!(queue_exists(&conn, &gone).await);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_delay_queue_with_another_ttl_is_a_406_naming_x_message_ttl() {
    let p = unique_name("topo-retry-406");
    let t = Topology::from_toml(
        &format!("[[queues]]\nname = \"{p}.work\"\nretry = {{ delays = [\"1s\", \"1m\"] }}\n"),
        "retry.toml",
    )
    .unwrap();
    let _cleanup = Cleanup(t.clone());
    let (work, delay) = (format!("{p}.work"), format!("{p}.work.retry.1s"));

    // The 1s delay queue exists already, with a TTL of 5 s.
    let conn = Connection::open(&config()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    let five_seconds = QueueDeclareOptions::default()
        .with_durable(true)
        .with_arguments(
            FieldTable::new()
                .with("x-queue-type", "classic")
                .with("x-message-ttl", 5_000i64)
                .with("x-dead-letter-exchange", "")
                .with("x-dead-letter-routing-key", work.as_str()),
        );
    ch.queue_declare(&delay, five_seconds.clone())
        .await
        .unwrap();

    let report = t.apply(&conn).await;
    assert!(!report.is_ok());
    assert_eq!(report.failures().count(), 1, "{report}");
    let Some(ApplyStatus::Failed(f)) = report.status_of(&queue(&delay)) else {
        panic!("{report}")
    };
    assert_eq!(
        f.error.reply_code(),
        Some(UnexpectedCloseError::PRECONDITION_FAILED)
    );
    let d = f.difference.clone().expect("the property that differs");
    assert_eq!(
        (d.property.as_str(), d.topology.as_str(), d.broker.as_str()),
        ("x-message-ttl", "1000", "5000")
    );
    assert!(
        report.to_string().contains(&format!(
            "queue \"{delay}\": failed: x-message-ttl differs: the topology has 1000, the \
             broker has 5000"
        )),
        "{report}"
    );
    // The rest is still applied, in order, and the mismatching queue left as it was.
    let statuses: Vec<String> = lines(&report.entries)
        .iter()
        .map(|l| l.split(": failed").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        [
            format!("queue \"{work}\": created"),
            format!("queue \"{delay}\""),
            format!("queue \"{p}.work.retry.1m\": created"),
            format!("queue \"{p}.work.parked\": created"),
        ]
    );
    let ch = conn.channel().await.unwrap();
    ch.queue_declare(&delay, five_seconds).await.unwrap();
    // Verify checks existence only: everything is there.
    let verified = t.verify(&conn).await;
    assert!(verified.is_ok(), "{verified}");
    conn.close().await.unwrap();
}
