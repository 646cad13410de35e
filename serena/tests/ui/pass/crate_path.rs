// A crate that re-exports serena points the expansion at its re-export with `crate = "..."`:
// here a module alias stands for such a crate.

mod framework {
    pub use serena as amqp;
}

use framework::amqp::worker::{Handler, Json};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

#[framework::amqp::consumer(queue = "orders", crate = "framework::amqp", tag = "router")]
async fn route(Json(order): Json<Order>) -> Result<(), String> {
    if order.id == 0 { Err("no id".into()) } else { Ok(()) }
}

#[framework::amqp::consumer(queue = "audit", crate = "crate::framework::amqp")]
async fn audit() {}

fn main() {
    assert_eq!(route.spec().queue, "orders");
    assert_eq!(route.spec().consumer_tag.as_deref(), Some("router"));
    assert_eq!(audit.spec().name, "audit");
}
