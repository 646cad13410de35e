// Handlers that answer: `Reply<T>` and `Result<Reply<T>, E>` become `Outcome::Reply` with the
// JSON body; a reply that cannot be encoded, and an `Err`, follow the consumer's policy.

use std::collections::HashMap;

use serena::consumer;
use serena::worker::{ErrorPolicy, IntoOutcome, Json, Outcome, Reply};

#[derive(serde::Serialize)]
struct Price {
    cents: u64,
}

#[consumer(queue = "prices")]
async fn price(Json(sku): Json<String>) -> Reply<Price> {
    Reply(Price { cents: sku.len() as u64 })
}

#[consumer(queue = "prices", on_error = "reject")]
async fn maybe_price(Json(sku): Json<String>) -> Result<Reply<Result<u64, String>>, String> {
    match sku.as_str() {
        "" => Err("empty sku".into()),
        "gone" => Ok(Reply(Err("discontinued".into()))),
        _ => Ok(Reply(Ok(7))),
    }
}

/// Keys that are not strings cannot be JSON object keys.
#[consumer(queue = "prices")]
async fn unencodable() -> Reply<HashMap<(u8, u8), u8>> {
    Reply(HashMap::from([((1, 2), 3)]))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn main() {
    let policy = ErrorPolicy::Reject;
    let reply = |body: &str| Outcome::Reply { body: body.as_bytes().to_vec().into() };
    let out = block_on(price::handler(Json("abc".into()))).into_outcome(policy);
    assert_eq!(out, reply(r#"{"cents":3}"#));
    let out = block_on(maybe_price::handler(Json("gone".into()))).into_outcome(policy);
    assert_eq!(out, reply(r#"{"Err":"discontinued"}"#));
    let out = block_on(maybe_price::handler(Json("x".into()))).into_outcome(policy);
    assert_eq!(out, reply(r#"{"Ok":7}"#));
    let out = block_on(maybe_price::handler(Json(String::new()))).into_outcome(policy);
    assert_eq!(out, Outcome::Reject);
    let out = block_on(unencodable::handler()).into_outcome(ErrorPolicy::Park);
    assert!(matches!(out, Outcome::Park { reason } if reason.contains("JSON")));
}
