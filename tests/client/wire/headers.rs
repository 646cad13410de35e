//! Header tables: which field types RabbitMQ takes, and what it returns.

use bytes::Bytes;
use serena::proto::method::confirm;
use serena::proto::{BasicProperties, Decimal, FieldTable, FieldValue, Method};
use serena_tests::unique_name;
use serena_tests::wire::{WireConn, WireError};

use super::{TestResult, ack, declare_queue, delete_queue, expect_confirm, get};

/// A header table holding one value of every field type in RabbitMQ's errata, with arrays and
/// tables nesting several of them.
pub(super) fn every_field_type() -> FieldTable {
    FieldTable::new()
        .with("t", true)
        .with("b", -5i8)
        .with("B", 250u8)
        .with("s", -300i16)
        .with("u", 65_000u16)
        .with("I", -70_000i32)
        .with("i", 4_000_000_000u32)
        .with("l", -5_000_000_000i64)
        .with("L", 18_000_000_000_000_000_000u64)
        .with("f", 1.5f32)
        .with("d", -2.25f64)
        .with(
            "D",
            // Signed, as RabbitMQ reads it: -123.45.
            Decimal {
                scale: 2,
                value: -12_345,
            },
        )
        .with("S", "héllo, 世界")
        .with(
            "x",
            FieldValue::ByteArray(Bytes::from_static(b"\x00\xff\x01")),
        )
        .with(
            "A",
            vec![
                FieldValue::I32(1),
                FieldValue::from("a"),
                FieldValue::U64(3),
                FieldValue::Void,
                FieldValue::Array(vec![FieldValue::Bool(false)]),
            ],
        )
        .with("T", FieldValue::Timestamp(1_700_000_000))
        .with(
            "F",
            FieldTable::new()
                .with("n", 1i32)
                .with("u", 2u64)
                .with("deeper", FieldTable::new().with("f", 0.5f32)),
        )
        .with("V", FieldValue::Void)
}

/// Publishes one message with `headers` to a fresh queue and gets it back; `Err` with the
/// broker's close when it refuses the message.
fn header_round_trip(conn: &mut WireConn, headers: FieldTable) -> Result<FieldTable, WireError> {
    conn.open_channel(1)?;
    expect!(
        conn.rpc(1, confirm::Select { nowait: false })?,
        Method::ConfirmSelectOk(_)
    );
    let q = unique_name("headers");
    declare_queue(conn, 1, &q, FieldTable::new())?;
    let properties = BasicProperties::default().with_headers(headers);
    conn.publish(1, "", &q, &properties, b"h")?;
    expect_confirm(conn, 1, 1)?;
    let (_, props, _) = get(conn, 1, &q)?.expect("the message");
    ack(conn, 1, 1)?;
    assert_eq!(delete_queue(conn, 1, &q)?, 0);
    conn.close_channel(1)?;
    Ok(props.headers.expect("headers"))
}

#[test]
fn every_header_field_type_passes_through_unchanged() -> TestResult {
    // All 18 types are accepted, and RabbitMQ hands on the header bytes as they came.
    let mut conn = WireConn::open("wire-headers")?;
    let back = header_round_trip(&mut conn, every_field_type())?;
    assert_eq!(back, every_field_type());
    conn.close()?;
    Ok(())
}

#[test]
fn rabbitmq_rewrites_u64_headers_as_i64_when_it_reencodes() -> TestResult {
    // A `BCC` header makes RabbitMQ strip it and re-encode the properties from its own parse.
    // Then every type survives except `L`: it comes back as `l`, the same 64 bits read signed.
    let mut conn = WireConn::open("wire-headers-reencoded")?;
    let mut sent = every_field_type();
    sent.insert("BCC", vec![FieldValue::from(unique_name("nobody"))]);
    let back = header_round_trip(&mut conn, sent)?;
    assert!(!back.contains_key("BCC"));

    let as_i64 = |v: u64| FieldValue::I64(v as i64);
    let mut expected = every_field_type();
    expected.insert("L", as_i64(18_000_000_000_000_000_000));
    expected.insert(
        "A",
        vec![
            FieldValue::I32(1),
            FieldValue::from("a"),
            as_i64(3),
            FieldValue::Void,
            FieldValue::Array(vec![FieldValue::Bool(false)]),
        ],
    );
    let nested = expect!(expected.get("F"), Some(FieldValue::Table(t)) => t.clone());
    expected.insert("F", nested.with("u", as_i64(2)));
    assert_eq!(back, expected);
    assert_eq!(
        back.get("L"),
        Some(&FieldValue::I64(-446_744_073_709_551_616))
    );
    conn.close()?;
    Ok(())
}

#[test]
fn non_finite_float_headers_close_the_connection_with_541() -> TestResult {
    // Erlang cannot hold NaN or infinities: RabbitMQ fails to parse the header and closes
    // the whole connection with INTERNAL_ERROR.
    for value in [FieldValue::F32(f32::NAN), FieldValue::F64(f64::INFINITY)] {
        let mut conn = WireConn::open("wire-headers-nan")?;
        let err = header_round_trip(&mut conn, FieldTable::new().with("k", value.clone()))
            .expect_err("the broker should refuse a non-finite float");
        let close = expect!(err, WireError::ConnectionClosed(close) => close);
        assert_eq!(close.reply_code, 541, "{value:?}: {close:?}");
        assert_eq!(close.reply_text, "INTERNAL_ERROR");
        conn.ack_connection_close()?;
    }
    Ok(())
}
