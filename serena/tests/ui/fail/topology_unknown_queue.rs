use serena::consumer;

#[consumer(queue = "order", topology = "tests/ui/topology.toml")]
async fn typo() {}

#[consumer(queue = "shipping", topology = "tests/ui/topology.toml")]
async fn undeclared() {}

fn main() {}
