//! The tokio client against the real RabbitMQ: scopes, declarations, publishing with
//! confirms, getting, consuming, and every server close a user meets (the tests in this
//! file); the rest of the client's area in one binary, a module each:
//!
//! - [`channel_ops`]: every channel operation with its error paths.
//! - [`lifecycle`]: what a user sees around a close and around a cancelled call.
//! - [`connecting`]: Unix sockets, host lists, `update-secret`, the EXTERNAL mechanism.
//! - [`wire`]: the sans-IO codec against the broker byte for byte, on a plain socket.

use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable};
use serena::{
    CloseScope, ConnectionConfig, ConsumeOptions, Error, PublishOptions, QueueDeclareOptions,
    open_connection,
};
use serena_tests::unique_name;

#[path = "client/channel_ops.rs"]
mod channel_ops;
#[path = "client/connecting.rs"]
mod connecting;
#[path = "client/lifecycle.rs"]
mod lifecycle;
#[path = "client/wire.rs"]
mod wire;

/// The test broker; every connection of these tests has the same name.
fn config() -> ConnectionConfig {
    serena_tests::config("serena-tests")
}

fn auto_delete() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_auto_delete(true)
}

#[tokio::test]
async fn publish_confirm_get_ack_roundtrip() {
    let q = unique_name("roundtrip");
    let got = open_connection(&config(), async |conn| {
        assert!(conn.server_has_capability("publisher_confirms"));
        assert_eq!(conn.frame_max(), 131_072);
        conn.open_channel(async |ch| {
            let ok = ch.queue_declare(&q, auto_delete()).await?;
            assert_eq!((ok.queue.as_str(), ok.message_count), (q.as_str(), 0));
            let props = BasicProperties::default()
                .with_content_type("text/plain")
                .with_priority(0)
                .with_headers(FieldTable::new().with("n", 7i32));
            ch.basic_publish("", &q, b"hello", props.clone()).await?;
            let msg = ch.basic_get(&q, false).await?.expect("one message");
            assert_eq!(&msg.body[..], b"hello");
            assert_eq!(*msg.properties, props);
            assert_eq!(msg.message_count, 0);
            msg.ack()?;
            assert!(ch.basic_get(&q, false).await?.is_none());
            ch.queue_delete(&q, false, false).await
        })
        .await
    })
    .await
    .expect("connection");
    assert_eq!(got, 0);
}

#[tokio::test]
async fn missing_queue_closes_the_channel_with_404_and_the_connection_lives_on() {
    let q = unique_name("missing");
    open_connection(&config(), async |conn| {
        let err = conn
            .open_channel(async |ch| {
                ch.queue_declare(&q, QueueDeclareOptions::default().with_passive(true))
                    .await
            })
            .await
            .expect_err("the channel is closed by the server");
        let close = err.unexpected_close().expect("an UnexpectedCloseError");
        assert_eq!(close.reply_code, 404);
        assert!(matches!(close.scope, CloseScope::Channel(_)));
        assert_eq!((close.class_id, close.method_id), (50, 10));
        assert!(close.reply_text.contains(&q), "{}", close.reply_text);
        // The connection is still good for a new channel.
        conn.open_channel(async |ch| ch.queue_declare("", auto_delete()).await)
            .await
            .expect("a new channel and its declare");
        Ok::<_, Error>(())
    })
    .await
    .expect("connection survives a channel close");
}

#[tokio::test]
async fn unroutable_mandatory_publish_returns_the_message() {
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            let err = ch
                .basic_publish("", &unique_name("nowhere"), b"lost?", Default::default())
                .await
                .expect_err("unroutable");
            let Error::Returned(r) = err else {
                panic!("expected Returned, got {err:?}")
            };
            assert_eq!(r.reply_code, 312);
            assert_eq!(&r.body[..], b"lost?");
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection and channel");
}

#[tokio::test]
async fn thousand_concurrent_publishes_on_one_channel_are_all_confirmed() {
    let q = unique_name("many");
    let count = open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, auto_delete()).await?;
            let mut confirms = Vec::new();
            for i in 0..1000u32 {
                let c = ch
                    .basic_publish_with(
                        "",
                        &q,
                        i.to_be_bytes(),
                        Default::default(),
                        PublishOptions::default(),
                    )
                    .await?;
                confirms.push(c);
            }
            for c in confirms {
                c.await?;
            }
            let ok = ch
                .queue_declare(&q, QueueDeclareOptions::default().with_passive(true))
                .await?;
            ch.queue_delete(&q, false, false).await?;
            Ok::<_, Error>(ok.message_count)
        })
        .await
    })
    .await
    .expect("connection");
    assert_eq!(count, 1000);
}

