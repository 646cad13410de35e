use serena::consumer;

#[consumer(queue = "orders", topology = "tests/ui/broken-topology.toml")]
async fn handle() {}

fn main() {}
