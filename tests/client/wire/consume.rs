//! Consumers: QoS, consume, deliveries, cancel from either side.

use serena::proto::method::basic;
use serena::proto::{BasicProperties, FieldTable, Method};
use serena_tests::unique_name;
use serena_tests::wire::WireConn;

use super::{TestResult, declare_queue, delete_queue, message_count};

#[test]
fn qos_consume_deliver_ack_and_cancel() -> TestResult {
    let mut conn = WireConn::open("wire-consume")?;
    conn.open_channel(1)?;
    let q = unique_name("consume-q");
    declare_queue(&mut conn, 1, &q, FieldTable::new())?;

    let qos = basic::Qos {
        prefetch_size: 0,
        prefetch_count: 10,
        global: false,
    };
    expect!(conn.rpc(1, qos)?, Method::BasicQosOk(_));
    let tag = unique_name("ctag");
    let consume = basic::Consume {
        queue: q.as_str().into(),
        consumer_tag: tag.as_str().into(),
        arguments: FieldTable::new().with("x-priority", 3i32),
        ..Default::default()
    };
    let ok = expect!(conn.rpc(1, consume)?, Method::BasicConsumeOk(ok) => ok);
    assert_eq!(ok.consumer_tag, tag.as_str());

    let bodies: [&[u8]; 3] = [b"", b"second", &[0xAB; 10_000]];
    for (i, body) in bodies.iter().enumerate() {
        let properties = BasicProperties::default().with_message_id(format!("m{i}"));
        conn.publish(1, "", &q, &properties, body)?;
    }
    for (i, body) in bodies.iter().enumerate() {
        let message = conn.recv_content(1)?;
        let deliver = expect!(message.method, Method::BasicDeliver(d) => d);
        assert_eq!(deliver.consumer_tag, tag.as_str());
        assert_eq!(deliver.delivery_tag, i as u64 + 1);
        assert!(!deliver.redelivered);
        assert_eq!(
            (deliver.exchange.as_str(), deliver.routing_key.as_str()),
            ("", q.as_str())
        );
        assert_eq!(
            message.properties.message_id.as_deref(),
            Some(format!("m{i}").as_str())
        );
        assert_eq!(&message.body[..], *body);
    }
    conn.send(
        1,
        basic::Ack {
            delivery_tag: 3,
            multiple: true,
        },
    )?;

    let cancel = basic::Cancel {
        consumer_tag: tag.as_str().into(),
        nowait: false,
    };
    let ok = expect!(conn.rpc(1, cancel)?, Method::BasicCancelOk(ok) => ok);
    assert_eq!(ok.consumer_tag, tag.as_str());
    // All three were acknowledged, none is left.
    assert_eq!(delete_queue(&mut conn, 1, &q)?, 0);
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}

#[test]
fn deleting_a_consumed_queue_sends_basic_cancel_to_the_client() -> TestResult {
    let mut conn = WireConn::open("wire-consumer-cancel-notify")?;
    conn.open_channel(1)?;
    conn.open_channel(2)?;
    let q = unique_name("cancel-notify-q");
    declare_queue(&mut conn, 1, &q, FieldTable::new())?;
    let consume = basic::Consume {
        queue: q.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    // An empty tag asks the broker to make one up.
    let tag = expect!(conn.rpc(1, consume)?, Method::BasicConsumeOk(ok) => ok.consumer_tag);
    assert!(tag.starts_with("amq.ctag-"), "{tag:?}");

    // Deleted from another channel, the queue takes its consumer with it; we announced
    // consumer_cancel_notify, so the broker tells the consumer's channel.
    assert_eq!(delete_queue(&mut conn, 2, &q)?, 0);
    let cancel = expect!(conn.recv_method(1)?, Method::BasicCancel(c) => c);
    assert_eq!(cancel.consumer_tag, tag);
    conn.close_channel(2)?;
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}

/// The fact ack folding rests on (see `serena::proto::connection::Connection::settle`):
/// RabbitMQ takes `ack(tag, multiple)` only when `tag` itself is still unacknowledged. A
/// multiple ack covers every outstanding delivery up to its tag, skipping those already
/// settled, but one whose own tag was acked before closes the channel with 406.
#[test]
fn a_multiple_ack_needs_its_own_tag_outstanding() -> TestResult {
    let mut conn = WireConn::open("wire-multiple-ack")?;
    conn.open_channel(1)?;
    let q = unique_name("multi-ack-q");
    declare_queue(&mut conn, 1, &q, FieldTable::new())?;
    for i in 0..5u8 {
        conn.publish(1, "", &q, &BasicProperties::default(), &[i])?;
    }
    let consume = basic::Consume {
        queue: q.as_str().into(),
        ..Default::default()
    };
    expect!(conn.rpc(1, consume)?, Method::BasicConsumeOk(_));
    for tag in 1..=5 {
        let d = expect!(conn.recv_content(1)?.method, Method::BasicDeliver(d) => d);
        assert_eq!(d.delivery_tag, tag);
    }
    // 2 alone, then 3 with everything before it: 1 and 3 (2 is skipped, not an error).
    conn.send(
        1,
        basic::Ack {
            delivery_tag: 2,
            multiple: false,
        },
    )?;
    conn.send(
        1,
        basic::Ack {
            delivery_tag: 3,
            multiple: true,
        },
    )?;
    // 4 is still outstanding: the channel is fine (a passive declare answers).
    assert_eq!(message_count(&mut conn, 1, &q)?, 0);
    // 3 again, multiple: its own tag is gone.
    conn.send(
        1,
        basic::Ack {
            delivery_tag: 3,
            multiple: true,
        },
    )?;
    let close = expect!(conn.recv_method(1)?, Method::ChannelClose(c) => c);
    assert_eq!(close.reply_code, 406, "{close:?}");
    assert!(
        close.reply_text.contains("unknown delivery tag 3"),
        "{close:?}"
    );
    conn.ack_channel_close(1)?;
    // The channel's close requeued 4 and 5 only: 1, 2 and 3 were acked.
    conn.open_channel(2)?;
    assert_eq!(delete_queue(&mut conn, 2, &q)?, 2);
    conn.close_channel(2)?;
    conn.close()?;
    Ok(())
}
