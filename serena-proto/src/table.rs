//! Field tables and field arrays, with every value type of RabbitMQ's AMQP 0-9-1 errata.
//!
//! | tag | [`FieldValue`] | wire form |
//! |-----|----------------|-----------|
//! | `t` | `Bool` | octet, 0 or 1 |
//! | `b` | `I8` | signed octet |
//! | `B` | `U8` | octet |
//! | `s` | `I16` | signed 16-bit |
//! | `u` | `U16` | 16-bit |
//! | `I` | `I32` | signed 32-bit |
//! | `i` | `U32` | 32-bit |
//! | `l` | `I64` | signed 64-bit |
//! | `L` | `U64` | 64-bit (the spec's long-long-uint; RabbitMQ itself sends `l`) |
//! | `f` | `F32` | IEEE 754 single |
//! | `d` | `F64` | IEEE 754 double |
//! | `D` | `Decimal` | scale octet + signed 32-bit value |
//! | `S` | `LongString` | 32-bit length + bytes |
//! | `x` | `ByteArray` | 32-bit length + bytes |
//! | `A` | `Array` | 32-bit length + tagged values |
//! | `T` | `Timestamp` | 64-bit seconds since the epoch |
//! | `F` | `Table` | 32-bit length + (short string key, tagged value) pairs |
//! | `V` | `Void` | nothing |
//!
//! A table keeps its entries in wire order, so decode-then-encode gives back the same bytes.
//! Nesting of tables and arrays is capped at [`MAX_NESTING`] levels, on decode and on encode,
//! so hostile input cannot exhaust the stack.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, put_longstr, put_shortstr};
use super::error::{DecodeError, EncodeError};
use super::types::{LongString, ShortString};

/// How deeply tables and arrays may nest inside each other.
pub const MAX_NESTING: usize = 32;

/// A decimal number: `value / 10^scale`, so scale 1 and value -5 is -0.5.
///
/// The value is signed, as the AMQP 0-9-1 spec (section 4.2.5.5), RabbitMQ, the Java client and
/// pika have it. `Display` writes the exact number with `scale` digits after the point
/// (`-0.5`, `12.50`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: i32,
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.value < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        // At least one digit before the point: 5 at scale 3 is 0.005.
        let digits = format!("{:0>width$}", self.value.unsigned_abs(), width = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        if frac.is_empty() {
            f.pad(&format!("{sign}{int}"))
        } else {
            f.pad(&format!("{sign}{int}.{frac}"))
        }
    }
}

/// One value in a field table or field array.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean.
    Bool(bool),
    /// `b`: signed 8-bit integer.
    I8(i8),
    /// `B`: unsigned 8-bit integer.
    U8(u8),
    /// `s`: signed 16-bit integer.
    I16(i16),
    /// `u`: unsigned 16-bit integer.
    U16(u16),
    /// `I`: signed 32-bit integer.
    I32(i32),
    /// `i`: unsigned 32-bit integer.
    U32(u32),
    /// `l`: signed 64-bit integer.
    I64(i64),
    /// `L`: unsigned 64-bit integer.
    U64(u64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal.
    Decimal(Decimal),
    /// `S`: long string (bytes, usually UTF-8).
    LongString(LongString),
    /// `x`: byte array.
    ByteArray(Bytes),
    /// `A`: array of values.
    Array(Vec<FieldValue>),
    /// `T`: timestamp, seconds since the Unix epoch.
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
}

impl FieldValue {
    /// The type tag that precedes this value on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::U64(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongString(_) => b'S',
            FieldValue::ByteArray(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// The text of a long string value, when it is one and is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(s) => s.as_str(),
            _ => None,
        }
    }

    /// The value as an `i64`, for any integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a `bool`, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The nested table, when this value is one.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for FieldValue {
            fn from(v: $t) -> Self {
                FieldValue::$v(v.into())
            }
        }
    )*};
}

from_scalar! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, u64 => U64, f32 => F32, f64 => F64, Decimal => Decimal,
    LongString => LongString, &str => LongString, String => LongString,
    Vec<FieldValue> => Array, FieldTable => Table,
}

