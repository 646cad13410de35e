use serena::consumer;

#[consumer(queue = "orders")]
async fn handle() -> u32 {
    0
}

fn main() {}
