//! `#[consumer]` handlers that answer (`Reply<T>`), end to end through the supervisor: many
//! calls at once, an error sent back as a value, a failing handler (its caller times out), a
//! request without `reply_to` (handled, reply dropped), and a handler that answers by calling
//! another through an `RpcClient` it takes as state.
//!
//! The macro takes queue names as literals: these queues have fixed names, are deleted and
//! redeclared first, and expire a minute after their last use.

use std::sync::Arc;
use std::time::Duration;

use serena::proto::FieldTable;
use serena::worker::{Json, Reply, State, Supervisor, SupervisorHandle};
use serena::{Error, QueueDeclareOptions, RpcClient, RpcOptions, consumer, open_connection};
use serena_tests::{config, within};
use tokio::sync::Notify;

const BACK: &str = "serena-test.rpc.back";
const FRONT: &str = "serena-test.rpc.front";

/// Calls to `back` in flight at once.
const CALLS: i64 = 200;

/// Doubles a positive number; answers zero with an error value; fails on a negative number
/// (no reply: its caller times out; `reject`, so it is not retried).
#[consumer(queue = "serena-test.rpc.back", concurrency = 8, on_error = "reject")]
async fn back(Json(n): Json<i64>) -> Result<Reply<Result<i64, String>>, String> {
    match n {
        n if n < 0 => Err(format!("{n} is negative")),
        0 => Ok(Reply(Err("zero has no double".into()))),
        n => Ok(Reply(Ok(2 * n))),
    }
}

/// Answers by calling `back` through the `RpcClient` it takes as state, and adding one.
#[consumer(queue = "serena-test.rpc.front", concurrency = 4)]
async fn front(Json(n): Json<i64>, State(rpc): State<RpcClient>) -> Result<Reply<i64>, String> {
    let doubled: Result<i64, String> = rpc.call(BACK, &n).await.map_err(|e| e.to_string())?;
    Ok(Reply(doubled? + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_answer_through_the_supervisor() {
    let r: Result<(), Error> = open_connection(&config("rpc-handlers"), async |conn| {
        conn.open_channel(async |ch| {
            for queue in [BACK, FRONT] {
                ch.queue_delete(queue, false, false).await?;
                let expires = FieldTable::new().with("x-expires", 60_000_i32);
                let options = QueueDeclareOptions::default().with_arguments(expires);
                ch.queue_declare(queue, options).await?;
            }
            Ok::<_, Error>(())
        })
        .await?;
        let options = RpcOptions::new().with_timeout(Duration::from_secs(20));
        conn.open_rpc_with(options, async |rpc| {
            let supervisor = Supervisor::new(config("rpc-handlers-worker"))
                .consumer(back)
                .consumer(front)
                .state(rpc.clone());
            let stats = supervisor.handle();
            let stop = Arc::new(Notify::new());
            let calls = async {
                let r = calls(rpc, &stats).await;
                // Stopped however the calls ended, so a failure is reported, not a hang.
                stop.notify_one();
                r
            };
            let (run, calls) = tokio::join!(supervisor.run_until(stop.notified()), calls);
            run.expect("the supervisor stops cleanly");
            calls
        })
        .await?;
        conn.open_channel(async |ch| {
            for queue in [BACK, FRONT] {
                ch.queue_delete(queue, false, false).await?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await;
    r.expect("scope");
}

/// The calls of [`handlers_answer_through_the_supervisor`], and what its worker counted.
async fn calls(rpc: &RpcClient, stats: &SupervisorHandle) -> Result<(), Error> {
    let mut calls = tokio::task::JoinSet::new();
    for n in 1..=CALLS {
        let rpc = rpc.clone();
        calls.spawn(async move { (n, rpc.call::<_, Result<i64, String>>(BACK, &n).await) });
    }
    while let Some(done) = calls.join_next().await {
        let (n, reply) = done.expect("call task");
        assert_eq!(reply?, Ok(2 * n));
    }
    // An error the handler sends back as a value.
    let zero: Result<i64, String> = rpc.call(BACK, &0).await?;
    assert_eq!(zero, Err("zero has no double".to_owned()));
    // A handler that fails sends nothing: its caller sees the timeout.
    let quick = rpc.with_timeout(Duration::from_millis(500));
    match quick.call::<_, Result<i64, String>>(BACK, &-1).await {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A handler that calls another.
    assert_eq!(rpc.call::<_, i64>(FRONT, &5).await?, 11);
    // A request without reply_to: handled, its reply dropped.
    rpc.channel()
        .basic_publish("", BACK, b"7", Default::default())
        .await?;
    // 200 + zero + front's call to back, and front's own reply: 203 replies; the
    // request without reply_to acknowledged too; the failed one rejected.
    within(Duration::from_secs(10), "every request settled", async {
        loop {
            let s = stats.stats();
            if s.acked == 204 && s.rejected == 1 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let s = stats.stats();
    assert_eq!((s.replied, s.requeued, s.dropped), (203, 0, 0), "{s:?}");
    Ok(())
}
