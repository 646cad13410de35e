//! `serena consume QUEUE`: each delivery as one JSON line, every property and header with its
//! AMQP type.
//!
//! ```json
//! {"envelope":{"consumer_tag":"serena-1","delivery_tag":1,"redelivered":false,"exchange":"orders","routing_key":"order.created"},
//!  "properties":{"content_type":"application/json",...,"headers":{"attempt":{"type":"i32","value":2}}},
//!  "body":"{\"id\":7}","body_encoding":"utf8"}
//! ```
//!
//! (One line per delivery; wrapped here.) Absent properties are `null`. Header values are
//! `{"type": T, "value": V}` with T one of `bool`, `i8`, `u8`, `i16`, `u16`, `i32`, `u32`,
//! `i64`, `u64`, `f32`, `f64`, `decimal`, `string`, `bytes` (base64), `array`, `timestamp`,
//! `table`, `void` (no value): the names `serena publish -H` takes. A string that is not UTF-8
//! and a body that is not have `"base64"` instead of `"value"` and `"body_encoding": "base64"`.
//!
//! A decimal's value is its exact number as a JSON string, `"-0.5"`, `"12.50"`: the text
//! `serena publish -H NAME:decimal=` takes. A JSON number would lose the scale (`12.50` has
//! scale 2, `12.5` scale 1: different values on the wire) and, for large scales, precision in
//! readers that parse numbers as doubles.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};
use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::topology::ConnectionSettings;
use serena::{ConsumeOptions, Delivery};

use crate::{Failure, base64, connection_config, with_connection};

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The queue to consume from.
    queue: String,
    /// Stop after N deliveries (exit 1 if the timeout ends the wait first).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop when no delivery arrives for SECONDS.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Let the broker consider messages acknowledged on delivery (by default each one is acked
    /// after its line is written).
    #[arg(long)]
    no_ack: bool,
}

/// The JSON value of a header value, with its type.
pub(crate) fn typed(v: &FieldValue) -> Value {
    let (ty, value) = match v {
        FieldValue::Bool(b) => ("bool", json!(b)),
        FieldValue::I8(n) => ("i8", json!(n)),
        FieldValue::U8(n) => ("u8", json!(n)),
        FieldValue::I16(n) => ("i16", json!(n)),
        FieldValue::U16(n) => ("u16", json!(n)),
        FieldValue::I32(n) => ("i32", json!(n)),
        FieldValue::U32(n) => ("u32", json!(n)),
        FieldValue::I64(n) => ("i64", json!(n)),
        FieldValue::U64(n) => ("u64", json!(n)),
        FieldValue::F32(f) => ("f32", float(f64::from(*f))),
        FieldValue::F64(f) => ("f64", float(*f)),
        FieldValue::Decimal(d) => ("decimal", json!(d.to_string())),
        FieldValue::LongString(s) => match s.as_str() {
            Some(text) => ("string", json!(text)),
            None => return json!({"type": "string", "base64": base64::encode(s.as_bytes())}),
        },
        FieldValue::ByteArray(b) => ("bytes", json!(base64::encode(b))),
        FieldValue::Array(items) => ("array", Value::Array(items.iter().map(typed).collect())),
        FieldValue::Timestamp(t) => ("timestamp", json!(t)),
        FieldValue::Table(t) => ("table", table(t)),
        FieldValue::Void => return json!({"type": "void"}),
    };
    json!({"type": ty, "value": value})
}

/// NaN and the infinities are not JSON numbers: they are written as strings.
fn float(f: f64) -> Value {
    if f.is_finite() {
        json!(f)
    } else {
        json!(f.to_string())
    }
}

fn table(t: &FieldTable) -> Value {
    let mut map = Map::new();
    for (k, v) in t.iter() {
        map.insert(k.to_string(), typed(v));
    }
    Value::Object(map)
}

pub(crate) fn properties(p: &BasicProperties) -> Value {
    let s = |v: &Option<serena::proto::ShortString>| json!(v.as_ref().map(|s| s.to_string()));
    json!({
        "content_type": s(&p.content_type),
        "content_encoding": s(&p.content_encoding),
        "headers": p.headers.as_ref().map(table),
        "delivery_mode": p.delivery_mode,
        "priority": p.priority,
        "correlation_id": s(&p.correlation_id),
        "reply_to": s(&p.reply_to),
        "expiration": s(&p.expiration),
        "message_id": s(&p.message_id),
        "timestamp": p.timestamp,
        "type": s(&p.kind),
        "user_id": s(&p.user_id),
        "app_id": s(&p.app_id),
        "cluster_id": s(&p.cluster_id),
    })
}

/// A body as text, or base64 when it is not UTF-8, with which of the two it is.
pub(crate) fn body_json(body: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), "utf8"),
        Err(_) => (base64::encode(body), "base64"),
    }
}

