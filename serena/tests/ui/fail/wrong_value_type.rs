use serena::consumer;

#[consumer(queue = orders)]
async fn unquoted_queue() {}

#[consumer(queue = "orders", prefetch = "10")]
async fn quoted_prefetch() {}

#[consumer(queue = "orders", exclusive = "yes")]
async fn stringly_flag() {}

#[consumer(queue = "orders", on_error = "later")]
async fn unknown_policy() {}

#[consumer(queue = "orders", tag)]
async fn tag_without_value() {}

fn main() {}
