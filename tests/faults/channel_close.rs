//! A channel the server closed (404 on a passive declare) stays closed: every later call on
//! the handle fails at once with the same [`UnexpectedCloseError`](serena::UnexpectedCloseError),
//! while the connection and its other channels carry on. A handle dropped as its scope ends
//! does not spoil the connection's clean close.

use std::time::Duration;

use serena::{CloseScope, ConsumeOptions, Error, QueueDeclareOptions, open_connection};
use serena_tests::unique_name;
use tokio::time::timeout;

use super::{LIMIT, broker_config, exclusive};

/// How long a call on a dead channel may take: it must not reach the broker.
const AT_ONCE: Duration = Duration::from_millis(500);

/// Runs `call` and returns its error, failing if it takes longer than [`AT_ONCE`] or succeeds.
async fn fails_at_once<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = serena::Result<T>>,
) -> Error {
    timeout(AT_ONCE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} on a closed channel waits"))
        .expect_err(what)
}

#[tokio::test]
async fn calls_after_a_404_fail_at_once_with_the_same_close() {
    let config = broker_config(&unique_name("channel-404"));
    let scope = open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        let missing = unique_name("missing");
        let passive = QueueDeclareOptions::default().with_passive(true);
        let first = ch
            .queue_declare(&missing, passive)
            .await
            .expect_err("the queue does not exist");
        let close = first
            .unexpected_close()
            .expect("an UnexpectedCloseError")
            .clone();
        assert_eq!(close.reply_code, 404);
        assert_eq!(close.scope, CloseScope::Channel(ch.id()));
        assert_eq!((close.class_id, close.method_id), (50, 10));
        assert!(!ch.is_open());

        let same = |e: Error| {
            assert_eq!(e.unexpected_close(), Some(&close), "{e:?}");
        };
        same(fails_at_once("queue.declare", ch.queue_declare("", exclusive())).await);
        same(fails_at_once("basic.get", ch.basic_get(&missing, true)).await);
        same(
            fails_at_once(
                "basic.publish",
                ch.basic_publish("", "x", b"x", Default::default()),
            )
            .await,
        );
        same(
            fails_at_once(
                "basic.consume",
                ch.basic_consume(&missing, ConsumeOptions::default()),
            )
            .await,
        );
        same(fails_at_once("basic.qos", ch.basic_qos(1, false)).await);
        same(fails_at_once("closed()", async { Err::<(), _>(ch.closed().await) }).await);
        same(ch.error().expect("the channel knows why it ended"));
        assert!(!ch.is_open());
        // Closing it again is not an error of its own: it returns at once, at most with the
        // close that already happened.
        match timeout(AT_ONCE, ch.close())
            .await
            .expect("close() returns at once")
        {
            Ok(()) => {}
            Err(e) => same(e),
        }

        // The connection is unharmed, and the id the server freed can be used again without
        // the dead handle interfering when it is dropped.
        let fresh = conn.channel().await?;
        drop(ch);
        let q = fresh.queue_declare("", exclusive()).await?.queue;
        fresh
            .basic_publish("", &q, b"ok", Default::default())
            .await?;
        assert!(fresh.basic_get(&q, true).await?.is_some());
        assert!(fresh.is_open());
        fresh.close().await?;
        Ok::<(), Error>(())
    });
    timeout(LIMIT, scope)
        .await
        .expect("no hang")
        .expect("the connection survives a channel close and the calls behave");
}

/// A handle-style channel dropped just before its scope ends is closed in the background
/// while the connection closes: the scope still ends cleanly.
#[tokio::test]
async fn dropping_a_channel_right_before_the_scope_ends_still_closes_cleanly() {
    let config = broker_config(&unique_name("channel-drop"));
    let scope = open_connection(&config, async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare("", exclusive()).await?;
        drop(ch);
        Ok::<(), Error>(())
    });
    timeout(LIMIT, scope)
        .await
        .expect("no hang")
        .expect("the connection closes cleanly after the channel work");
}
