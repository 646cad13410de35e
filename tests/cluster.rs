//! serena on a three-node RabbitMQ cluster: quorum queues and streams in a topology, competing
//! worker processes on a single-active-consumer queue, and the loss of the node that
//! publishers and workers are connected to; the reliable publisher through a node's app
//! stopped and started, a memory alarm and a rolling restart of all three nodes.
//!
//! This binary has its own `main` (`harness = false`): the cluster takes half a minute to
//! start, so it is started once, with `scripts/cluster.sh start`, and every case runs against
//! it in order. The cluster's nodes (`serena-c1..c3@localhost` on 127.0.0.1:5701..5703) are
//! not the default broker on 5672, which no case touches. A guard stops the cluster on every
//! way out: a case that fails or panics (each runs under `catch_unwind`), a case that hangs
//! (each has a time limit), SIGINT or SIGTERM.
//!
//! Without `rabbitmq-server` on the machine the run fails; it never passes without a cluster.
//!
//! ```text
//! cargo test -p serena-tests --test cluster               # every case
//! cargo test -p serena-tests --test cluster -- node_loss  # cases whose name contains it
//! SERENA_CLUSTER_KEEP=1 cargo test -p serena-tests --test cluster   # reuse a running
//!                                     # cluster and leave it up (when working on these tests)
//! ```

#[path = "cluster/competing.rs"]
mod competing;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/node_loss.rs"]
mod node_loss;
#[path = "cluster/reliable.rs"]
mod reliable;
#[path = "cluster/topology.rs"]
mod topology;

use std::time::Duration;

use harness::Case;

const CASES: &[Case] = &[
    Case {
        name: "topology_applies_replicated_queues_and_verifies_through_another_node",
        limit: Duration::from_secs(40),
        run: topology::replicated_queues,
    },
    Case {
        name: "single_active_consumer_hands_over_between_worker_processes",
        limit: Duration::from_secs(60),
        run: competing::single_active_consumer,
    },
    Case {
        name: "node_loss_loses_no_confirmed_message",
        limit: Duration::from_secs(120),
        run: node_loss::node_loss,
    },
    Case {
        name: "reliable_publisher_waits_out_stop_app_and_loses_nothing",
        limit: Duration::from_secs(120),
        run: reliable::stop_and_start_app,
    },
    Case {
        name: "reliable_publisher_holds_its_cap_under_a_memory_alarm",
        limit: Duration::from_secs(120),
        run: reliable::memory_alarm,
    },
    Case {
        name: "reliable_publisher_loses_nothing_in_a_rolling_restart",
        limit: Duration::from_secs(300),
        run: reliable::rolling_restart,
    },
];

fn main() -> std::process::ExitCode {
    harness::main(CASES)
}
