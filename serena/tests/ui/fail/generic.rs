use serena::consumer;
use serena::worker::{FromDelivery, Json};

#[consumer(queue = "orders")]
async fn generic<T: serde::de::DeserializeOwned>(body: Json<T>) {
    let _ = body;
}

#[consumer(queue = "orders")]
async fn with_where(body: Json<u32>)
where
    Json<u32>: FromDelivery,
{
    let _ = body;
}

fn main() {}
