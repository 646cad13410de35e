// Every return type that converts into an Outcome.

use std::fmt;

use serena::consumer;
use serena::worker::{ErrorPolicy, IntoOutcome, Outcome};

#[derive(Debug)]
struct MyError;

impl fmt::Display for MyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("my error")
    }
}

#[consumer(queue = "q")]
async fn implicit_unit() {}

#[consumer(queue = "q")]
async fn unit() -> () {}

#[consumer(queue = "q")]
async fn outcome() -> Outcome {
    Outcome::Requeue
}

#[consumer(queue = "q", on_error = "reject")]
async fn fallible() -> Result<(), MyError> {
    Err(MyError)
}

#[consumer(queue = "q")]
async fn fallible_outcome() -> Result<Outcome, MyError> {
    Ok(Outcome::Reject)
}

#[consumer(queue = "q")]
async fn anyhow_like() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let n: u8 = "12".parse()?;
    let _ = n;
    Ok(())
}

#[consumer(queue = "q")]
async fn string_error() -> Result<(), String> {
    Err("nope".to_owned())
}

fn main() {
    // The functions run as written; `block_on` is a minimal executor for futures that never
    // wait.
    let policy = ErrorPolicy::Requeue;
    assert_eq!(block_on(implicit_unit::handler()).into_outcome(policy), Outcome::Ack);
    assert_eq!(block_on(unit::handler()).into_outcome(policy), Outcome::Ack);
    assert_eq!(block_on(outcome::handler()).into_outcome(policy), Outcome::Requeue);
    assert_eq!(
        block_on(fallible::handler()).into_outcome(ErrorPolicy::Reject),
        Outcome::Reject
    );
    assert_eq!(block_on(fallible_outcome::handler()).into_outcome(policy), Outcome::Reject);
    assert_eq!(block_on(anyhow_like::handler()).into_outcome(policy), Outcome::Ack);
    assert_eq!(block_on(string_error::handler()).into_outcome(policy), Outcome::Requeue);
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}
