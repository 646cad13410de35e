// Arguments bound to destructuring patterns, as in any function.

use bytes::Bytes;
use serena::consumer;
use serena::proto::FieldTable;
use serena::worker::{Headers, Json, State};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    lines: Vec<(String, u32)>,
}

#[derive(Clone)]
struct App {
    shop: String,
    limit: u32,
}

#[consumer(queue = "orders")]
async fn handle(
    Json(Order { id, lines }): Json<Order>,
    State(App { shop, .. }): State<App>,
    Headers(table): Headers,
    mut body: Bytes,
    _: State<App>,
) -> Result<(), String> {
    let _ = body.split_off(0);
    if lines.is_empty() {
        return Err(format!("{shop}: order {id} has no lines ({} headers)", table.len()));
    }
    Ok(())
}

#[consumer(queue = "nested")]
async fn nested(Json((a, [b, c])): Json<(u8, [u8; 2])>, State(App { limit, shop: _ }): State<App>) -> bool_ok::Ack {
    let _ = (a, b, c, limit);
    bool_ok::Ack
}

mod bool_ok {
    // A return type that converts through a user's own IntoOutcome impl.
    pub struct Ack;
    impl serena::worker::IntoOutcome for Ack {
        fn into_outcome(self, _: serena::worker::ErrorPolicy) -> serena::worker::Outcome {
            serena::worker::Outcome::Ack
        }
    }
}

fn main() {
    let app = App { shop: "main".into(), limit: 3 };
    let order = Order { id: 7, lines: Vec::new() };
    let call = handle::handler(
        Json(order),
        State(app.clone()),
        Headers(FieldTable::new()),
        Bytes::from_static(b"{}"),
        State(app.clone()),
    );
    drop(call);
    drop(nested::handler(Json((1, [2, 3])), State(app)));
}
