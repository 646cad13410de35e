//! Reaching the broker other ways than one TCP address: a Unix socket (through a relay from
//! a socket file to the broker), host lists with dead and silent brokers in them; secret
//! rotation on a live connection (`update-secret`) and the EXTERNAL mechanism's wire format
//! (a scripted peer plays the refusals RabbitMQ's default setup never makes).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serena::proto::Method;
use serena::proto::method::connection;
use serena::{
    AuthMechanism, ConnectionConfig, Endpoint, Error, QueueDeclareOptions, open_connection,
};
use serena_tests::fake_peer::{FakeServer, Offer, PeerError};
use serena_tests::unique_name;
use tokio::net::{TcpListener, TcpStream, UnixListener};

/// Bound for every whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn broker() -> Endpoint {
    let addr = serena_tests::broker_addr();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    Endpoint::new(host, port.parse().expect("port"))
}

/// The test broker, the connection named `name`, connecting for at most 5 s per broker.
fn config(name: &str) -> ConnectionConfig {
    serena_tests::config(name).with_connection_timeout(Duration::from_secs(5))
}

/// A local port nothing listens on: bound, then released.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Declares a queue, publishes with a confirm, gets the message back: the connection works.
async fn round_trip(config: &ConnectionConfig) -> Result<Endpoint, Error> {
    let q = unique_name("connecting");
    open_connection(config, async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, QueueDeclareOptions::default().with_auto_delete(true))
                .await?;
            ch.basic_publish("", &q, b"over there", Default::default())
                .await?;
            let got = ch.basic_get(&q, true).await?.expect("the message");
            assert_eq!(&got.body[..], b"over there");
            ch.queue_delete(&q, false, false).await?;
            Ok::<_, Error>(conn.endpoint().clone())
        })
        .await
    })
    .await
}

