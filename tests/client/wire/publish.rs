//! Declarations, publishing with confirms, and `basic.get` with ack, reject and nack.

use bytes::BytesMut;
use serena::proto::method::{basic, confirm, exchange, queue};
use serena::proto::{BasicProperties, FieldTable, Frame, FrameDecoder, Method, content};
use serena_tests::unique_name;
use serena_tests::wire::{GUEST, WireConn};

use super::headers::every_field_type;
use super::{TestResult, ack, declare_queue, delete_queue, expect_confirm, get, message_count};

const MIB: usize = 1024 * 1024;

/// Every one of the 14 basic properties set, `priority` to 0 and `content_type` to "" so that
/// "set to the zero value" is told apart from "absent".
fn all_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some("".into()),
        content_encoding: Some("identity".into()),
        headers: Some(every_field_type()),
        delivery_mode: Some(2),
        priority: Some(0),
        correlation_id: Some("corr-1".into()),
        reply_to: Some("serena-replies".into()),
        expiration: Some("600000".into()),
        message_id: Some("msg-1".into()),
        timestamp: Some(1_700_000_123),
        kind: Some("order.created".into()),
        // RabbitMQ refuses a user_id other than the connection's user.
        user_id: Some(GUEST.into()),
        app_id: Some("serena-tests".into()),
        cluster_id: Some("cluster-1".into()),
    }
}

#[test]
fn confirm_select_and_topology_declarations() -> TestResult {
    let mut conn = WireConn::open("wire-topology")?;
    conn.open_channel(1)?;
    expect!(
        conn.rpc(1, confirm::Select { nowait: false })?,
        Method::ConfirmSelectOk(_)
    );

    let source = unique_name("topology-src");
    let destination = unique_name("topology-dst");
    for name in [&source, &destination] {
        let declare = exchange::Declare {
            exchange: name.as_str().into(),
            kind: "topic".into(),
            durable: false,
            auto_delete: true,
            arguments: FieldTable::new().with("alternate-exchange", unique_name("nowhere")),
            ..Default::default()
        };
        expect!(conn.rpc(1, declare)?, Method::ExchangeDeclareOk(_));
    }

    let q = unique_name("topology-q");
    let arguments = FieldTable::new()
        .with("x-max-priority", 9u8)
        .with("x-message-ttl", 600_000i32);
    let ok = declare_queue(&mut conn, 1, &q, arguments.clone())?;
    assert_eq!(ok.queue, q.as_str());
    assert_eq!((ok.message_count, ok.consumer_count), (0, 0));
    // The same declaration again is fine and says the same.
    assert_eq!(declare_queue(&mut conn, 1, &q, arguments)?, ok);

    // A server-named queue.
    let named = declare_queue(&mut conn, 1, "", FieldTable::new())?;
    assert!(named.queue.starts_with("amq.gen-"), "{named:?}");
    assert_eq!(delete_queue(&mut conn, 1, &named.queue)?, 0);

    // source --"order.#"--> destination --"order.*"--> q, and "audit.#" bindings besides.
    for key in ["order.*", "audit.#"] {
        let bind = queue::Bind {
            queue: q.as_str().into(),
            exchange: destination.as_str().into(),
            routing_key: key.into(),
            nowait: false,
            arguments: FieldTable::new(),
        };
        expect!(conn.rpc(1, bind)?, Method::QueueBindOk(_));
    }
    // Two exchange-to-exchange bindings, so that removing one leaves the auto-delete source.
    for key in ["order.#", "audit.#"] {
        let e2e = exchange::Bind {
            destination: destination.as_str().into(),
            source: source.as_str().into(),
            routing_key: key.into(),
            nowait: false,
            arguments: FieldTable::new(),
        };
        expect!(conn.rpc(1, e2e)?, Method::ExchangeBindOk(_));
    }

    // Routed through both exchanges into the queue.
    conn.publish(
        1,
        &source,
        "order.created",
        &BasicProperties::default(),
        b"1",
    )?;
    expect_confirm(&mut conn, 1, 1)?;
    assert_eq!(message_count(&mut conn, 1, &q)?, 1);

    let unbind = exchange::Unbind {
        destination: destination.as_str().into(),
        source: source.as_str().into(),
        routing_key: "order.#".into(),
        nowait: false,
        arguments: FieldTable::new(),
    };
    expect!(conn.rpc(1, unbind)?, Method::ExchangeUnbindOk(_));
    // Unroutable now, but still confirmed.
    conn.publish(
        1,
        &source,
        "order.created",
        &BasicProperties::default(),
        b"2",
    )?;
    expect_confirm(&mut conn, 1, 2)?;
    assert_eq!(message_count(&mut conn, 1, &q)?, 1);

    let unbind = queue::Unbind {
        queue: q.as_str().into(),
        exchange: destination.as_str().into(),
        routing_key: "audit.#".into(),
        arguments: FieldTable::new(),
    };
    expect!(conn.rpc(1, unbind)?, Method::QueueUnbindOk(_));

    // The source goes first: deleting the destination would unbind the auto-delete source
    // from its last binding and so delete it.
    for name in [&source, &destination] {
        let delete = exchange::Delete {
            exchange: name.as_str().into(),
            if_unused: false,
            nowait: false,
        };
        expect!(conn.rpc(1, delete)?, Method::ExchangeDeleteOk(_));
    }
    assert_eq!(delete_queue(&mut conn, 1, &q)?, 1);
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}

