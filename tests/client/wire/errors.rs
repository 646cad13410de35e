//! Errors the broker raises, on a channel or on the whole connection.

use serena::proto::method::{basic, queue};
use serena::proto::{BasicProperties, FieldTable};
use serena_tests::unique_name;
use serena_tests::wire::WireConn;

use super::{TestResult, closed_channel, closed_connection, declare_queue, delete_queue};

#[test]
fn passive_declare_of_a_missing_queue_closes_the_channel_with_404() -> TestResult {
    let mut conn = WireConn::open("wire-404")?;
    conn.open_channel(1)?;
    let declare = queue::Declare {
        queue: unique_name("missing").as_str().into(),
        passive: true,
        ..Default::default()
    };
    let close = closed_channel(conn.rpc(1, declare)?);
    assert_eq!(close.reply_code, 404, "{close:?}");
    assert!(close.reply_text.starts_with("NOT_FOUND"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (50, 10));
    assert_eq!(
        (close.class_id, close.method_id),
        (queue::Declare::CLASS_ID, queue::Declare::METHOD_ID)
    );
    conn.ack_channel_close(1)?;
    // The channel id is free again and the connection unharmed.
    conn.open_channel(1)?;
    conn.close_channel(1)?;
    conn.close()?;
    Ok(())
}

#[test]
fn redeclaring_a_queue_with_other_arguments_closes_the_channel_with_406() -> TestResult {
    let mut conn = WireConn::open("wire-406")?;
    conn.open_channel(1)?;
    let q = unique_name("redeclare-q");
    declare_queue(
        &mut conn,
        1,
        &q,
        FieldTable::new().with("x-message-ttl", 1_000i32),
    )?;
    let declare = queue::Declare {
        queue: q.as_str().into(),
        exclusive: true,
        arguments: FieldTable::new().with("x-message-ttl", 2_000i32),
        ..Default::default()
    };
    let close = closed_channel(conn.rpc(1, declare)?);
    assert_eq!(close.reply_code, 406, "{close:?}");
    assert!(
        close.reply_text.starts_with("PRECONDITION_FAILED"),
        "{close:?}"
    );
    assert_eq!((close.class_id, close.method_id), (50, 10));
    conn.ack_channel_close(1)?;
    conn.open_channel(2)?;
    assert_eq!(delete_queue(&mut conn, 2, &q)?, 0);
    conn.close_channel(2)?;
    conn.close()?;
    Ok(())
}

#[test]
fn publishing_as_another_user_closes_the_channel_with_406() -> TestResult {
    let mut conn = WireConn::open("wire-user-id")?;
    conn.open_channel(1)?;
    let properties = BasicProperties {
        user_id: Some("not-guest".into()),
        ..Default::default()
    };
    conn.publish(1, "", &unique_name("nobody"), &properties, b"")?;
    let close = closed_channel(conn.recv_method(1)?);
    assert_eq!(close.reply_code, 406, "{close:?}");
    assert_eq!(
        (close.class_id, close.method_id),
        (basic::Publish::CLASS_ID, basic::Publish::METHOD_ID)
    );
    conn.ack_channel_close(1)?;
    conn.close()?;
    Ok(())
}

#[test]
fn publishing_with_immediate_closes_the_connection_with_540() -> TestResult {
    let mut conn = WireConn::open("wire-immediate")?;
    conn.open_channel(1)?;
    let publish = basic::Publish {
        exchange: "".into(),
        routing_key: unique_name("nobody").as_str().into(),
        mandatory: false,
        immediate: true,
    };
    conn.send_content(1, publish, &BasicProperties::default(), b"now!")?;
    // A hard error: the whole connection goes, not just the channel.
    let close = closed_connection(conn.recv_method(0)?);
    assert_eq!(close.reply_code, 540, "{close:?}");
    assert!(close.reply_text.starts_with("NOT_IMPLEMENTED"), "{close:?}");
    assert_eq!(
        (close.class_id, close.method_id),
        (basic::Publish::CLASS_ID, basic::Publish::METHOD_ID)
    );
    conn.ack_connection_close()?;
    Ok(())
}
