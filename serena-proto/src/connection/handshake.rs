//! Pure pieces of the connection handshake: tuning negotiation, client properties, server
//! capabilities and SASL responses. The driver performs the exchange:
//!
//! ```text
//! client                                server
//!   | -- protocol header ------------------> |
//!   | <------------------ connection.start -- |  mechanisms, capabilities
//!   | -- connection.start-ok --------------> |  client properties, SASL response
//!   | <------------------- connection.tune -- |  channel_max, frame_max, heartbeat
//!   | -- connection.tune-ok ---------------> |  negotiate()
//!   | -- connection.open ------------------> |  virtual host
//!   | <---------------- connection.open-ok -- |
//! ```
//!
//! SASL: `PLAIN` and `AMQPLAIN` send user and password; `EXTERNAL` sends nothing and lets
//! the server take the identity from the TLS client certificate.
//!
//! A refused login ends with `connection.close` 403 (we announce
//! `authentication_failure_close`), an unknown virtual host with 530.

use bytes::BytesMut;

use crate::table::{FieldTable, FieldValue};
use crate::types::LongString;

/// Limits agreed in `connection.tune` / `tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Highest channel id (0: no limit).
    pub channel_max: u16,
    /// Largest frame in bytes (0: no limit).
    pub frame_max: u32,
    /// Heartbeat interval in seconds (0: off).
    pub heartbeat: u16,
}

/// The smaller of two limits where 0 means "no limit".
fn smaller_limit<T: Ord + Default + Copy>(a: T, b: T) -> T {
    let zero = T::default();
    if a == zero {
        b
    } else if b == zero {
        a
    } else {
        a.min(b)
    }
}

/// Settles the limits: `channel_max` and `frame_max` are each the smaller of the two sides,
/// 0 meaning "no limit" on either side. A client heartbeat of 0 turns heartbeats off; otherwise
/// the smaller non-zero interval wins.
pub fn negotiate(client: Tuning, server: Tuning) -> Tuning {
    Tuning {
        channel_max: smaller_limit(client.channel_max, server.channel_max),
        frame_max: smaller_limit(client.frame_max, server.frame_max),
        heartbeat: if client.heartbeat == 0 {
            0
        } else {
            smaller_limit(client.heartbeat, server.heartbeat)
        },
    }
}

/// The capabilities serena announces in `start-ok`.
pub fn client_capabilities() -> FieldTable {
    [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "exchange_exchange_bindings",
    ]
    .into_iter()
    .map(|c| (c, FieldValue::Bool(true)))
    .collect()
}

/// The `client_properties` table of `start-ok`.
pub fn client_properties(connection_name: Option<&str>) -> FieldTable {
    let mut t = FieldTable::new()
        .with("product", "serena")
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("platform", "Rust")
        .with("information", "https://github.com/serena-rs/serena")
        .with("capabilities", client_capabilities());
    if let Some(name) = connection_name {
        t.insert("connection_name", name);
    }
    t
}

/// True when the server's properties announce `capability` as `true`.
pub fn server_has_capability(server_properties: &FieldTable, capability: &str) -> bool {
    server_properties
        .get("capabilities")
        .and_then(FieldValue::as_table)
        .and_then(|caps| caps.get(capability))
        .and_then(FieldValue::as_bool)
        .unwrap_or(false)
}

/// True when the space-separated `mechanisms` list holds `name`.
pub fn offers_mechanism(mechanisms: &LongString, name: &str) -> bool {
    mechanisms
        .as_bytes()
        .split(|b| *b == b' ')
        .any(|m| m == name.as_bytes())
}

/// The PLAIN response: `\0user\0password`.
pub fn plain_response(username: &str, password: &str) -> LongString {
    let mut v = Vec::with_capacity(username.len() + password.len() + 2);
    v.push(0);
    v.extend_from_slice(username.as_bytes());
    v.push(0);
    v.extend_from_slice(password.as_bytes());
    LongString::from(v)
}

/// The EXTERNAL response: empty, so the server uses the identity it already has, with RabbitMQ
/// the TLS client certificate's subject (or its common name).
pub fn external_response() -> LongString {
    LongString::from(Vec::new())
}

/// The AMQPLAIN response: a field table of LOGIN and PASSWORD without its length prefix.
pub fn amqplain_response(username: &str, password: &str) -> Result<LongString, crate::EncodeError> {
    let table = FieldTable::new()
        .with("LOGIN", username)
        .with("PASSWORD", password);
    let mut buf = BytesMut::new();
    crate::table::encode_table(&mut buf, &table, "AMQPLAIN response", 0)?;
    Ok(LongString::from(buf.split_off(4).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(channel_max: u16, frame_max: u32, heartbeat: u16) -> Tuning {
        Tuning {
            channel_max,
            frame_max,
            heartbeat,
        }
    }

    #[test]
    fn smaller_wins_and_zero_means_no_limit() {
        assert_eq!(
            negotiate(t(2047, 131072, 60), t(2047, 131072, 60)),
            t(2047, 131072, 60)
        );
        assert_eq!(
            negotiate(t(100, 8192, 30), t(2047, 131072, 60)),
            t(100, 8192, 30)
        );
        assert_eq!(
            negotiate(t(2047, 1 << 20, 60), t(10, 4096, 5)),
            t(10, 4096, 5)
        );
        assert_eq!(negotiate(t(0, 0, 60), t(10, 4096, 0)), t(10, 4096, 60));
        assert_eq!(negotiate(t(10, 4096, 60), t(0, 0, 0)), t(10, 4096, 60));
        assert_eq!(negotiate(t(0, 0, 0), t(0, 0, 60)), t(0, 0, 0));
    }

    #[test]
    fn capabilities_are_read_from_the_nested_table() {
        let props = FieldTable::new().with(
            "capabilities",
            FieldTable::new()
                .with("publisher_confirms", true)
                .with("basic.nack", false),
        );
        assert!(server_has_capability(&props, "publisher_confirms"));
        assert!(!server_has_capability(&props, "basic.nack"));
        assert!(!server_has_capability(&props, "missing"));
        assert!(!server_has_capability(
            &FieldTable::new(),
            "publisher_confirms"
        ));
    }

    #[test]
    fn sasl_responses() {
        assert_eq!(plain_response("u", "p").as_bytes().as_ref(), b"\0u\0p");
        let r = amqplain_response("u", "p").unwrap();
        assert_eq!(
            r.as_bytes().as_ref(),
            b"\x05LOGINS\x00\x00\x00\x01u\x08PASSWORDS\x00\x00\x00\x01p"
        );
        assert!(external_response().as_bytes().is_empty());
        assert!(offers_mechanism(&"AMQPLAIN PLAIN".into(), "PLAIN"));
        assert!(offers_mechanism(&"PLAIN EXTERNAL".into(), "EXTERNAL"));
        assert!(!offers_mechanism(&"AMQPLAIN".into(), "PLAIN"));
    }
}
