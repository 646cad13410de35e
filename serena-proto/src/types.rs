//! The two AMQP string types, both backed by [`Bytes`] so decoding slices them out of the read
//! buffer without copying.

use bytes::Bytes;
use std::{borrow::Borrow, fmt, ops::Deref};

/// An AMQP short string: UTF-8 text of at most 255 bytes (names, routing keys, table keys).
///
/// Any length can be held; the 255-byte limit is checked when the string is encoded, which then
/// fails with [`EncodeError::ShortStringTooLong`](super::EncodeError::ShortStringTooLong) naming the
/// field, never truncating. Cloning is cheap (reference counted).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortString(Bytes);

impl ShortString {
    /// The largest length, in bytes, that AMQP allows on the wire.
    pub const MAX_LEN: usize = 255;

    /// An empty short string.
    pub const fn new() -> Self {
        ShortString(Bytes::new())
    }

    /// A short string borrowing a `'static` text, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        ShortString(Bytes::from_static(s.as_bytes()))
    }

    /// Checks that `bytes` are UTF-8 and wraps them without copying.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(ShortString(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        #[allow(unsafe_code)]
        // SAFETY: every constructor checks or guarantees UTF-8 and the bytes are immutable.
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The UTF-8 bytes, shared.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The part `range` of the text, sharing its bytes (nothing is copied); `None` when
    /// `range` is out of bounds or cuts a character.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<ShortString> {
        self.as_str().get(range.clone())?;
        Some(ShortString(self.0.slice(range)))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for ShortString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ShortString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ShortString {
    fn from(s: &str) -> Self {
        ShortString(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for ShortString {
    fn from(s: String) -> Self {
        ShortString(Bytes::from(s))
    }
}

impl From<&String> for ShortString {
    fn from(s: &String) -> Self {
        s.as_str().into()
    }
}

impl From<ShortString> for String {
    fn from(s: ShortString) -> Self {
        s.as_str().to_owned()
    }
}

impl PartialEq<str> for ShortString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An AMQP long string: up to 4 GiB of bytes, not required to be UTF-8 (RabbitMQ's `S` field
/// values, `connection.start` mechanisms, SASL responses, `update-secret` tokens).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongString(Bytes);

impl LongString {
    /// An empty long string.
    pub const fn new() -> Self {
        LongString(Bytes::new())
    }

    /// A long string borrowing `'static` bytes.
    pub const fn from_static(b: &'static [u8]) -> Self {
        LongString(Bytes::from_static(b))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text, when the bytes are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, consuming the string.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => write!(f, "b{:?}", self.0),
        }
    }
}

impl From<&str> for LongString {
    fn from(s: &str) -> Self {
        LongString(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongString {
    fn from(s: String) -> Self {
        LongString(Bytes::from(s))
    }
}

impl From<&[u8]> for LongString {
    fn from(b: &[u8]) -> Self {
        LongString(Bytes::copy_from_slice(b))
    }
}

impl From<Vec<u8>> for LongString {
    fn from(b: Vec<u8>) -> Self {
        LongString(Bytes::from(b))
    }
}

impl From<Bytes> for LongString {
    fn from(b: Bytes) -> Self {
        LongString(b)
    }
}

impl From<ShortString> for LongString {
    fn from(s: ShortString) -> Self {
        LongString(s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_shares_the_text_and_refuses_cut_characters() {
        let s = ShortString::from("ab-é12");
        assert_eq!(s.slice(0..2).as_deref(), Some("ab"));
        assert_eq!(s.slice(3..5).as_deref(), Some("é"));
        assert_eq!(s.slice(7..7).as_deref(), Some(""));
        assert_eq!(s.slice(4..5), None, "inside é");
        assert_eq!(s.slice(5..9), None, "past the end");
        let part = s.slice(5..7).unwrap();
        assert_eq!(part.as_bytes().as_ptr(), s.as_bytes()[5..].as_ptr());
    }
}