#[test]
fn publish_with_confirms_then_get_ack_reject_nack_purge_delete() -> TestResult {
    let mut conn = WireConn::open("wire-publish-get")?;
    conn.open_channel(1)?;
    expect!(
        conn.rpc(1, confirm::Select { nowait: false })?,
        Method::ConfirmSelectOk(_)
    );
    let q = unique_name("publish-q");
    let arguments = FieldTable::new()
        .with("x-max-priority", 5i32)
        .with("x-message-ttl", 600_000i32);
    declare_queue(&mut conn, 1, &q, arguments)?;

    // A topic exchange and a queue with non-ASCII names, bound by a non-ASCII pattern.
    let x = unique_name("publish-x-ключ");
    let declare = exchange::Declare {
        exchange: x.as_str().into(),
        kind: "topic".into(),
        auto_delete: true,
        ..Default::default()
    };
    expect!(conn.rpc(1, declare)?, Method::ExchangeDeclareOk(_));
    let unicode_q = unique_name("ünïcødé-队列-🐇");
    assert_eq!(
        declare_queue(&mut conn, 1, &unicode_q, FieldTable::new())?.queue,
        unicode_q.as_str()
    );
    let bind = queue::Bind {
        queue: unicode_q.as_str().into(),
        exchange: x.as_str().into(),
        routing_key: "заказ.#".into(),
        nowait: false,
        arguments: FieldTable::new(),
    };
    expect!(conn.rpc(1, bind)?, Method::QueueBindOk(_));

    // (a) empty body, no properties; (b) every property; (c) 1 MiB; each confirmed in turn.
    let big: Vec<u8> = (0..MIB).map(|i| (i * 7 % 256) as u8).collect();
    let sent = [
        (BasicProperties::default(), Vec::new()),
        (all_properties(), b"all the properties".to_vec()),
        (
            BasicProperties::default().with_message_id("big"),
            big.clone(),
        ),
    ];
    for (tag, (properties, body)) in (1..).zip(&sent) {
        conn.publish(1, "", &q, properties, body)?;
        expect_confirm(&mut conn, 1, tag)?;
    }
    // The 1 MiB body leaves in frames of at most frame_max: count them as the codec cut them.
    let mut wire = BytesMut::new();
    let publish: Method = basic::Publish::default().into();
    let frame_max = conn.frame_max();
    content::encode_content(&mut wire, 1, &publish, &sent[2].0, &big, frame_max)?;
    let decoder = FrameDecoder::new(frame_max);
    let mut body_frames = 0;
    while let Some(frame) = decoder.decode(&mut wire)? {
        if let Frame::Body { payload, .. } = frame {
            assert!(payload.len() + 8 <= frame_max as usize);
            body_frames += 1;
        }
    }
    let expected_frames = (MIB as u64).div_ceil(u64::from(frame_max) - 8);
    assert_eq!(body_frames, expected_frames);
    // (d) non-ASCII routing key through the topic exchange.
    let unicode_key = "заказ.créé.日本";
    conn.publish(
        1,
        &x,
        unicode_key,
        &BasicProperties::default(),
        "données".as_bytes(),
    )?;
    expect_confirm(&mut conn, 1, 4)?;

    // Each message comes back with identical properties and body.
    let (ok, props, body) = get(&mut conn, 1, &q)?.expect("message (a)");
    assert_eq!(
        (ok.delivery_tag, ok.redelivered, ok.message_count),
        (1, false, 2)
    );
    assert_eq!(
        (ok.exchange.as_str(), ok.routing_key.as_str()),
        ("", q.as_str())
    );
    assert_eq!((props, body.len()), (sent[0].0.clone(), 0));
    ack(&mut conn, 1, 1)?;

    let (ok, props, body) = get(&mut conn, 1, &q)?.expect("message (b)");
    assert_eq!((ok.delivery_tag, ok.message_count), (2, 1));
    assert_eq!(props, sent[1].0);
    assert_eq!(props.priority, Some(0));
    assert_eq!(props.content_type.as_deref(), Some(""));
    assert_eq!(&body[..], &sent[1].1[..]);
    // Rejected with requeue: it comes back, marked redelivered.
    conn.send(
        1,
        basic::Reject {
            delivery_tag: 2,
            requeue: true,
        },
    )?;
    let (ok, props, _) = get(&mut conn, 1, &q)?.expect("message (b) again");
    assert_eq!((ok.delivery_tag, ok.redelivered), (3, true));
    assert_eq!(props, sent[1].0);
    // Nacked without requeue: gone.
    conn.send(
        1,
        basic::Nack {
            delivery_tag: 3,
            multiple: false,
            requeue: false,
        },
    )?;

    let frames_before = conn.body_frames();
    let (ok, props, body) = get(&mut conn, 1, &q)?.expect("message (c)");
    assert_eq!((ok.delivery_tag, ok.message_count), (4, 0));
    assert_eq!(props, sent[2].0);
    assert_eq!(body.len(), MIB);
    assert!(body[..] == big[..], "the 1 MiB body differs");
    // The broker split it at the negotiated frame_max too, and the assembler joined it.
    assert_eq!(conn.body_frames() - frames_before, expected_frames);
    ack(&mut conn, 1, 4)?;

    assert!(
        get(&mut conn, 1, &q)?.is_none(),
        "the queue should be empty"
    );

    let (ok, props, body) = get(&mut conn, 1, &unicode_q)?.expect("message (d)");
    assert_eq!(
        (ok.exchange.as_str(), ok.routing_key.as_str()),
        (x.as_str(), unicode_key)
    );
    assert_eq!(props, BasicProperties::default());
    assert_eq!(&body[..], "données".as_bytes());
    ack(&mut conn, 1, ok.delivery_tag)?;

    // Purge and delete report their counts.
    for tag in 5..=6 {
        conn.publish(1, "", &q, &BasicProperties::default(), b"to purge")?;
        expect_confirm(&mut conn, 1, tag)?;
    }
    let purge = queue::Purge {
        queue: q.as_str().into(),
        nowait: false,
    };
    let purged = expect!(conn.rpc(1, purge)?, Method::QueuePurgeOk(ok) => ok.message_count);
    assert_eq!(purged, 2);
    conn.publish(1, "", &q, &BasicProperties::default(), b"to delete")?;
    expect_confirm(&mut conn, 1, 7)?;
    assert_eq!(delete_queue(&mut conn, 1, &q)?, 1);
    assert_eq!(delete_queue(&mut conn, 1, &unicode_q)?, 0);
    let delete = exchange::Delete {
        exchange: x.as_str().into(),
        if_unused: false,
        nowait: false,
    };
    expect!(conn.rpc(1, delete)?, Method::ExchangeDeleteOk(_));
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}