/// A field table: ordered (key, value) pairs, as on the wire.
///
/// Keys are unique through [`insert`](Self::insert), which replaces an existing entry in place;
/// lookups are linear, which is the fast choice for the handful of entries tables hold.
#[derive(Clone, PartialEq, Default)]
pub struct FieldTable {
    entries: Vec<(ShortString, FieldValue)>,
}

impl FieldTable {
    /// An empty table.
    pub const fn new() -> Self {
        FieldTable {
            entries: Vec::new(),
        }
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(
        &mut self,
        key: impl Into<ShortString>,
        value: impl Into<FieldValue>,
    ) -> Option<FieldValue> {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, key: impl Into<ShortString>, value: impl Into<FieldValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Removes and returns the value under `key`.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let at = self.entries.iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.entries.remove(at).1)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key of the first NaN or infinite float, searching nested tables and arrays.
    /// RabbitMQ closes the connection on such a value.
    pub fn find_non_finite_float(&self) -> Option<&str> {
        fn in_value<'a>(key: &'a str, v: &'a FieldValue) -> Option<&'a str> {
            match v {
                FieldValue::F32(f) if !f.is_finite() => Some(key),
                FieldValue::F64(f) if !f.is_finite() => Some(key),
                FieldValue::Table(t) => t.find_non_finite_float(),
                FieldValue::Array(a) => a.iter().find_map(|v| in_value(key, v)),
                _ => None,
            }
        }
        self.entries.iter().find_map(|(k, v)| in_value(k, v))
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortString, &FieldValue)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl std::fmt::Debug for FieldTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<ShortString>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut t = FieldTable::new();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t
    }
}

impl IntoIterator for FieldTable {
    type Item = (ShortString, FieldValue);
    type IntoIter = std::vec::IntoIter<(ShortString, FieldValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Writes a 32-bit length, runs `body`, then patches the length in.
fn length_prefixed(
    buf: &mut BytesMut,
    context: &'static str,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let at = buf.len();
    buf.put_u32(0);
    body(buf)?;
    let len = buf.len() - at - 4;
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLong { context, len })?;
    buf[at..at + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

fn check_depth(depth: usize, context: &'static str) -> Result<(), EncodeError> {
    if depth >= MAX_NESTING {
        return Err(EncodeError::TooDeep {
            context,
            max: MAX_NESTING,
        });
    }
    Ok(())
}

pub(crate) fn encode_table(
    buf: &mut BytesMut,
    table: &FieldTable,
    context: &'static str,
    depth: usize,
) -> Result<(), EncodeError> {
    check_depth(depth, context)?;
    length_prefixed(buf, context, |buf| {
        for (k, v) in &table.entries {
            put_shortstr(buf, k.as_str().as_bytes(), context)?;
            encode_value(buf, v, context, depth)?;
        }
        Ok(())
    })
}

fn encode_array(
    buf: &mut BytesMut,
    values: &[FieldValue],
    context: &'static str,
    depth: usize,
) -> Result<(), EncodeError> {
    check_depth(depth, context)?;
    length_prefixed(buf, context, |buf| {
        values
            .iter()
            .try_for_each(|v| encode_value(buf, v, context, depth))
    })
}

fn encode_value(
    buf: &mut BytesMut,
    v: &FieldValue,
    context: &'static str,
    depth: usize,
) -> Result<(), EncodeError> {
    buf.put_u8(v.tag());
    match v {
        FieldValue::Bool(b) => buf.put_u8(u8::from(*b)),
        FieldValue::I8(n) => buf.put_i8(*n),
        FieldValue::U8(n) => buf.put_u8(*n),
        FieldValue::I16(n) => buf.put_i16(*n),
        FieldValue::U16(n) => buf.put_u16(*n),
        FieldValue::I32(n) => buf.put_i32(*n),
        FieldValue::U32(n) => buf.put_u32(*n),
        FieldValue::I64(n) => buf.put_i64(*n),
        FieldValue::U64(n) | FieldValue::Timestamp(n) => buf.put_u64(*n),
        FieldValue::F32(n) => buf.put_f32(*n),
        FieldValue::F64(n) => buf.put_f64(*n),
        FieldValue::Decimal(d) => {
            buf.put_u8(d.scale);
            buf.put_i32(d.value);
        }
        FieldValue::LongString(s) => put_longstr(buf, s.as_bytes(), context)?,
        FieldValue::ByteArray(b) => put_longstr(buf, b, context)?,
        FieldValue::Array(a) => encode_array(buf, a, context, depth + 1)?,
        FieldValue::Table(t) => encode_table(buf, t, context, depth + 1)?,
        FieldValue::Void => {}
    }
    Ok(())
}

/// Decodes the entries of a table whose length prefix was already read.
pub(crate) fn decode_table(
    bytes: Bytes,
    context: &'static str,
    depth: usize,
) -> Result<FieldTable, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::TooDeep {
            context,
            max: MAX_NESTING,
        });
    }
    let mut r = Reader::new(bytes);
    let mut table = FieldTable::new();
    while r.remaining() > 0 {
        let key = r.shortstr(context)?;
        let value = decode_value(&mut r, context, depth)?;
        // Entries are kept as sent, duplicates included, so re-encoding gives the same bytes.
        table.entries.push((key, value));
    }
    Ok(table)
}

