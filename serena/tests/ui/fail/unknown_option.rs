use serena::consumer;

#[consumer(queue = "orders", prefech = 10)]
async fn typo() {}

#[consumer(queue = "orders", durable = true)]
async fn not_an_option() {}

fn main() {}
