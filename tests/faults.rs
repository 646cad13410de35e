//! Faults: the client notices every way a connection or channel can fail, and never hangs.
//!
//! - [`forced_close`]: an operator closes the connection on the real broker
//!   (`rabbitmqctl close_connection`, reply 320) while publishes await confirms, a consumer
//!   waits, a get/declare loop runs, or a handle-style channel is in use from another task.
//! - [`heartbeat`]: heartbeats against the real broker, on (1 s) and off (0).
//! - [`fake_server`]: a scripted server on a local port that misbehaves one way at a time
//!   (no publisher confirms, only EXTERNAL, silence, garbage, a socket closed mid-frame, a
//!   handshake that stalls).
//! - [`negotiation`]: the limits the client settles in `tune-ok`, read off the wire, and kept.
//! - [`close_handshake`]: `connection.close` / `close-ok` in both directions, on the wire.
//! - [`channel_close`]: a channel the server closed fails every later call at once.
//! - [`hostile`]: a scripted server breaking one rule of AMQP 0-9-1 at a time gets the close
//!   the rule calls for, and the user a typed error.
//! - [`proxy_faults`]: cuts, stalls and latency injected by a TCP proxy between serena and the
//!   real broker, also under a supervisor.
//!
//! Every wait is bounded with `tokio::time::timeout`, so a hang is a test failure, and every
//! assertion is on what a user of the client sees: the scope's error, the calls' results,
//! whether the user's code was cancelled.

use std::time::{Duration, Instant};

use serena::{CloseScope, ConnectionConfig, Error, open_connection};
use serena_tests::cancel::Cancelled;
use serena_tests::fake_peer::PeerResult;
// The real broker's configuration, as opposed to a fake server's `client_config`.
use serena_tests::{config as broker_config, exclusive};

#[path = "faults/channel_close.rs"]
mod channel_close;
#[path = "faults/close_handshake.rs"]
mod close_handshake;
#[path = "faults/fake_server.rs"]
mod fake_server;
#[path = "faults/forced_close.rs"]
mod forced_close;
#[path = "faults/heartbeat.rs"]
mod heartbeat;
#[path = "faults/hostile.rs"]
mod hostile;
#[path = "faults/negotiation.rs"]
mod negotiation;
#[path = "faults/proxy_faults.rs"]
mod proxy_faults;

/// The longest any single test may run before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// Asserts `err` is the broker's forced close of the whole connection (320).
fn assert_forced(err: &Error) {
    let close = err
        .unexpected_close()
        .unwrap_or_else(|| panic!("expected the broker's 320 close, got {err:?}"));
    assert_eq!(close.reply_code, 320, "{close:?}");
    assert_eq!(close.scope, CloseScope::Connection, "{close:?}");
}

/// Runs the peer's script and the client side by side; neither may take longer than
/// [`LIMIT`], and the script must succeed.
async fn with_peer<P, C>(
    peer: impl Future<Output = PeerResult<P>>,
    client: impl Future<Output = C>,
) -> (P, C) {
    let (peer, client) = tokio::time::timeout(LIMIT, async { tokio::join!(peer, client) })
        .await
        .expect("neither the client nor the fake server may hang");
    (peer.expect("the fake server's script"), client)
}

/// A client whose scope body waits forever: only a failure of the connection can end it.
/// The body owns a guard of `cancelled`, so the flag shows whether the body is gone once the
/// scope has returned (even when the connection failed before the body was first polled).
/// Returns the scope's error and when it came.
async fn doomed_client(config: &ConnectionConfig, cancelled: &Cancelled) -> (Error, Instant) {
    let guard = cancelled.guard();
    let result = open_connection(config, async move |_conn| {
        let _guard = guard;
        std::future::pending::<Result<(), Error>>().await
    })
    .await;
    let err = result.expect_err("the connection fails");
    (err, Instant::now())
}
