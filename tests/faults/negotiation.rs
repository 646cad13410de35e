//! The limits the client settles with a scripted server, read from its `tune-ok` on the
//! wire, and then kept: no channel id above `channel_max`, no frame above `frame_max`.

use std::time::Duration;

use serena::proto::connection::Tuning;
use serena::proto::method::connection;
use serena::{Error, open_connection};
use serena_tests::fake_peer::{FakeServer, Offer};

use super::with_peer;

/// One negotiation: what the client wants, what the server proposes, what `tune-ok` must say.
struct TuneCase {
    client: Tuning,
    server: Tuning,
    expected: Tuning,
}

/// A [`Tuning`] from its three limits.
const fn tuning(channel_max: u16, frame_max: u32, heartbeat: u16) -> Tuning {
    Tuning {
        channel_max,
        frame_max,
        heartbeat,
    }
}

#[tokio::test]
async fn tune_ok_carries_the_settled_limits() {
    let cases = [
        // The server's smaller limits win; its heartbeat 0 leaves ours in force.
        TuneCase {
            client: tuning(2047, 131_072, 60),
            server: tuning(5, 8192, 0),
            expected: tuning(5, 8192, 60),
        },
        // "No limit" on our side takes the server's.
        TuneCase {
            client: tuning(0, 0, 60),
            server: tuning(5, 8192, 0),
            expected: tuning(5, 8192, 60),
        },
        // Our smaller limits win.
        TuneCase {
            client: tuning(3, 16_384, 10),
            server: tuning(2047, 131_072, 60),
            expected: tuning(3, 16_384, 10),
        },
        // Heartbeats off on our side stay off whatever the server proposes.
        TuneCase {
            client: tuning(2047, 131_072, 0),
            server: tuning(2047, 131_072, 60),
            expected: tuning(2047, 131_072, 0),
        },
        // A frame size below the protocol minimum is raised to 4096.
        TuneCase {
            client: tuning(2047, 1000, 60),
            server: tuning(2047, 131_072, 60),
            expected: tuning(2047, 4096, 60),
        },
    ];
    for case in cases {
        let server = FakeServer::bind().await.expect("bind");
        let config = server
            .client_config()
            .with_channel_max(case.client.channel_max)
            .with_frame_max(case.client.frame_max)
            .with_heartbeat(Duration::from_secs(u64::from(case.client.heartbeat)));
        let offer = Offer {
            tune: connection::Tune {
                channel_max: case.server.channel_max,
                frame_max: case.server.frame_max,
                heartbeat: case.server.heartbeat,
            },
            ..Offer::default()
        };
        let peer = async {
            let mut p = server.accept().await?;
            let hs = p.handshake(&offer).await?;
            let served = p.serve().await?;
            Ok((hs, served))
        };
        let client = open_connection(&config, async |conn| Ok::<_, Error>(conn.tuning()));
        let ((hs, served), result) = with_peer(peer, client).await;
        let t = &hs.tune_ok;
        let sent = tuning(t.channel_max, t.frame_max, t.heartbeat);
        assert_eq!(
            sent, case.expected,
            "tune-ok for {:?} vs {:?}",
            case.client, case.server
        );
        assert_eq!(result.expect("the connection opens"), case.expected);
        assert!(served.closed_cleanly, "{served:?}");
    }
}

#[tokio::test]
async fn the_settled_limits_are_kept() {
    let server = FakeServer::bind().await.expect("bind");
    let offer = Offer {
        tune: connection::Tune {
            channel_max: 5,
            frame_max: 8192,
            heartbeat: 0,
        },
        ..Offer::default()
    };
    let peer = async {
        let mut p = server.accept().await?;
        p.handshake(&offer).await?;
        let served = p.serve().await?;
        Ok((served, p.largest_frame()))
    };
    let body = vec![7u8; 20_000];
    let config = server.client_config();
    let client = open_connection(&config, async |conn| {
        assert_eq!(conn.frame_max(), 8192);
        let mut channels = Vec::new();
        for _ in 0..5 {
            channels.push(conn.channel().await?);
        }
        let sixth = conn.channel().await.expect_err("only 5 channel ids");
        assert!(
            matches!(sixth, Error::ChannelsExhausted { max: 5 }),
            "{sixth:?}"
        );
        channels[0]
            .basic_publish("", "q", &body, Default::default())
            .await?;
        for ch in channels {
            ch.close().await?;
        }
        Ok::<(), Error>(())
    });
    let ((served, largest_frame), result) = with_peer(peer, client).await;
    result.expect("the connection and the channel work");
    assert_eq!(served.channels_opened, 5);
    assert_eq!((served.publishes, served.body_bytes), (1, 20_000));
    assert!(served.closed_cleanly);
    assert!(largest_frame <= 8192, "a frame of {largest_frame} bytes");
}
