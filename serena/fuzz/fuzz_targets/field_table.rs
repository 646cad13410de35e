//! Arbitrary bytes as the body of a field table: no input may panic, and a table that decodes
//! re-encodes to bytes of the same length that differ only where a `t` boolean octet other than
//! 0 or 1 was written back as 1.
//!
//! The table is reached through the public API: the input becomes the `headers` property of a
//! content header whose other properties are absent.

#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use serena::proto::ContentHeader;

/// Property flag of `headers` (the third property, bit 13).
const HEADERS_FLAG: u16 = 1 << 13;

fuzz_target!(|data: &[u8]| {
    let Ok(len) = u32::try_from(data.len()) else {
        return;
    };
    let mut payload = BytesMut::new();
    payload.put_u16(60); // class: basic
    payload.put_u16(0); // weight
    payload.put_u64(0); // body size
    payload.put_u16(HEADERS_FLAG);
    payload.put_u32(len);
    payload.put_slice(data);
    let payload = payload.freeze();

    let Ok(header) = ContentHeader::decode(payload.clone()) else {
        return;
    };
    let mut wire = BytesMut::new();
    if let Err(e) = header.encode(&mut wire) {
        panic!("decoded table does not re-encode: {e}\nheader: {header:?}");
    }
    assert_eq!(wire.len(), payload.len(), "re-encoding changed the size");
    for (at, (&sent, &back)) in payload.iter().zip(wire.iter()).enumerate() {
        assert!(
            sent == back || (sent > 1 && back == 1),
            "byte {at} re-encoded as {back:#04x}, was {sent:#04x}"
        );
    }

    let again = match ContentHeader::decode(wire.clone().freeze()) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded table does not decode: {e}\nheader: {header:?}"),
    };
    // NaN != NaN; Debug prints every NaN alike and tells every other difference apart.
    if again != header {
        assert_eq!(format!("{again:?}"), format!("{header:?}"), "tables differ");
    }
    let mut second = BytesMut::new();
    again.encode(&mut second).expect("encodes a second time");
    assert_eq!(wire, second, "second encoding differs from the first");
});