fn decode_array(
    bytes: Bytes,
    context: &'static str,
    depth: usize,
) -> Result<Vec<FieldValue>, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::TooDeep {
            context,
            max: MAX_NESTING,
        });
    }
    let mut r = Reader::new(bytes);
    let mut values = Vec::new();
    while r.remaining() > 0 {
        values.push(decode_value(&mut r, context, depth)?);
    }
    Ok(values)
}

fn decode_value(
    r: &mut Reader,
    context: &'static str,
    depth: usize,
) -> Result<FieldValue, DecodeError> {
    let tag = r.octet(context)?;
    Ok(match tag {
        b't' => FieldValue::Bool(r.octet(context)? != 0),
        b'b' => FieldValue::I8(r.octet(context)? as i8),
        b'B' => FieldValue::U8(r.octet(context)?),
        b's' => FieldValue::I16(r.short(context)? as i16),
        b'u' => FieldValue::U16(r.short(context)?),
        b'I' => FieldValue::I32(r.long(context)? as i32),
        b'i' => FieldValue::U32(r.long(context)?),
        b'l' => FieldValue::I64(r.longlong(context)? as i64),
        b'L' => FieldValue::U64(r.longlong(context)?),
        b'f' => FieldValue::F32(f32::from_bits(r.long(context)?)),
        b'd' => FieldValue::F64(f64::from_bits(r.longlong(context)?)),
        b'D' => FieldValue::Decimal(Decimal {
            scale: r.octet(context)?,
            value: r.long(context)? as i32,
        }),
        b'S' => FieldValue::LongString(r.longstr(context)?),
        b'x' => FieldValue::ByteArray(r.long_prefixed(context)?),
        b'A' => FieldValue::Array(decode_array(r.long_prefixed(context)?, context, depth + 1)?),
        b'T' => FieldValue::Timestamp(r.timestamp(context)?),
        b'F' => FieldValue::Table(decode_table(r.long_prefixed(context)?, context, depth + 1)?),
        b'V' => FieldValue::Void,
        tag => return Err(DecodeError::UnknownFieldType { context, tag }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_display_as_their_exact_number() {
        let d = |scale, value| Decimal { scale, value }.to_string();
        assert_eq!(d(1, -5), "-0.5");
        assert_eq!(d(2, 1250), "12.50");
        assert_eq!(d(0, 7), "7");
        assert_eq!(d(0, 0), "0");
        assert_eq!(d(3, 5), "0.005");
        assert_eq!(d(3, -5), "-0.005");
        assert_eq!(d(2, -12_345), "-123.45");
        assert_eq!(d(0, i32::MIN), "-2147483648");
        assert_eq!(d(10, i32::MIN), "-0.2147483648");
        assert_eq!(d(12, i32::MAX), "0.002147483647");
        assert_eq!(d(255, 1).len(), 257);
        assert_eq!(
            format!(
                "{:>6}",
                Decimal {
                    scale: 1,
                    value: -5
                }
            ),
            "  -0.5"
        );
    }
}
