// A file that is TOML but breaks the topology rules fails the build with every problem listed,
// at the `topology` value: what the worker would refuse at run time is refused here.

use serena::consumer;

#[consumer(queue = "orders", topology = "tests/ui/invalid-topology.toml")]
async fn handle() {}

fn main() {}
