//! Topology apply and verify against the real RabbitMQ: what apply creates is checked with
//! passive declares and by routing messages through it; applying twice changes nothing; drift
//! is found after a queue is deleted behind serena's back; a 406 names the property that
//! differs and the rest is still applied; retry schedules' delay queues send messages back
//! after their delay ([`retry`]).
//!
//! Every test renames its entities with [`unique_name`] and deletes them at the end.

#[path = "topology/helpers.rs"]
mod helpers;
#[path = "topology/retry.rs"]
mod retry;

use helpers::{
    Cleanup, apply, config, example, exchange, exchange_exists, message_count, queue, queue_exists,
};
use serena::proto::{BasicProperties, FieldTable};
use serena::topology::{
    ApplyStatus, Binding, Destination, Entity, Exchange, ExchangeKind, Queue, Topology,
    TopologyExt, VerifyStatus,
};
use serena::{Connection, QueueDeclareOptions, UnexpectedCloseError};
use serena_tests::unique_name;

#[tokio::test]
async fn apply_declares_everything_and_applying_again_changes_nothing() {
    let t = example(&unique_name("topo-apply"));
    let _cleanup = Cleanup(t.clone());
    let name = |i: usize| t.queues[i].name.clone();
    let (work, urgent, unrouted) = (name(0), name(2), name(3));
    let orders = t.exchanges[0].name.clone();

    let first = apply(&t).await;
    assert!(first.is_ok(), "{first}");
    assert_eq!(first.entries.len(), 18);
    for e in &first.entries {
        match e.entity {
            Entity::Binding { .. } => assert!(matches!(e.status, ApplyStatus::Bound), "{e:?}"),
            _ => assert!(matches!(e.status, ApplyStatus::Created), "{e:?}"),
        }
    }
    assert!(
        first
            .to_string()
            .ends_with("12 created, 0 already present, 6 bound, 0 unchecked, 0 missing, 0 failed")
    );

    let conn = Connection::open(&config()).await.unwrap();
    for x in &t.exchanges {
        assert!(exchange_exists(&conn, &x.name).await, "{}", x.name);
    }
    for q in t.queues.iter().chain(&t.retry_queues()) {
        assert!(queue_exists(&conn, &q.name).await, "{}", q.name);
    }
    // The bindings route: a topic match, a headers match, and the alternate exchange.
    let ch = conn.channel().await.unwrap();
    ch.basic_publish(
        &orders,
        "order.created",
        b"plain",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let urgent_headers = FieldTable::new().with("priority", "urgent");
    ch.basic_publish(
        &orders,
        "order.created",
        b"urgent",
        BasicProperties::default().with_headers(urgent_headers),
    )
    .await
    .unwrap();
    ch.basic_publish(
        &orders,
        "invoice.sent",
        b"stray",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // The audit exchange is internal: publishers cannot use it.
    let audit = &t.exchanges[2].name;
    let err = ch
        .basic_publish(audit, "", b"x", BasicProperties::default())
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(UnexpectedCloseError::ACCESS_REFUSED));
    let counts = async || {
        (
            message_count(&conn, &work).await,
            message_count(&conn, &urgent).await,
            message_count(&conn, &unrouted).await,
        )
    };
    assert_eq!(counts().await, (2, 1, 1));

    let second = apply(&t).await;
    assert!(second.is_ok(), "{second}");
    for e in &second.entries {
        match e.entity {
            Entity::Binding { .. } => assert!(matches!(e.status, ApplyStatus::Bound), "{e:?}"),
            _ => assert!(matches!(e.status, ApplyStatus::Present), "{e:?}"),
        }
    }
    // Nothing was re-created: the messages are still there.
    assert_eq!(counts().await, (2, 1, 1));
    // The work queue dead-letters a refused message to the parking queue.
    let parking = name(1);
    let ch = conn.channel().await.unwrap();
    let refused = ch
        .basic_get(&work, false)
        .await
        .unwrap()
        .expect("a message");
    refused.nack(false).unwrap();
    let mut parked = 0;
    for _ in 0..50 {
        parked = message_count(&conn, &parking).await;
        if parked == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(parked, 1);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn verify_finds_a_queue_deleted_behind_our_back() {
    let t = example(&unique_name("topo-drift"));
    let _cleanup = Cleanup(t.clone());
    let parking = t.queues[1].name.clone();
    let conn = Connection::open(&config()).await.unwrap();

    // Before apply, everything is missing, and verify creates nothing.
    let before = t.verify(&conn).await;
    assert!(!before.is_ok());
    assert_eq!(before.failures().count(), 12, "{before}");
    assert!(!queue_exists(&conn, &parking).await);
    assert!(!exchange_exists(&conn, &t.exchanges[0].name).await);

    assert!(t.apply(&conn).await.is_ok());
    let clean = t.verify(&conn).await;
    assert!(clean.is_ok(), "{clean}");
    assert_eq!(
        clean
            .entries
            .iter()
            .filter(|e| matches!(e.status, VerifyStatus::Unchecked))
            .count(),
        6
    );

    let ch = conn.channel().await.unwrap();
    ch.queue_delete(&parking, false, false).await.unwrap();
    let drift = t.verify(&conn).await;
    assert!(!drift.is_ok(), "{drift}");
    let missing: Vec<_> = drift.failures().map(|e| e.entity.clone()).collect();
    assert_eq!(missing, [queue(&parking)]);
    assert!(matches!(
        drift.status_of(&queue(&parking)),
        Some(VerifyStatus::Missing)
    ));
    assert!(
        drift
            .to_string()
            .contains(&format!("queue \"{parking}\": MISSING"))
    );
    // Verify never changes the broker.
    assert!(!queue_exists(&conn, &parking).await);

    // Apply repairs the drift: only the deleted queue is created.
    let repair = t.apply(&conn).await;
    assert!(matches!(
        repair.status_of(&queue(&parking)),
        Some(ApplyStatus::Created)
    ));
    let created = repair
        .entries
        .iter()
        .filter(|e| matches!(e.status, ApplyStatus::Created))
        .count();
    assert_eq!(created, 1, "{repair}");
    assert!(t.verify(&conn).await.is_ok());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_406_names_the_difference_and_the_rest_is_still_applied() {
    let p = unique_name("topo-406");
    let (fan, direct) = (format!("{p}.fan"), format!("{p}.direct"));
    let (durable, limited, fresh) = (
        format!("{p}.durable"),
        format!("{p}.limited"),
        format!("{p}.fresh"),
    );
    let t = Topology {
        exchanges: vec![
            Exchange::new(&fan, ExchangeKind::Topic),
            Exchange::new(&direct, ExchangeKind::Direct),
        ],
        queues: vec![
            Queue {
                durable: false,
                ..Queue::new(&durable)
            },
            Queue {
                max_length: Some(20),
                ..Queue::new(&limited)
            },
            Queue::new(&fresh),
        ],
        bindings: vec![Binding::new(
            &direct,
            Destination::Queue(fresh.clone()),
            "k",
        )],
        ..Topology::default()
    };
    t.validate().unwrap();
    let _cleanup = Cleanup(t.clone());

    // What already exists, unlike the topology.
    let conn = Connection::open(&config()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    let durable_x = serena::ExchangeDeclareOptions::default().with_durable(true);
    ch.exchange_declare(&fan, "fanout", durable_x)
        .await
        .unwrap();
    let durable_q = QueueDeclareOptions::default().with_durable(true);
    ch.queue_declare(&durable, durable_q.clone()).await.unwrap();
    let with_limit = durable_q.with_arguments(
        FieldTable::new()
            .with("x-queue-type", "classic")
            .with("x-max-length", 10i64),
    );
    ch.queue_declare(&limited, with_limit).await.unwrap();
    ch.close().await.unwrap();

    let report = t.apply(&conn).await;
    assert!(!report.is_ok());
    assert_eq!(report.failures().count(), 3, "{report}");
    let difference = |entity: &Entity| match report.status_of(entity) {
        Some(ApplyStatus::Failed(f)) => {
            assert_eq!(
                f.error.reply_code(),
                Some(UnexpectedCloseError::PRECONDITION_FAILED)
            );
            let d = f.difference.clone().expect("a difference");
            (d.property, d.topology, d.broker)
        }
        other => panic!("{entity}: {other:?}"),
    };
    assert_eq!(
        difference(&exchange(&fan)),
        ("type".into(), "topic".into(), "fanout".into())
    );
    assert_eq!(
        difference(&queue(&durable)),
        ("durable".into(), "false".into(), "true".into())
    );
    assert_eq!(
        difference(&queue(&limited)),
        ("x-max-length".into(), "20".into(), "10".into())
    );
    assert!(matches!(
        report.status_of(&exchange(&direct)),
        Some(ApplyStatus::Created)
    ));
    assert!(matches!(
        report.status_of(&queue(&fresh)),
        Some(ApplyStatus::Created)
    ));
    assert!(matches!(
        report.entries.last().map(|e| &e.status),
        Some(ApplyStatus::Bound)
    ));
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "queue \"{durable}\": failed: durable differs: the topology has false, the broker \
             has true; change the topology to match, or delete the entity and apply again"
        )),
        "{text}"
    );
    // The failing entities were left as they were: the queue is still there, still durable.
    let ch = conn.channel().await.unwrap();
    let still_durable = QueueDeclareOptions::default().with_durable(true);
    ch.queue_declare(&durable, still_durable).await.unwrap();
    ch.close().await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn declare_false_entities_are_checked_never_created() {
    let p = unique_name("topo-expect");
    let (there, absent, absent_x) = (
        format!("{p}.there"),
        format!("{p}.absent"),
        format!("{p}.absent-x"),
    );
    let t = Topology {
        exchanges: vec![
            Exchange {
                declare: false,
                ..Exchange::new(&absent_x, ExchangeKind::Topic)
            },
            Exchange {
                declare: false,
                ..Exchange::new("amq.topic", ExchangeKind::Topic)
            },
        ],
        queues: vec![
            Queue {
                declare: false,
                ..Queue::new(&there)
            },
            Queue {
                declare: false,
                ..Queue::new(&absent)
            },
        ],
        bindings: vec![Binding {
            declare: false,
            ..Binding::new("amq.topic", Destination::Queue(there.clone()), "#")
        }],
        ..Topology::default()
    };
    t.validate().unwrap();
    let _cleanup = Cleanup(t.clone());
    let conn = Connection::open(&config()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    ch.queue_declare(&there, Default::default()).await.unwrap();

    let report = t.apply(&conn).await;
    let status = |e: Entity| report.status_of(&e).cloned().unwrap();
    assert!(matches!(status(exchange(&absent_x)), ApplyStatus::Missing));
    assert!(matches!(
        status(exchange("amq.topic")),
        ApplyStatus::Present
    ));
    assert!(matches!(status(queue(&there)), ApplyStatus::Present));
    assert!(matches!(status(queue(&absent)), ApplyStatus::Missing));
    assert!(matches!(
        report.entries.last().unwrap().status,
        ApplyStatus::Unchecked
    ));
    assert!(!report.is_ok());
    assert!(!queue_exists(&conn, &absent).await);
    assert!(!exchange_exists(&conn, &absent_x).await);
    // The expected-only binding was not created: nothing routes from amq.topic to the queue.
    let unroutable = ch
        .basic_publish("amq.topic", "any.key", b"x", BasicProperties::default())
        .await
        .unwrap_err();
    assert!(
        matches!(unroutable, serena::Error::Returned(_)),
        "{unroutable}"
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_error_that_closes_the_connection_fails_the_rest() {
    let p = unique_name("topo-503");
    let t = Topology {
        exchanges: vec![Exchange::new(
            format!("{p}.plugin"),
            ExchangeKind::Custom("x-no-such-plugin".into()),
        )],
        queues: vec![Queue::new(format!("{p}.after"))],
        ..Topology::default()
    };
    t.validate().unwrap();
    let _cleanup = Cleanup(t.clone());
    let conn = Connection::open(&config()).await.unwrap();
    let report = t.apply(&conn).await;
    let ApplyStatus::Failed(plugin) = &report.entries[0].status else {
        panic!("{report}")
    };
    // RabbitMQ answers an unknown exchange type with 503 on the connection.
    assert_eq!(plugin.error.reply_code(), Some(503));
    assert!(
        plugin.to_string().contains("unknown exchange type"),
        "{plugin}"
    );
    assert!(matches!(report.entries[1].status, ApplyStatus::Failed(_)));
    assert_eq!(report.failures().count(), 2);
    assert!(conn.error().is_some());
}
