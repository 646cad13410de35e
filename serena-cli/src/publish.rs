//! `serena publish EXCHANGE ROUTING_KEY [BODY]`: one confirmed publish with properties and typed
//! headers.

use std::io::Read;

use clap::Args;
use serena::proto::{BasicProperties, Decimal, FieldTable, FieldValue};
use serena::topology::ConnectionSettings;
use serena::{Error, PublishOptions};

use crate::{Failure, base64, connection_config, with_connection};

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Exchange to publish to ("" is the default exchange, which routes by queue name).
    exchange: String,
    /// Routing key (for the default exchange: the queue's name).
    routing_key: String,
    /// Message body; read from stdin when absent or "-".
    body: Option<String>,

    /// Header NAME=VALUE (a string), or NAME:TYPE=VALUE with TYPE one of bool, i8, u8, i16,
    /// u16, i32, u32, i64, u64, f32, f64, decimal, string, bytes (base64), timestamp, void,
    /// json (objects become tables, arrays arrays). Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME[:TYPE]=VALUE")]
    headers: Vec<String>,
    /// Let the broker drop the message when no queue is bound for it (by default an
    /// unroutable message is returned and the publish fails).
    #[arg(long)]
    no_mandatory: bool,

    /// content-type, e.g. application/json.
    #[arg(long)]
    content_type: Option<String>,
    /// content-encoding, e.g. gzip.
    #[arg(long)]
    content_encoding: Option<String>,
    /// delivery-mode: 1 transient, 2 persistent.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    delivery_mode: Option<u8>,
    /// Same as --delivery-mode 2.
    #[arg(long, conflicts_with = "delivery_mode")]
    persistent: bool,
    /// priority, 0 to 255.
    #[arg(long)]
    priority: Option<u8>,
    /// correlation-id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// reply-to.
    #[arg(long)]
    reply_to: Option<String>,
    /// expiration: per-message TTL in milliseconds.
    #[arg(long, value_name = "MS")]
    expiration: Option<u64>,
    /// message-id.
    #[arg(long)]
    message_id: Option<String>,
    /// timestamp, seconds since the Unix epoch.
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<u64>,
    /// type (the application's message type).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// user-id; RabbitMQ checks it against the connection's user.
    #[arg(long)]
    user_id: Option<String>,
    /// app-id.
    #[arg(long)]
    app_id: Option<String>,
    /// cluster-id (deprecated in AMQP 0-9-1).
    #[arg(long)]
    cluster_id: Option<String>,
}

/// Parses `NAME=VALUE` or `NAME:TYPE=VALUE` into a header.
pub(crate) fn parse_header(spec: &str) -> Result<(String, FieldValue), String> {
    let Some((name, value)) = spec.split_once('=') else {
        return Err(format!(
            "header {spec:?} needs a value: NAME=VALUE or NAME:TYPE=VALUE"
        ));
    };
    let (name, ty) = match name.rsplit_once(':') {
        Some((n, t)) => (n, t),
        None => (name, "string"),
    };
    if name.is_empty() {
        return Err(format!("header {spec:?} needs a name"));
    }
    let bad = |what: &str| format!("header {name:?}: {value:?} is not {what}");
    let int = |what| bad(what);
    let v = match ty {
        "string" => FieldValue::from(value),
        "bool" => FieldValue::Bool(value.parse().map_err(|_| bad("true or false"))?),
        "i8" => FieldValue::I8(value.parse().map_err(|_| int("an i8"))?),
        "u8" => FieldValue::U8(value.parse().map_err(|_| int("a u8"))?),
        "i16" => FieldValue::I16(value.parse().map_err(|_| int("an i16"))?),
        "u16" => FieldValue::U16(value.parse().map_err(|_| int("a u16"))?),
        "i32" => FieldValue::I32(value.parse().map_err(|_| int("an i32"))?),
        "u32" => FieldValue::U32(value.parse().map_err(|_| int("a u32"))?),
        "i64" => FieldValue::I64(value.parse().map_err(|_| int("an i64"))?),
        "u64" => FieldValue::U64(value.parse().map_err(|_| int("a u64"))?),
        "f32" => FieldValue::F32(finite(value.parse().ok()).ok_or_else(|| bad("a finite f32"))?),
        "f64" => FieldValue::F64(finite(value.parse().ok()).ok_or_else(|| bad("a finite f64"))?),
        "decimal" => {
            FieldValue::Decimal(decimal(value).ok_or_else(|| bad("a decimal like 12.50"))?)
        }
        "timestamp" => {
            FieldValue::Timestamp(value.parse().map_err(|_| bad("seconds since the epoch"))?)
        }
        "bytes" => {
            FieldValue::ByteArray(base64::decode(value).ok_or_else(|| bad("base64"))?.into())
        }
        "void" => FieldValue::Void,
        "json" => {
            let json: serde_json::Value =
                serde_json::from_str(value).map_err(|e| format!("header {name:?}: {e}"))?;
            from_json(&json).ok_or_else(|| bad("JSON with numbers that fit 64 bits"))?
        }
        other => {
            return Err(format!(
                "header {name:?}: unknown type {other:?}; use bool, i8, u8, i16, u16, i32, u32, \
                 i64, u64, f32, f64, decimal, string, bytes, timestamp, void or json"
            ));
        }
    };
    Ok((name.to_owned(), v))
}