#[tokio::test]
async fn consumer_receives_in_order_and_ends_when_its_queue_is_deleted() {
    let q = unique_name("consume");
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, QueueDeclareOptions::default()).await?;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            for i in 0..50u8 {
                ch.basic_publish("", &q, [i], Default::default()).await?;
            }
            for i in 0..50u8 {
                let d = consumer.next().await.expect("item")?;
                assert_eq!(&d.body[..], &[i]);
                d.ack()?;
            }
            conn.open_channel(async |other| other.queue_delete(&q, false, false).await)
                .await?;
            let end = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .expect("cancel arrives")
                .expect("an end item");
            assert!(matches!(end, Err(Error::ConsumerCancelled(_))), "{end:?}");
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

#[tokio::test]
async fn wrong_password_is_access_refused() {
    let cfg = config().with_password(serena::Password::new("not-the-password"));
    let err = open_connection(&cfg, async |_| Ok::<_, Error>(()))
        .await
        .expect_err("refused");
    assert_eq!(err.reply_code(), Some(403), "{err:?}");
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let cfg = config().with_virtual_host(unique_name("no-such-vhost"));
    let err = open_connection(&cfg, async |_| Ok::<_, Error>(()))
        .await
        .expect_err("refused");
    assert_eq!(err.reply_code(), Some(530), "{err:?}");
}

#[tokio::test]
async fn cancelled_consumer_drains_then_ends_cleanly() {
    let q = unique_name("cancel");
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, QueueDeclareOptions::default()).await?;
            let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            ch.basic_publish("", &q, b"one", Default::default()).await?;
            let first = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .expect("delivery arrives")
                .expect("an item")?;
            first.ack()?;
            consumer.cancel().await?;
            assert!(
                consumer.next().await.is_none(),
                "ends with None after our cancel"
            );
            // Nothing is consumed any more: a new message stays in the queue.
            ch.basic_publish("", &q, b"two", Default::default()).await?;
            let left = ch.basic_get(&q, true).await?.expect("still queued");
            assert_eq!(&left.body[..], b"two");
            ch.queue_delete(&q, false, false).await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

#[tokio::test]
async fn nan_header_is_refused_before_it_can_kill_the_connection() {
    use serena::proto::{EncodeError, FieldValue};
    let q = unique_name("nan");
    open_connection(&config(), async |conn| {
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, serena_tests::exclusive()).await?;
            let headers = FieldTable::new()
                .with("fine", 1.5f64)
                .with("nested", vec![FieldValue::F32(f32::NAN)]);
            let err = ch
                .basic_publish("", &q, b"x", BasicProperties::default().with_headers(headers))
                .await
                .expect_err("refused");
            assert!(
                matches!(&err, Error::Encode(EncodeError::NonFiniteFloat { key, .. }) if key == "nested"),
                "{err:?}"
            );
            // Nothing was sent; the channel and connection carry on.
            ch.basic_publish("", &q, b"ok", Default::default()).await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}

#[tokio::test]
async fn amqplain_login_and_uri_settings_work_against_the_broker() {
    let uri = format!(
        "amqp://guest:guest@{}/%2f?heartbeat=7&frame_max=8192&channel_max=9&auth_mechanism=amqplain",
        serena_tests::broker_addr()
    );
    let cfg = ConnectionConfig::from_uri(&uri).expect("uri");
    assert_eq!(cfg.auth_mechanism, serena::AuthMechanism::AmqPlain);
    let q = unique_name("amqplain");
    open_connection(&cfg, async |conn| {
        let t = conn.tuning();
        assert_eq!((t.heartbeat, t.frame_max, t.channel_max), (7, 8192, 9));
        assert_eq!(conn.heartbeat_stats().interval, Duration::from_secs(7));
        assert_eq!(
            conn.server_properties()
                .get("product")
                .and_then(|v| v.as_str()),
            Some("RabbitMQ")
        );
        conn.open_channel(async |ch| {
            ch.queue_declare(&q, serena_tests::exclusive()).await?;
            // 20 kB at frame_max 8192: split into three body frames and joined again.
            let body = vec![7u8; 20_000];
            ch.basic_publish("", &q, &body, Default::default()).await?;
            let got = ch.basic_get(&q, true).await?.expect("message");
            assert_eq!(got.body.len(), body.len());
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("connection");
}
