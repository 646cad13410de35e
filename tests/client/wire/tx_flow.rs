//! Transactions and `channel.flow`.

use serena::proto::method::{channel, tx};
use serena::proto::{BasicProperties, FieldTable, Method};
use serena_tests::unique_name;
use serena_tests::wire::WireConn;

use super::{TestResult, ack, closed_connection, declare_queue, delete_queue, get, message_count};

#[test]
fn tx_select_rollback_and_commit() -> TestResult {
    let mut conn = WireConn::open("wire-tx")?;
    conn.open_channel(1)?;
    conn.open_channel(2)?;
    let q = unique_name("tx-q");
    declare_queue(&mut conn, 2, &q, FieldTable::new())?;
    expect!(conn.rpc(1, tx::Select {})?, Method::TxSelectOk(_));

    conn.publish(1, "", &q, &BasicProperties::default(), b"rolled back")?;
    expect!(conn.rpc(1, tx::Rollback {})?, Method::TxRollbackOk(_));
    assert_eq!(message_count(&mut conn, 2, &q)?, 0);

    conn.publish(1, "", &q, &BasicProperties::default(), b"committed")?;
    // Not visible before the commit.
    assert_eq!(message_count(&mut conn, 2, &q)?, 0);
    expect!(conn.rpc(1, tx::Commit {})?, Method::TxCommitOk(_));
    assert_eq!(message_count(&mut conn, 2, &q)?, 1);

    // An acknowledgement in a transaction is also held until the commit.
    let (ok, _, body) = get(&mut conn, 1, &q)?.expect("the committed message");
    assert_eq!(&body[..], b"committed");
    ack(&mut conn, 1, ok.delivery_tag)?;
    expect!(conn.rpc(1, tx::Rollback {})?, Method::TxRollbackOk(_));
    expect!(conn.rpc(1, tx::Commit {})?, Method::TxCommitOk(_));

    conn.close_channel(1)?;
    // The rolled-back ack did not count; closing the channel requeued the message.
    assert_eq!(delete_queue(&mut conn, 2, &q)?, 1);
    conn.close_channel(2)?;
    conn.close()?;
    Ok(())
}

#[test]
fn channel_flow_active_is_confirmed_but_pausing_is_not_implemented() -> TestResult {
    let mut conn = WireConn::open("wire-flow")?;
    conn.open_channel(1)?;
    let ok = expect!(conn.rpc(1, channel::Flow { active: true })?, Method::ChannelFlowOk(ok) => ok);
    assert!(ok.active);
    // RabbitMQ does not implement pausing a channel: a hard error for the whole connection.
    conn.send(1, channel::Flow { active: false })?;
    let close = closed_connection(conn.recv_method(0)?);
    assert_eq!(close.reply_code, 540, "{close:?}");
    assert_eq!(close.reply_text, "NOT_IMPLEMENTED - active=false");
    assert_eq!(
        (close.class_id, close.method_id),
        (channel::Flow::CLASS_ID, channel::Flow::METHOD_ID)
    );
    conn.ack_connection_close()?;
    Ok(())
}
