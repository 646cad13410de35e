use serena::consumer;

#[consumer(queue = "events", offset = "beginning")]
async fn unknown_word() {}

#[consumer(queue = "events", offset = "7d")]
async fn lowercase_day() {}

#[consumer(queue = "events", offset = -1)]
async fn negative() {}

#[consumer(queue = "events", offset = 5u32)]
async fn suffixed() {}

#[consumer(queue = "events", offset = timestamp(1, 2))]
async fn two_times() {}

#[consumer(queue = "events", offset = timestamp("2024-01-01"))]
async fn text_time() {}

#[consumer(queue = "events", offset = true)]
async fn flag() {}

#[consumer(queue = "events", prefetch = 0, offset = "first")]
async fn no_prefetch_limit() {}

#[consumer(queue = "events", offset)]
async fn no_value() {}

fn main() {}
