use serena::consumer;
use serena::worker::{Json, State};

#[derive(Clone)]
struct App;

// The handler's own name: caught by the attribute.
#[consumer(queue = "orders")]
async fn orders(Json(orders): Json<Vec<u64>>) {
    let _ = orders;
}

#[consumer(queue = "payments")]
async fn payments() {}

// Another handler's name in the same module: the unit struct `payments` is in scope, so
// rustc reads the pattern as that struct, and says so.
#[consumer(queue = "audit")]
async fn audit(payments: State<App>) {
    let _ = payments;
}

fn main() {}
