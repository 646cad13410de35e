use std::rc::Rc;

use serena::consumer;

#[consumer(queue = "orders")]
async fn handle() {
    let shared = Rc::new(1);
    tokio::task::yield_now().await;
    let _ = shared;
}

fn main() {}
