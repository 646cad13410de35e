use serena::consumer;

#[consumer(queue = "orders")]
struct Handler;

fn main() {}
