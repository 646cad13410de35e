use serena::consumer;

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

#[consumer(queue = "orders")]
async fn handle(order: Order, body: String) {
    let _ = (order.id, body);
}

fn main() {}
