//! `tests/cluster/topology.toml` on the cluster: quorum queues with a replication factor and a
//! stream are applied through one node, applied again and verified through the others, hold
//! replicas on as many nodes as the topology asks (as `rabbitmqctl` lists them), and drift
//! (a deleted queue, a different replication factor) is found through any node.

use std::time::Duration;

use serena::proto::BasicProperties;
use serena::topology::{ApplyStatus, Entity, EntityName, Topology, TopologyExt, VerifyStatus};
use serena::{Connection, Error, open_connection};

use crate::harness::{
    self, CaseFuture, config, eventually, node_name, queue_info, queues, running_nodes,
};

fn queue(name: &str) -> Entity {
    Entity::Queue(EntityName::Named(name.to_owned()))
}

async fn connect(node: usize) -> Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        Connection::open(&config(node, "cluster-topology")),
    )
    .await
    .expect("connects within 10 s")
    .unwrap_or_else(|e| panic!("node {node}: {e}"))
}

pub(crate) fn replicated_queues() -> CaseFuture {
    Box::pin(async {
        let topology = harness::topology();
        let all_nodes: Vec<String> = (0..3).map(node_name).collect();
        assert_eq!(
            running_nodes(2).await,
            all_nodes,
            "the cluster as node 3 sees it"
        );

        // Applied through the first node: everything is created.
        let c1 = connect(0).await;
        let first = topology.apply(&c1).await;
        assert!(first.is_ok(), "{first}");
        for e in &first.entries {
            match e.entity {
                Entity::Binding { .. } => assert!(matches!(e.status, ApplyStatus::Bound), "{e:?}"),
                _ => assert!(matches!(e.status, ApplyStatus::Created), "{e:?}"),
            }
        }
        c1.close().await.unwrap();

        // Applied again through the third node: the cluster already has all of it.
        let c3 = connect(2).await;
        let again = topology.apply(&c3).await;
        assert!(again.is_ok(), "{again}");
        assert!(
            again.to_string().ends_with(
                "0 created, 5 already present, 3 bound, 0 unchecked, 0 missing, 0 failed"
            ),
            "{again}"
        );

        // Verified through the second node.
        let c2 = connect(1).await;
        let verified = topology.verify(&c2).await;
        assert!(verified.is_ok(), "{verified}");

        // Replicas: as many as the topology asks, each one running.
        let expected = [
            ("jobs.work", "quorum", 3),
            ("jobs.single", "quorum", 3),
            ("jobs.pair", "quorum", 2),
            ("jobs.log", "stream", 3),
        ];
        let listed = eventually("every replica online", Duration::from_secs(10), || async {
            let listed = queues(1).await;
            expected
                .iter()
                .all(|(name, _, n)| listed.get(*name).is_some_and(|i| i.online.len() == *n))
                .then_some(listed)
        })
        .await;
        for (name, kind, replicas) in expected {
            let info = &listed[name];
            assert_eq!(info.kind, kind, "{name}: {info:?}");
            assert_eq!(info.members.len(), replicas, "{name}: {info:?}");
            assert_eq!(info.online, info.members, "{name}: {info:?}");
            assert!(
                info.members.iter().all(|m| all_nodes.contains(m)),
                "{name}: {info:?}"
            );
        }

        // Messages go in through one node and out through another.
        open_connection(&config(1, "cluster-topology-publish"), async |conn| {
            conn.open_channel(async |ch| {
                for key in ["work", "log"] {
                    ch.basic_publish("jobs", key, key, BasicProperties::default())
                        .await?;
                }
                Ok::<_, Error>(())
            })
            .await
        })
        .await
        .expect("connection");
        let got = c3
            .open_channel(async |ch| ch.basic_get("jobs.work", true).await)
            .await
            .expect("basic.get through node 3");
        assert_eq!(got.map(|m| m.body.to_vec()), Some(b"work".to_vec()));

        // Drift, seen through another node than the one that made it: a queue deleted through
        // node 3 is missing for a verify through node 2...
        c3.open_channel(async |ch| ch.queue_delete("jobs.pair", false, false).await)
            .await
            .expect("queue.delete");
        let drift = topology.verify(&c2).await;
        assert!(!drift.is_ok(), "{drift}");
        let missing: Vec<_> = drift.failures().map(|e| e.entity.clone()).collect();
        assert_eq!(missing, [queue("jobs.pair")], "{drift}");
        assert!(matches!(
            drift.status_of(&queue("jobs.pair")),
            Some(VerifyStatus::Missing)
        ));

        // ...and an apply through node 2 with a different replication factor for jobs.work
        // is a 406 that names it, while the deleted queue is created again.
        let mut changed: Topology = topology.clone();
        changed
            .queues
            .iter_mut()
            .find(|q| q.name == "jobs.work")
            .expect("jobs.work")
            .initial_group_size = Some(2);
        let report = changed.apply(&c2).await;
        let Some(ApplyStatus::Failed(failure)) = report.status_of(&queue("jobs.work")) else {
            panic!("a different group size is not drift:\n{report}");
        };
        let difference = failure
            .difference
            .as_ref()
            .expect("the 406 names the property");
        assert_eq!(
            (
                difference.property.as_str(),
                difference.topology.as_str(),
                difference.broker.as_str()
            ),
            ("x-quorum-initial-group-size", "2", "3"),
            "{report}"
        );
        assert_eq!(failure.error.reply_code(), Some(406));
        assert!(
            matches!(
                report.status_of(&queue("jobs.pair")),
                Some(ApplyStatus::Created)
            ),
            "{report}"
        );
        assert_eq!(report.failures().count(), 1, "{report}");
        // The unchanged topology is whole again, seen through every node.
        for node in [&c2, &c3] {
            let report = topology.apply(node).await;
            assert!(report.is_ok(), "{report}");
            assert!(topology.verify(node).await.is_ok());
        }
        let pair = eventually(
            "jobs.pair is back with 2 replicas",
            Duration::from_secs(10),
            || async {
                queue_info(0, "jobs.pair")
                    .await
                    .filter(|i| i.online.len() == 2)
            },
        )
        .await;
        assert_eq!(pair.members.len(), 2, "{pair:?}");

        println!(
            "    replicas: jobs.work on {:?}, jobs.pair on {:?} (leader {})",
            listed["jobs.work"].members, pair.members, pair.leader
        );
        c2.close().await.unwrap();
        c3.close().await.unwrap();
    })
}
