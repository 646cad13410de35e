//! Publishing: server closes and refusals (mismatched redeclare, `immediate`, a full queue's
//! nack), bodies from empty to 16 MiB, unicode and 255-byte names, headers of every type.

use bytes::Bytes;
use serena::proto::{Decimal, EncodeError};

use super::*;

#[tokio::test]
async fn redeclaring_a_durable_queue_as_transient_closes_the_channel_with_406() {
    let q = unique_name("durable");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        // Not exclusive: RabbitMQ makes exclusive queues transient whatever `durable` says.
        // x-expires removes the queue even if this test dies before deleting it.
        let expires = FieldTable::new().with("x-expires", 60_000i32);
        let durable = QueueDeclareOptions::default()
            .with_durable(true)
            .with_arguments(expires.clone());
        let transient = QueueDeclareOptions::default()
            .with_durable(false)
            .with_arguments(expires);
        ch.queue_declare(&q, durable).await?;
        let err = ch
            .queue_declare(&q, transient)
            .await
            .expect_err("durable differs");
        let close = assert_closed(&err, CloseScope::Channel(ch.id()), 406, (50, 10));
        assert!(
            close.reply_text.contains("inequivalent arg 'durable'"),
            "{}",
            close.reply_text
        );
        assert!(!ch.is_open());
        // A later call on the closed channel gets the same error.
        let again = ch.queue_purge(&q).await.expect_err("the channel is closed");
        assert_eq!(again.unexpected_close(), Some(close));

        let ch = conn.channel().await?;
        ch.queue_delete(&q, false, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn immediate_publish_ends_the_connection_scope_with_540() {
    let err = within(
        TEST_LIMIT,
        "connection scope",
        open_connection(&config(), async |conn| {
            conn.open_channel(async |ch| {
                let q = ch.queue_declare("", exclusive()).await?.queue;
                let options = PublishOptions::default().with_immediate(true);
                ch.basic_publish_with("", &q, b"now!", BasicProperties::default(), options)
                    .await?
                    .await
            })
            .await
        }),
    )
    .await
    .expect_err("RabbitMQ does not implement immediate");
    let close = assert_closed(&err, CloseScope::Connection, 540, (60, 40));
    assert_eq!(close.reply_text, "NOT_IMPLEMENTED - immediate=true");
}

#[tokio::test]
async fn reject_publish_overflow_nacks_the_second_message() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let args = FieldTable::new()
            .with("x-max-length", 1i32)
            .with("x-overflow", "reject-publish");
        let q = ch.queue_declare("", exclusive_with(args)).await?.queue;
        publish(&ch, "", &q, b"first").await?;
        let err = publish(&ch, "", &q, b"second")
            .await
            .expect_err("the queue is full");
        assert!(matches!(err, Error::Nacked), "{err:?}");
        assert!(ch.is_open());
        assert_eq!(drain(&ch, &q).await?, ["first"]);
        publish(&ch, "", &q, b"third").await?;
        ch.close().await
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bodies and names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_body_round_trips_through_get_and_consume() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let props = BasicProperties::default().with_message_id("empty");
        ch.basic_publish("", &q, b"", props.clone()).await?;
        let got = ch.basic_get(&q, true).await?.expect("a message");
        assert!(got.body.is_empty());
        assert_eq!(*got.properties, props);

        ch.basic_publish("", &q, b"", props.clone()).await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let d = next_delivery(&mut consumer).await;
        assert!(d.body.is_empty());
        assert_eq!(*d.properties, props);
        d.ack()?;
        drop(consumer);
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn sixteen_mib_body_round_trips_split_at_frame_max() {
    const SIZE: usize = 16 * 1024 * 1024;
    // No heartbeats, so every frame counted below belongs to the message.
    let cfg = config().with_heartbeat(Duration::ZERO);
    let body: Bytes = (0..SIZE).map(|i| (i % 251) as u8).collect();
    with_connection(&cfg, async |conn| {
        let frame_max = conn.frame_max();
        assert_eq!(frame_max, 131_072);
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        ch.basic_publish("", &q, &body, BasicProperties::default())
            .await?;

        let before = conn.heartbeat_stats().frames_received;
        let got = ch.basic_get(&q, true).await?.expect("the big message");
        let frames = conn.heartbeat_stats().frames_received - before;
        assert_eq!(got.body.len(), SIZE);
        assert!(got.body == body, "the body came back different");
        // get-ok, the content header, then bodies of at most frame_max - 8 payload bytes.
        let body_frames = SIZE.div_ceil(frame_max as usize - 8) as u64;
        assert_eq!(frames, 2 + body_frames);
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn unicode_queue_exchange_and_routing_key_round_trip() {
    let q = format!("очередь-✓-キュー-{}", unique_name("unicode"));
    let x = format!("обмен-✓-{}", unique_name("unicode"));
    let key = "ключ.✓.キー";
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        assert_eq!(ch.queue_declare(&q, exclusive()).await?.queue, q);
        ch.exchange_declare(&x, "direct", transient()).await?;
        ch.queue_bind(&q, &x, key, no_args()).await?;

        publish(&ch, &x, key, "привет ✓".as_bytes()).await?;
        let m = ch.basic_get(&q, true).await?.expect("via the exchange");
        assert_eq!(
            (m.exchange.as_str(), m.routing_key.as_str()),
            (x.as_str(), key)
        );
        assert_eq!(&m.body[..], "привет ✓".as_bytes());

        publish(&ch, "", &q, b"direct").await?;
        let m = ch
            .basic_get(&q, true)
            .await?
            .expect("via the default exchange");
        assert_eq!(
            (m.exchange.as_str(), m.routing_key.as_str()),
            ("", q.as_str())
        );

        ch.exchange_delete(&x, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn names_of_255_bytes_work_and_256_is_an_encode_error_that_spares_the_channel() {
    let base = unique_name("long");
    let name255 = format!("{base}-{}", "x".repeat(255 - base.len() - 1));
    let name256 = format!("{name255}y");
    assert_eq!((name255.len(), name256.len()), (255, 256));
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        assert_eq!(
            ch.queue_declare(&name255, exclusive()).await?.queue,
            name255
        );

        let err = ch
            .queue_declare(&name256, exclusive())
            .await
            .expect_err("too long for a short string");
        assert!(
            matches!(
                err,
                Error::Encode(EncodeError::ShortStringTooLong { len: 256, .. })
            ),
            "{err:?}"
        );
        assert!(ch.is_open());
        let err = publish(&ch, "", &name256, b"x")
            .await
            .expect_err("routing key too long");
        assert!(
            matches!(
                err,
                Error::Encode(EncodeError::ShortStringTooLong { len: 256, .. })
            ),
            "{err:?}"
        );

        // Nothing reached the wire: the channel and its confirm numbering are intact.
        publish(&ch, "", &name255, b"still fine").await?;
        let m = ch.basic_get(&name255, true).await?.expect("a message");
        assert_eq!(
            (m.routing_key.as_str(), &m.body[..]),
            (name255.as_str(), &b"still fine"[..])
        );
        assert_eq!(ch.queue_delete(&name255, false, false).await?, 0);
        ch.close().await
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Headers of every field type
// ---------------------------------------------------------------------------------------------

/// One value of every [`FieldValue`] type, scalars and containers, with awkward values.
fn every_field_type() -> FieldTable {
    let scalars = FieldTable::new()
        .with("bool", true)
        .with("i8", -5i8)
        .with("u8", 200u8)
        .with("i16", -300i16)
        .with("u16", 60_000u16)
        .with("i32", -70_000i32)
        .with("u32", 3_000_000_000u32)
        .with("i64", -5_000_000_000_000i64)
        .with("u64", u64::MAX)
        .with("f32", 1.5f32)
        .with("f64", -2.25f64)
        .with(
            "decimal",
            Decimal {
                scale: 2,
                value: 12_345,
            },
        )
        .with("longstr", "héllo ✓")
        .with(
            "bytes",
            FieldValue::ByteArray(Bytes::from_static(&[0, 1, 0xfe, 0xff])),
        )
        .with("timestamp", FieldValue::Timestamp(1_700_000_000))
        .with("void", FieldValue::Void);
    let array: Vec<FieldValue> = scalars.iter().map(|(_, v)| v.clone()).collect();
    scalars.clone().with("array", array).with("table", scalars)
}

/// `headers` as RabbitMQ re-encodes them: every `U64`, however deep, becomes an `I64` with the
/// same bits.
fn as_reencoded(headers: &FieldTable) -> FieldTable {
    fn value(v: &FieldValue) -> FieldValue {
        match v {
            FieldValue::U64(n) => FieldValue::I64(*n as i64),
            FieldValue::Array(a) => FieldValue::Array(a.iter().map(value).collect()),
            FieldValue::Table(t) => {
                FieldValue::Table(t.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            }
            other => other.clone(),
        }
    }
    headers.iter().map(|(k, v)| (k.clone(), value(v))).collect()
}

/// `table` with its top-level entries sorted by key, as dead-lettering leaves headers.
fn sorted_by_key(table: &FieldTable) -> FieldTable {
    let mut entries: Vec<_> = table.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    entries.sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
    entries.into_iter().collect()
}

#[tokio::test]
async fn headers_of_every_field_type_round_trip_unchanged() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let headers = every_field_type();
        let props = BasicProperties::default().with_headers(headers.clone());
        ch.basic_publish("", &q, b"typed", props).await?;
        let m = ch.basic_get(&q, true).await?.expect("a message");
        assert_eq!(m.properties.headers.as_ref(), Some(&headers));
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn headers_reencoded_by_the_broker_keep_every_type_but_u64() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let headers = every_field_type();
        let reencoded = as_reencoded(&headers);

        // A BCC header is stripped, so RabbitMQ encodes the properties anew.
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let with_bcc = headers.clone().with("BCC", FieldValue::Array(Vec::new()));
        let props = BasicProperties::default().with_headers(with_bcc);
        ch.basic_publish("", &q, b"bcc", props).await?;
        let m = ch.basic_get(&q, true).await?.expect("a message");
        assert_eq!(m.properties.headers.as_ref(), Some(&reencoded));

        // Dead-lettering adds x-death, so the properties are encoded anew too.
        let dead = ch.queue_declare("", exclusive()).await?.queue;
        let args = FieldTable::new()
            .with("x-message-ttl", 0i32)
            .with("x-dead-letter-exchange", "")
            .with("x-dead-letter-routing-key", dead.as_str());
        let expiring = ch.queue_declare("", exclusive_with(args)).await?.queue;
        let props = BasicProperties::default().with_headers(headers.clone());
        ch.basic_publish("", &expiring, b"dlx", props).await?;
        wait_ready(&ch, &dead, 1).await?;
        let m = ch.basic_get(&dead, true).await?.expect("dead-lettered");
        let mut got = m.properties.headers.clone().expect("headers");
        assert!(got.remove("x-death").is_some(), "{got:?}");
        for key in [
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
        ] {
            got.remove(key);
        }
        // The rest: re-encoded, and sorted by key at the top level (nested tables keep order).
        assert_eq!(got, sorted_by_key(&reencoded));
        ch.close().await
    })
    .await;
}

/// Large owned bodies go to the socket from their own memory (vectored writes), between the
/// frames of small copied ones, many in flight on one channel: every body arrives whole and
/// in order, at every size around the sharing threshold and the frame size.
#[tokio::test]
async fn shared_and_copied_bodies_interleave_in_order() {
    let threshold = serena::proto::content::SHARED_BODY_MIN;
    let sizes = [
        threshold - 1,
        threshold,
        131_064,
        131_065,
        (1 << 20) + 3,
        0,
        7,
    ];
    let body = |i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
    };
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let mut sent = Vec::new();
        let mut confirms = Vec::new();
        for round in 0..3 {
            for (k, &len) in sizes.iter().enumerate() {
                let i = round * sizes.len() + k;
                let b = body(i, len);
                sent.push(b.clone());
                let props = BasicProperties::default();
                let options = PublishOptions::default();
                let confirm = match i % 3 {
                    0 => {
                        ch.basic_publish_with("", &q, Bytes::from(b), props, options)
                            .await?
                    }
                    1 => ch.basic_publish_with("", &q, b, props, options).await?,
                    _ => ch.basic_publish_with("", &q, &b, props, options).await?,
                };
                confirms.push(confirm);
                // A small borrowed one between every two.
                ch.basic_publish_with("", &q, b"-", BasicProperties::default(), options)
                    .await
                    .map(|c| confirms.push(c))?;
                sent.push(b"-".to_vec());
            }
        }
        for c in confirms {
            within(STEP, "a confirm", c).await?;
        }
        for (n, expected) in sent.iter().enumerate() {
            let got = ch.basic_get(&q, true).await?.expect("a message");
            assert!(
                got.body == expected[..],
                "message {n} came back different ({} bytes, expected {})",
                got.body.len(),
                expected.len()
            );
        }
        assert!(ch.basic_get(&q, true).await?.is_none());
        ch.close().await
    })
    .await;
}