fn finite<T: Into<f64> + Copy>(v: Option<T>) -> Option<T> {
    v.filter(|f| (*f).into().is_finite())
}

/// `12.50` -> scale 2, value 1250; `-0.5` -> scale 1, value -5.
fn decimal(s: &str) -> Option<Decimal> {
    let (sign, unsigned) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Decimal {
        scale: u8::try_from(frac.len()).ok()?,
        value: format!("{sign}{digits}").parse().ok()?,
    })
}

/// JSON to a field value: objects are tables, numbers i64 or f64, null is void.
fn from_json(v: &serde_json::Value) -> Option<FieldValue> {
    use serde_json::Value;
    Some(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => match n.as_u64() {
                Some(u) => FieldValue::U64(u),
                None => FieldValue::F64(n.as_f64()?),
            },
        },
        Value::String(s) => FieldValue::from(s.as_str()),
        Value::Array(items) => {
            FieldValue::Array(items.iter().map(from_json).collect::<Option<_>>()?)
        }
        Value::Object(map) => {
            let mut t = FieldTable::new();
            for (k, item) in map {
                t.insert(k.as_str(), from_json(item)?);
            }
            FieldValue::Table(t)
        }
    })
}

impl PublishArgs {
    fn properties(&self) -> Result<BasicProperties, Failure> {
        let mut headers = FieldTable::new();
        for spec in &self.headers {
            let (name, value) = parse_header(spec).map_err(Failure::usage)?;
            headers.insert(name, value);
        }
        let s = |v: &Option<String>| v.as_deref().map(Into::into);
        Ok(BasicProperties {
            content_type: s(&self.content_type),
            content_encoding: s(&self.content_encoding),
            headers: (!headers.is_empty()).then_some(headers),
            delivery_mode: if self.persistent {
                Some(2)
            } else {
                self.delivery_mode
            },
            priority: self.priority,
            correlation_id: s(&self.correlation_id),
            reply_to: s(&self.reply_to),
            expiration: self.expiration.map(|ms| ms.to_string().into()),
            message_id: s(&self.message_id),
            timestamp: self.timestamp,
            kind: s(&self.kind),
            user_id: s(&self.user_id),
            app_id: s(&self.app_id),
            cluster_id: s(&self.cluster_id),
        })
    }
}

