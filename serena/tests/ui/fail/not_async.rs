use serena::consumer;

#[consumer(queue = "orders")]
fn handle(body: bytes::Bytes) {
    let _ = body;
}

fn main() {}
