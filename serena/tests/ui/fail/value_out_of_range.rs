use serena::consumer;

#[consumer(queue = "orders", prefetch = 70000)]
async fn big_prefetch() {}

#[consumer(queue = "orders", concurrency = 0)]
async fn no_concurrency() {}

#[consumer(queue = "orders", priority = 1u8)]
async fn suffixed_priority() {}

fn main() {}
