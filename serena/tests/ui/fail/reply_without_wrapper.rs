// A value to send back is wrapped in `Reply`: a bare `Serialize` type is no outcome.

use serena::consumer;

#[derive(serde::Serialize)]
struct Price {
    cents: u64,
}

#[consumer(queue = "prices")]
async fn price() -> Result<Price, String> {
    Ok(Price { cents: 1 })
}

fn main() {}
