use serena::consumer;

#[consumer(queue = "orders", topology = "tests/ui/no-such-topology.toml")]
async fn handle() {}

fn main() {}