/// A Unix socket file whose connections are piped to the broker's TCP port.
struct Relay {
    path: PathBuf,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn start() -> Relay {
        let path = std::env::temp_dir().join(format!("{}.sock", unique_name("relay")));
        let listener = UnixListener::bind(&path).expect("bind the socket file");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let broker = broker();
                    if let Ok(mut upstream) =
                        TcpStream::connect((broker.host.as_str(), broker.port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Relay {
            path,
            accepted,
            task,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn a_host_that_is_a_path_connects_over_a_unix_socket() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let relay = Relay::start();
        let path = relay.path.to_str().expect("a UTF-8 path").to_owned();
        let cfg = config(&unique_name("unix")).with_host(path.clone());
        let reached = round_trip(&cfg)
            .await
            .expect("a connection over the socket");
        assert!(reached.is_unix_socket(), "{reached}");
        assert_eq!(reached.host, path);
        assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);

        // The same through a URI, the path percent-encoded as the host.
        let uri = format!(
            "amqp://guest:guest@{}/%2f?connection_name={}",
            path.replace('/', "%2F"),
            unique_name("unix-uri")
        );
        let cfg = ConnectionConfig::from_uri(&uri).expect("a URI");
        assert_eq!(cfg.addr(), format!("unix:{path}"));
        round_trip(&cfg)
            .await
            .expect("a connection over the socket");
        assert_eq!(relay.accepted.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("within the test timeout");
}

#[tokio::test]
async fn a_missing_socket_file_is_an_io_error() {
    let cfg = config("absent").with_host(
        std::env::temp_dir()
            .join(format!("{}.sock", unique_name("absent")))
            .to_str()
            .expect("UTF-8")
            .to_owned(),
    );
    let err = tokio::time::timeout(
        TEST_TIMEOUT,
        open_connection(&cfg, async |_| Ok::<_, Error>(())),
    )
    .await
    .expect("no hang")
    .expect_err("nothing listens there");
    match err {
        Error::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dead_broker_in_the_list_is_skipped() {
    let dead = Endpoint::new("127.0.0.1", closed_port().await);
    let cfg = config(&unique_name("dead-first"))
        .with_host(dead.host.clone())
        .with_port(dead.port)
        .with_more_hosts(vec![broker()]);
    let reached = tokio::time::timeout(TEST_TIMEOUT, round_trip(&cfg))
        .await
        .expect("no hang")
        .expect("the second broker answers");
    assert_eq!(reached, broker());
}

#[tokio::test]
async fn a_silent_broker_costs_one_connect_timeout() {
    // Accepts TCP (the kernel does, into the backlog) and never speaks AMQP.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let limit = Duration::from_millis(500);
    let cfg = config(&unique_name("silent-first"))
        .with_host("127.0.0.1")
        .with_port(silent_port)
        .with_more_hosts(vec![broker()])
        .with_connection_timeout(limit);
    let started = Instant::now();
    let reached = tokio::time::timeout(TEST_TIMEOUT, round_trip(&cfg))
        .await
        .expect("no hang")
        .expect("the second broker answers");
    let took = started.elapsed();
    assert_eq!(reached, broker());
    assert!(
        took >= limit,
        "the silent broker was given up after {took:?}"
    );
    assert!(
        took < limit + Duration::from_secs(5),
        "moving on took {took:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn when_every_broker_fails_each_attempt_is_reported() {
    let (a, b) = (closed_port().await, closed_port().await);
    let uri = format!("amqp://guest:secret-pw@127.0.0.1:{a},127.0.0.1:{b}/%2f");
    let cfg = ConnectionConfig::from_uri(&uri).expect("a URI");
    let err = tokio::time::timeout(
        TEST_TIMEOUT,
        open_connection(&cfg, async |_| Ok::<_, Error>(())),
    )
    .await
    .expect("no hang")
    .expect_err("nothing listens");
    let Error::AllHostsFailed(attempts) = &err else {
        panic!("expected AllHostsFailed, got {err:?}");
    };
    let tried: Vec<&str> = attempts.iter().map(|t| t.endpoint.as_str()).collect();
    assert_eq!(
        tried,
        [format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")],
        "{err}"
    );
    for t in attempts {
        assert!(
            matches!(&t.error, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{t:?}"
        );
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with("could not connect to any of 2 brokers"),
        "{shown}"
    );
    assert!(!shown.contains("secret-pw"), "{shown}");
}

#[tokio::test]
async fn update_secret_rotates_the_password_on_a_live_connection() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        open_connection(&config(&unique_name("secret")), async |conn| {
            conn.update_secret("guest", "rotation")
                .await
                .expect("the broker answers update-secret-ok");
            // And again: each call waits for its own update-secret-ok.
            conn.update_secret("guest", "second rotation")
                .await
                .expect("accepted again");
            conn.open_channel(async |ch| {
                ch.queue_declare("", QueueDeclareOptions::default()).await
            })
            .await
            .expect("the connection works after the rotation");
            Ok::<_, Error>(())
        })
        .await
        .expect("a clean close");
    })
    .await
    .expect("within the test timeout");
}

/// RabbitMQ's internal user database accepts any new secret; a token backend refuses an
/// invalid one by closing the connection with 530, which a scripted peer plays here.
#[tokio::test]
async fn a_refused_secret_fails_update_secret_with_the_close() {
    let server = FakeServer::bind().await.expect("bind");
    let client = async {
        open_connection(&server.client_config(), async |conn| {
            conn.update_secret("token-2", "expiring").await
        })
        .await
    };
    let peer = async {
        let mut peer = server.accept().await?;
        peer.handshake(&Offer::default()).await?;
        match peer.recv_connection_method().await? {
            Method::ConnectionUpdateSecret(u) => {
                assert_eq!(u.new_secret.as_bytes().as_ref(), b"token-2");
                assert_eq!(u.reason.as_str(), "expiring");
            }
            other => return Err(PeerError::Unexpected(format!("{other:?}"))),
        }
        peer.send(
            0,
            connection::Close {
                reply_code: 530,
                reply_text: "NOT_ALLOWED - New secret was refused by one of the backends".into(),
                class_id: 10,
                method_id: 70,
            },
        )
        .await?;
        match peer.recv_connection_method().await? {
            Method::ConnectionCloseOk(_) => Ok(()),
            other => Err(PeerError::Unexpected(format!(
                "{other:?}, expected close-ok"
            ))),
        }
    };
    let (client, peer) = tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(client, peer) })
        .await
        .expect("no hang");
    peer.expect("the peer's script");
    // The scope ends with the server's close, whichever of the call and the scope sees it.
    let err = match client {
        Ok(()) => panic!("the refused secret was reported as accepted"),
        Err(e) => e,
    };
    assert_eq!(err.reply_code(), Some(530), "{err:?}");
}

#[tokio::test]
async fn external_login_sends_the_mechanism_and_no_credentials() {
    let server = FakeServer::bind().await.expect("bind");
    let cfg = server
        .client_config()
        .with_auth_mechanism(AuthMechanism::External);
    let client = open_connection(&cfg, async |_| Ok::<_, Error>(()));
    let peer = async {
        let mut peer = server.accept().await?;
        let offer = Offer {
            mechanisms: "EXTERNAL PLAIN".into(),
            ..Offer::default()
        };
        let handshake = peer.handshake(&offer).await?;
        peer.serve().await?;
        Ok::<_, PeerError>(handshake.start_ok)
    };
    let (client, start_ok) =
        tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(client, peer) })
            .await
            .expect("no hang");
    client.expect("a connection");
    let start_ok = start_ok.expect("the peer's script");
    assert_eq!(start_ok.mechanism.as_str(), "EXTERNAL");
    assert!(start_ok.response.as_bytes().is_empty());

    // A server without EXTERNAL: refused before anything is sent.
    let server = FakeServer::bind().await.expect("bind");
    let cfg = server
        .client_config()
        .with_auth_mechanism(AuthMechanism::External);
    let client = open_connection(&cfg, async |_| Ok::<_, Error>(()));
    let peer = async {
        let mut peer = server.accept().await?;
        peer.expect_protocol_header().await?;
        peer.send_start(&Offer::default()).await?;
        peer.expect_eof().await
    };
    let (client, peer) = tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(client, peer) })
        .await
        .expect("no hang");
    peer.expect("the client hangs up");
    match client {
        Err(Error::NoCommonMechanism { offered }) => assert_eq!(offered, "PLAIN AMQPLAIN"),
        other => panic!("expected NoCommonMechanism, got {other:?}"),
    }
}