/// One delivery as one JSON object.
pub(crate) fn delivery_json(d: &Delivery) -> Value {
    let (body, encoding) = body_json(&d.body);
    json!({
        "envelope": {
            "consumer_tag": d.consumer_tag.as_str(),
            "delivery_tag": d.delivery_tag,
            "redelivered": d.redelivered,
            "exchange": d.exchange.as_str(),
            "routing_key": d.routing_key.as_str(),
        },
        "properties": properties(&d.properties),
        "body": body,
        "body_encoding": encoding,
    })
}

pub(crate) async fn run(args: ConsumeArgs, url: Option<&str>) -> Result<(), Failure> {
    let idle = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => {
            return Err(Failure::usage(
                "--timeout must be a positive number of seconds",
            ));
        }
        None => None,
    };
    if args.count == Some(0) {
        return Ok(());
    }
    let config = connection_config(url, &ConnectionSettings::default())?;
    let queue = args.queue.as_str();
    with_connection(&config, async |conn| {
        let failed = |e: serena::Error| Failure::failed(format!("queue {queue:?}: {e}"));
        let ch = conn.channel().await.map_err(failed)?;
        if let Some(n) = args.count {
            // No more in flight than will be printed, so none is held back and redelivered.
            let prefetch = u16::try_from(n).unwrap_or(u16::MAX);
            ch.basic_qos(prefetch, false).await.map_err(failed)?;
        }
        let options = ConsumeOptions::default().with_no_ack(args.no_ack);
        let mut consumer = ch.basic_consume(queue, options).await.map_err(|e| {
            let hint = if e.reply_code() == Some(serena::UnexpectedCloseError::NOT_FOUND) {
                "; declare it first (serena topology apply)"
            } else {
                ""
            };
            Failure::failed(format!("cannot consume from queue {queue:?}: {e}{hint}"))
        })?;
        let mut seen = 0u64;
        let mut stdout = std::io::stdout().lock();
        while args.count.is_none_or(|n| seen < n) {
            let next = match idle {
                Some(t) => match tokio::time::timeout(t, consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => consumer.next().await,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(failed(e)),
                None => break,
            };
            let line = delivery_json(&delivery).to_string();
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))?;
            if !args.no_ack {
                delivery.ack().map_err(failed)?;
            }
            seen += 1;
        }
        drop(consumer);
        let _ = ch.close().await;
        match args.count {
            Some(n) if seen < n => Err(Failure::failed(format!(
                "queue {queue:?}: got {seen} of {n} messages before the timeout"
            ))),
            _ => Ok(()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serena::proto::Decimal;

    #[test]
    fn header_values_keep_their_types() {
        let t = FieldTable::new()
            .with("i", FieldValue::I32(-3))
            .with("u", FieldValue::U8(7))
            .with(
                "d",
                Decimal {
                    scale: 2,
                    value: 1250,
                },
            )
            .with("nan", FieldValue::F64(f64::NAN))
            .with("raw", FieldValue::ByteArray(vec![0xff, 0].into()))
            .with("v", FieldValue::Void)
            .with(
                "nested",
                FieldTable::new().with("a", vec![FieldValue::Bool(true), "s".into()]),
            );
        assert_eq!(
            table(&t),
            json!({
                "i": {"type": "i32", "value": -3},
                "u": {"type": "u8", "value": 7},
                "d": {"type": "decimal", "value": "12.50"},
                "nan": {"type": "f64", "value": "NaN"},
                "raw": {"type": "bytes", "value": "/wA="},
                "v": {"type": "void"},
                "nested": {"type": "table", "value": {"a": {"type": "array", "value": [
                    {"type": "bool", "value": true},
                    {"type": "string", "value": "s"},
                ]}}},
            })
        );
    }

    /// The headers pika sends for `{"delta": Decimal("-0.5"), "price": Decimal("12.50")}`.
    fn pika_decimals() -> FieldTable {
        let entries = [
            &[5][..],
            b"delta",
            b"D",
            &[1],
            &(-5_i32).to_be_bytes(),
            &[5],
            b"price",
            b"D",
            &[2],
            &1250_i32.to_be_bytes(),
        ]
        .concat();
        let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
        payload.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        payload.extend_from_slice(&entries);
        let header = serena::proto::ContentHeader::decode(payload.into()).unwrap();
        header.properties.headers.unwrap()
    }

    #[test]
    fn decimals_are_shown_as_their_exact_text() {
        assert_eq!(
            table(&pika_decimals()),
            json!({
                "delta": {"type": "decimal", "value": "-0.5"},
                "price": {"type": "decimal", "value": "12.50"},
            })
        );
    }

    #[test]
    fn absent_properties_are_null_and_present_ones_kept() {
        let p = BasicProperties::default()
            .with_content_type("text/plain")
            .with_priority(0);
        let v = properties(&p);
        assert_eq!(v["content_type"], json!("text/plain"));
        assert_eq!(v["priority"], json!(0));
        assert_eq!(v["headers"], Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 14);
    }
}