pub(crate) async fn run(args: PublishArgs, url: Option<&str>) -> Result<(), Failure> {
    let properties = args.properties()?;
    let body = match args.body.as_deref() {
        Some(b) if b != "-" => b.as_bytes().to_vec(),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("cannot read the body from stdin: {e}")))?;
            buf
        }
    };
    let config = connection_config(url, &ConnectionSettings::default())?;
    let options = PublishOptions::default().with_mandatory(!args.no_mandatory);
    let (exchange, key) = (args.exchange.as_str(), args.routing_key.as_str());
    with_connection(&config, async |conn| {
        let ch = conn
            .channel()
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        let confirmed = match ch
            .basic_publish_with(exchange, key, &body, properties, options)
            .await
        {
            Ok(confirmation) => confirmation.await,
            Err(e) => Err(e),
        };
        let _ = ch.close().await;
        confirmed.map_err(|e| publish_failure(exchange, key, e))
    })
    .await?;
    eprintln!(
        "published {} bytes to exchange {exchange:?} with routing key {key:?} (confirmed)",
        body.len()
    );
    Ok(())
}

fn publish_failure(exchange: &str, key: &str, e: Error) -> Failure {
    match &e {
        Error::Returned(_) => Failure::failed(format!(
            "{e}: no queue is bound to exchange {exchange:?} for routing key {key:?}; bind one, \
             or pass --no-mandatory to let the broker drop it"
        )),
        _ if e.reply_code() == Some(serena::UnexpectedCloseError::NOT_FOUND) => Failure::failed(
            format!("{e}; create the exchange first (serena topology apply)"),
        ),
        _ => Failure::failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_take_a_type() {
        let h = |s| parse_header(s).unwrap();
        assert_eq!(h("a=b"), ("a".into(), FieldValue::from("b")));
        assert_eq!(h("n:i32=-5"), ("n".into(), FieldValue::I32(-5)));
        assert_eq!(
            h("n:u64=18446744073709551615"),
            ("n".into(), FieldValue::U64(u64::MAX))
        );
        assert_eq!(h("f:bool=true"), ("f".into(), FieldValue::Bool(true)));
        assert_eq!(
            h("d:decimal=12.50"),
            (
                "d".into(),
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 1250
                })
            )
        );
        assert_eq!(
            h("d:decimal=-0.5"),
            (
                "d".into(),
                FieldValue::Decimal(Decimal {
                    scale: 1,
                    value: -5
                })
            )
        );
        assert_eq!(
            h("d:decimal=-2147483648"),
            (
                "d".into(),
                FieldValue::Decimal(Decimal {
                    scale: 0,
                    value: i32::MIN
                })
            )
        );
        assert_eq!(
            h("t:timestamp=1700000000"),
            ("t".into(), FieldValue::Timestamp(1_700_000_000))
        );
        assert_eq!(
            h("b:bytes=AAE="),
            ("b".into(), FieldValue::ByteArray(vec![0, 1].into()))
        );
        assert_eq!(h("v:void="), ("v".into(), FieldValue::Void));
        assert_eq!(h("eq=a=b"), ("eq".into(), FieldValue::from("a=b")));
        let (_, j) = h(r#"j:json={"x":[1,2.5,"s",null]}"#);
        let t = j.as_table().unwrap();
        assert_eq!(
            t.get("x"),
            Some(&FieldValue::Array(vec![
                FieldValue::I64(1),
                FieldValue::F64(2.5),
                FieldValue::from("s"),
                FieldValue::Void
            ]))
        );
    }

    #[test]
    fn bad_headers_say_why() {
        for (spec, says) in [
            ("novalue", "needs a value"),
            (":i32=1", "needs a name"),
            ("n:i8=300", "not an i8"),
            ("n:f64=NaN", "finite"),
            ("n:decimal=1.2.3", "decimal"),
            ("n:decimal=-", "decimal"),
            ("n:decimal=--1", "decimal"),
            ("n:decimal=+1", "decimal"),
            ("n:decimal=2147483648", "decimal"),
            ("n:bytes=!!", "base64"),
            ("n:int=1", "unknown type \"int\""),
            ("n:json={", "header \"n\""),
        ] {
            let err = parse_header(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
