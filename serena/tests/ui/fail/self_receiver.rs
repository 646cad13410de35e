use serena::consumer;

struct Worker;

impl Worker {
    #[consumer(queue = "orders")]
    async fn handle(&self, body: bytes::Bytes) {
        let _ = body;
    }
}

fn main() {}
