// The queues a retry schedule adds are queues of the topology: a consumer may drain the park
// queue or watch a delay queue.

use serena::consumer;
use serena::worker::Handler;

#[consumer(queue = "payments.parked", topology = "tests/ui/topology.toml")]
async fn parked_payments() {}

#[consumer(queue = "payments.retry.1m", topology = "tests/ui/topology.toml")]
async fn waiting_payments() {}

fn main() {
    assert_eq!(parked_payments.spec().queue, "payments.parked");
    assert_eq!(waiting_payments.spec().queue, "payments.retry.1m");
}
