//! The sans-IO codec against the real RabbitMQ, byte for byte: every frame here is encoded by
//! `serena::proto` and written to a plain blocking socket, and every frame the broker sends back
//! is split, decoded and reassembled by it (see `serena_tests::wire::WireConn`).
//!
//! - [`handshake`]: start / start-ok with PLAIN and AMQPLAIN, tune / tune-ok, open, close;
//!   refused logins (403) and vhosts (530); heartbeats skipped.
//! - [`publish`]: confirm mode, exchanges, queues and bindings; messages with no properties,
//!   with all 14, of 1 MiB, with non-ASCII names; get, ack, reject, nack, purge, delete.
//! - [`headers`]: every field type RabbitMQ takes, and what it returns when it re-encodes.
//! - [`consume`]: QoS, consume, deliveries, cancel from the client and from the broker.
//! - [`errors`]: channel closes 404 and 406, connection close 540.
//! - [`tx_flow`]: transactions, and `channel.flow` (RabbitMQ cannot pause).
//!
//! Each test opens its own connections, uses queue and exchange names no other test uses,
//! deletes what it declares (queues are also exclusive, so a failing test leaves nothing
//! behind), and never waits more than the helper's socket timeout for a frame.

use bytes::Bytes;
use serena::proto::method::{basic, channel, connection, queue};
use serena::proto::{Assembled, BasicProperties, FieldTable, Method};
use serena_tests::wire::{WireConn, WireError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Matches `$value` against `$pat` and yields `$out`, or panics showing what arrived instead.
macro_rules! expect {
    ($value:expr, $pat:pat => $out:expr) => {
        match $value {
            $pat => $out,
            other => panic!("expected {}, got {other:?}", stringify!($pat)),
        }
    };
    ($value:expr, $pat:pat) => {
        expect!($value, $pat => ())
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers on top of WireConn
// ---------------------------------------------------------------------------------------------

/// Declares an exclusive queue (gone with the connection even if the test fails) and returns
/// its declare-ok.
fn declare_queue(
    conn: &mut WireConn,
    ch: u16,
    name: &str,
    arguments: FieldTable,
) -> Result<queue::DeclareOk, WireError> {
    let declare = queue::Declare {
        queue: name.into(),
        exclusive: true,
        arguments,
        ..Default::default()
    };
    Ok(expect!(conn.rpc(ch, declare)?, Method::QueueDeclareOk(ok) => ok))
}

/// Deletes a queue and returns how many messages went with it.
fn delete_queue(conn: &mut WireConn, ch: u16, name: &str) -> Result<u32, WireError> {
    let delete = queue::Delete {
        queue: name.into(),
        ..Default::default()
    };
    Ok(expect!(conn.rpc(ch, delete)?, Method::QueueDeleteOk(ok) => ok.message_count))
}

/// The number of ready messages, by a passive declare.
fn message_count(conn: &mut WireConn, ch: u16, name: &str) -> Result<u32, WireError> {
    let declare = queue::Declare {
        queue: name.into(),
        passive: true,
        ..Default::default()
    };
    Ok(expect!(conn.rpc(ch, declare)?, Method::QueueDeclareOk(ok) => ok.message_count))
}

/// Waits for the publisher confirm of publish number `tag`.
fn expect_confirm(conn: &mut WireConn, ch: u16, tag: u64) -> Result<(), WireError> {
    let ack = expect!(conn.recv_method(ch)?, Method::BasicAck(ack) => ack);
    assert_eq!(ack.delivery_tag, tag, "confirm of publish {tag}: {ack:?}");
    Ok(())
}

/// Acknowledges one delivery (or got message).
fn ack(conn: &mut WireConn, ch: u16, delivery_tag: u64) -> Result<(), WireError> {
    let ack = basic::Ack {
        delivery_tag,
        multiple: false,
    };
    conn.send(ch, ack)
}

/// `basic.get` with acknowledgement; the message, or `None` on get-empty.
fn get(
    conn: &mut WireConn,
    ch: u16,
    queue: &str,
) -> Result<Option<(basic::GetOk, BasicProperties, Bytes)>, WireError> {
    let get = basic::Get {
        queue: queue.into(),
        no_ack: false,
    };
    conn.send(ch, get)?;
    match conn.recv_on(ch)? {
        Assembled::Content(c) => {
            let ok = expect!(c.method, Method::BasicGetOk(ok) => ok);
            Ok(Some((ok, *c.properties, c.body)))
        }
        Assembled::Method(Method::BasicGetEmpty(_)) => Ok(None),
        other => panic!("expected get-ok or get-empty, got {other:?}"),
    }
}

/// The `channel.close` the broker sent, or a panic showing what it sent instead.
fn closed_channel(method: Method) -> channel::Close {
    expect!(method, Method::ChannelClose(close) => close)
}

/// The `connection.close` the broker sent, or a panic showing what it sent instead.
fn closed_connection(method: Method) -> connection::Close {
    expect!(method, Method::ConnectionClose(close) => close)
}

#[path = "wire/consume.rs"]
mod consume;
#[path = "wire/errors.rs"]
mod errors;
#[path = "wire/handshake.rs"]
mod handshake;
#[path = "wire/headers.rs"]
mod headers;
#[path = "wire/publish.rs"]
mod publish;
#[path = "wire/tx_flow.rs"]
mod tx_flow;
