use serena::consumer;

#[consumer(prefetch = 10)]
async fn handle() {}

#[consumer]
async fn bare() {}

fn main() {}
