//! The connection close handshake on the wire, against a scripted server: the client waits
//! for `close-ok` with its socket open, gives up on a server that never sends one without
//! leaving anything behind, and answers a server's `connection.close` with `close-ok`.

use std::time::{Duration, Instant};

use serena::proto::Method;
use serena::proto::method::connection;
use serena::{Error, open_connection};
use serena_tests::fake_peer::{FakeServer, Offer};

use super::{Cancelled, LIMIT, doomed_client, with_peer};

/// After `connection.close` the client must keep its socket open until `close-ok`: RabbitMQ
/// takes a shut-down socket for a client that vanished, abandons the close handshake and
/// resets the connection, so a clean close would end in an I/O error.
#[tokio::test]
async fn the_client_keeps_its_socket_open_until_close_ok() {
    let server = FakeServer::bind().await.expect("bind");
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        let close = p.recv_connection_method().await?;
        assert!(matches!(close, Method::ConnectionClose(_)), "{close:?}");
        // A broker closing channels first takes a moment before its close-ok.
        let shut_early = p.eof_within(Duration::from_millis(300)).await?;
        p.send(0, connection::CloseOk {}).await?;
        if !shut_early {
            p.expect_eof().await?;
        }
        Ok(shut_early)
    };
    let config = server.client_config();
    let client = open_connection(&config, async |_| Ok::<_, Error>(()));
    let (shut_early, result) = with_peer(peer, client).await;
    result.expect("a clean close");
    assert!(
        !shut_early,
        "the client shut its socket down before the server's close-ok"
    );
}

/// A server that never answers `connection.close`: the clean close gives up after its 5 s
/// limit, and nothing of the connection survives the scope: its socket is closed for good,
/// not left half-open with a reader task still attached.
#[tokio::test]
async fn a_close_without_close_ok_gives_up_and_leaves_nothing_behind() {
    let server = FakeServer::bind().await.expect("bind");
    let (scope_done_tx, scope_done) = tokio::sync::oneshot::channel::<()>();
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&Offer::default()).await?;
        let close = p.recv_connection_method().await?;
        assert!(matches!(close, Method::ConnectionClose(_)), "{close:?}");
        // Never answer; once the scope has returned, the socket must be gone.
        tokio::time::timeout(LIMIT, scope_done)
            .await
            .expect("the scope returns")
            .expect("the client side reports");
        Ok(p.write_fails_within(Duration::from_secs(2)).await)
    };
    let config = server.client_config();
    let client = async {
        let began = Instant::now();
        let result = open_connection(&config, async |_| Ok::<_, Error>(())).await;
        let took = began.elapsed();
        let _ = scope_done_tx.send(());
        (result, took)
    };
    let (socket_closed, (result, took)) = with_peer(peer, client).await;
    // The body finished; a server slow to confirm the close does not cost its value.
    result.expect("the body's value, after the close gave up");
    assert!(
        took < Duration::from_secs(8),
        "the close gave up after {took:?}"
    );
    assert!(
        socket_closed,
        "the client's socket is still open after its scope returned"
    );
}

/// A server's `connection.close` ends the scope with its reply code and text, and the client
/// answers it with `close-ok` before it lets go of the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_close_is_answered_with_close_ok_and_reported() {
    // The race between answering and letting go shows in some rounds, not all.
    for round in 0..200 {
        let server = FakeServer::bind().await.expect("bind");
        let cancelled = Cancelled::default();
        let peer = async {
            let mut p = server.accept().await?;
            p.handshake(&Offer::default()).await?;
            p.send(
                0,
                connection::Close {
                    reply_code: 320,
                    reply_text: "CONNECTION_FORCED - fake".into(),
                    class_id: 0,
                    method_id: 0,
                },
            )
            .await?;
            let answer = p.recv_connection_method().await;
            p.drain().await?;
            Ok(answer)
        };
        let config = server.client_config();
        let (answer, (err, _)) = with_peer(peer, doomed_client(&config, &cancelled)).await;
        let close = err.unexpected_close().expect("the server's close");
        assert_eq!(
            (close.reply_code, close.reply_text.as_str()),
            (320, "CONNECTION_FORCED - fake"),
            "round {round}"
        );
        assert!(cancelled.happened(), "round {round}");
        match answer {
            Ok(Method::ConnectionCloseOk(_)) => {}
            other => panic!("round {round}: expected close-ok from the client, got {other:?}"),
        }
    }
}
