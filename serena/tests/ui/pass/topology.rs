// The queue is checked against a topology file, relative to the crate's Cargo.toml.

use serena::consumer;
use serena::worker::Handler;

#[consumer(queue = "orders", topology = "tests/ui/topology.toml")]
async fn orders() {}

#[consumer(topology = "tests/ui/topology.toml", queue = "refunds", on_error = "reject")]
async fn refunds() {}

fn main() {
    assert_eq!(orders.spec().queue, "orders");
    assert_eq!(refunds.spec().queue, "refunds");
}
