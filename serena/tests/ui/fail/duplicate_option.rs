use serena::consumer;

#[consumer(queue = "orders", prefetch = 10, queue = "payments")]
async fn handle() {}

fn main() {}
