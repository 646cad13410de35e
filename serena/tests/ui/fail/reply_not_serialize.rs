// A reply is sent as JSON: its type must be `Serialize`.

use serena::consumer;
use serena::worker::Reply;

struct Price {
    cents: u64,
}

#[consumer(queue = "prices")]
async fn price() -> Reply<Price> {
    Reply(Price { cents: 1 })
}

fn main() {}