/// A [`Connector`] that reaches the test broker through an in-process pipe, whatever the
/// endpoint says, and fails on purpose for endpoints on port 1. It counts its calls.
struct Piped {
    calls: Arc<AtomicUsize>,
}

impl serena::Connector for Piped {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> serena::ConnectFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if endpoint.port == 1 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "port 1 refused on purpose",
                ));
            }
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let broker = TcpStream::connect(serena_tests::broker_addr()).await?;
            tokio::spawn(async move {
                let (mut theirs, mut broker) = (theirs, broker);
                let _ = tokio::io::copy_bidirectional(&mut theirs, &mut broker).await;
            });
            Ok(Box::new(ours) as Box<dyn serena::ByteStream>)
        })
    }
}

#[tokio::test]
async fn a_connector_opens_every_stream_in_place_of_tcp() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Neither host resolves: only the connector can reach the broker.
    let config = config("serena-tests connector")
        .with_host("broker.invalid")
        .with_port(1)
        .with_more_hosts(vec![Endpoint::new("second.invalid", 5672)])
        .with_connector(Piped {
            calls: calls.clone(),
        });
    let reached = tokio::time::timeout(TEST_TIMEOUT, round_trip(&config))
        .await
        .expect("in time")
        .expect("through the connector");
    assert_eq!(reached, Endpoint::new("second.invalid", 5672));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the refused endpoint, then the second"
    );
}

#[tokio::test]
async fn a_connector_that_never_answers_costs_one_connect_timeout() {
    struct Silent;
    impl serena::Connector for Silent {
        fn connect<'a>(&'a self, _: &'a Endpoint) -> serena::ConnectFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    let config = config("serena-tests silent connector")
        .with_connection_timeout(Duration::from_millis(300))
        .with_connector(Silent);
    let started = Instant::now();
    let result = open_connection(&config, async |_| Ok::<_, Error>(())).await;
    assert!(
        matches!(result, Err(Error::ConnectTimeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_connector_and_tls_together_are_a_configuration_error() {
    let config = config("serena-tests connector tls")
        .with_tls(Some(serena::TlsOptions::default()))
        .with_connector(Piped {
            calls: Arc::default(),
        });
    let result = open_connection(&config, async |_| Ok::<_, Error>(())).await;
    assert!(
        matches!(&result, Err(Error::Config(m)) if m.contains("connector")),
        "{result:?}"
    );
}
