use serena::consumer;
use serena::worker::FromDelivery;

#[consumer(queue = "orders")]
async fn handle(body: impl FromDelivery) {
    let _ = body;
}

fn main() {}
