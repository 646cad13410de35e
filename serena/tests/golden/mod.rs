//! Helpers for the golden byte-vector tests (`golden_methods.rs`, `golden_basic.rs`,
//! `golden_content.rs`).
//!
//! The expected bytes of every golden test are written by hand from the AMQP 0-9-1 spec. The
//! helpers here only spell out the spec's length-prefix rules (short string: one length octet;
//! long string, table, array: a big-endian 32-bit length) so the literals stay readable. They never
//! call serena's encoder.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use serena::proto::{DecodeError, Method};

/// Concatenates byte pieces, one per field.
pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A short string: one length octet, then the bytes.
pub(crate) fn sstr(s: &str) -> Vec<u8> {
    let len = u8::try_from(s.len()).expect("a golden short string fits in 255 bytes");
    let mut out = vec![len];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A long string (or byte array): a big-endian 32-bit length, then the bytes.
pub(crate) fn lstr(bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).expect("golden long strings are small");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A field table or field array: a big-endian 32-bit byte length, then the entries.
pub(crate) fn table(entries: &[&[u8]]) -> Vec<u8> {
    lstr(&entries.concat())
}

/// Hex dump for failure messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes {
        let _ = write!(s, "{b:02x} ");
    }
    s.trim_end().to_owned()
}

/// One golden vector: a method value and its payload bytes, written by hand.
pub(crate) struct Case {
    /// The value.
    pub(crate) method: Method,
    /// The method payload: class id, method id, arguments.
    pub(crate) bytes: Vec<u8>,
}

/// Pairs a method with its hand-written payload.
pub(crate) fn case(method: impl Into<Method>, bytes: Vec<u8>) -> Case {
    Case {
        method: method.into(),
        bytes,
    }
}

/// Checks one case both ways, returning what went wrong.
///
/// Encode appends exactly `bytes` after what the buffer already held; `bytes` decodes to the
/// value; one byte fewer is refused; one byte more is refused as trailing.
fn check(case: &Case) -> Vec<String> {
    let Case { method, bytes } = case;
    let name = method.name();
    let mut failures = Vec::new();

    let mut buf = BytesMut::from(&[0xEE][..]);
    match method.encode(&mut buf) {
        Ok(()) if buf[0] == 0xEE && buf[1..] == bytes[..] => {}
        Ok(()) if buf[0] != 0xEE => {
            failures.push(format!(
                "{name}: encode overwrote what the buffer already held"
            ));
        }
        Ok(()) => failures.push(format!(
            "{name}: encode\n    got:      {}\n    expected: {}",
            hex(&buf[1..]),
            hex(bytes)
        )),
        Err(e) => failures.push(format!("{name}: encode failed: {e}")),
    }

    match Method::decode(Bytes::copy_from_slice(bytes)) {
        Ok(decoded) if decoded == *method => {}
        Ok(decoded) => failures.push(format!(
            "{name}: decode\n    got:      {decoded:?}\n    expected: {method:?}"
        )),
        Err(e) => failures.push(format!("{name}: decode failed: {e}")),
    }

    let short = Bytes::copy_from_slice(&bytes[..bytes.len() - 1]);
    if let Ok(m) = Method::decode(short) {
        failures.push(format!("{name}: decoded with its last byte missing: {m:?}"));
    }

    let mut long = bytes.clone();
    long.push(0);
    match Method::decode(Bytes::from(long)) {
        Err(DecodeError::TrailingBytes { extra: 1, .. }) => {}
        other => failures.push(format!(
            "{name}: one trailing byte should be refused, got {other:?}"
        )),
    }
    failures
}

/// Runs every case and fails once, listing every case that went wrong.
pub(crate) fn check_all(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().flat_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} golden check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The (class id, method id) pairs the hand-written bytes of `cases` start with.
pub(crate) fn ids_on_wire(cases: &[Case]) -> BTreeSet<(u16, u16)> {
    cases
        .iter()
        .map(|c| {
            let b = &c.bytes;
            (
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
        })
        .collect()
}
