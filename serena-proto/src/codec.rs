//! Primitive readers and writers for method arguments and properties: integers, packed bits,
//! short and long strings, field tables.
//!
//! Consecutive `bit` fields share octets, least significant bit first, as the spec says; any other
//! field closes the current octet. The reader works on a [`Bytes`] so strings are sliced out of
//! the frame without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::table::{self, FieldTable};
use super::types::{LongString, ShortString};

/// Writes method arguments or properties into a buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut BytesMut,
    bits: u8,
    nbits: u8,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Writer {
            buf,
            bits: 0,
            nbits: 0,
        }
    }

    fn flush_bits(&mut self) {
        if self.nbits > 0 {
            self.buf.put_u8(self.bits);
            self.bits = 0;
            self.nbits = 0;
        }
    }

    /// Ends the argument list, writing a pending octet of bits.
    pub(crate) fn finish(mut self) {
        self.flush_bits();
    }

    pub(crate) fn bit(&mut self, v: &bool, _: &'static str) -> Result<(), EncodeError> {
        if self.nbits == 8 {
            self.flush_bits();
        }
        if *v {
            self.bits |= 1 << self.nbits;
        }
        self.nbits += 1;
        Ok(())
    }

    pub(crate) fn octet(&mut self, v: &u8, _: &'static str) -> Result<(), EncodeError> {
        self.flush_bits();
        self.buf.put_u8(*v);
        Ok(())
    }

    pub(crate) fn short(&mut self, v: &u16, _: &'static str) -> Result<(), EncodeError> {
        self.flush_bits();
        self.buf.put_u16(*v);
        Ok(())
    }

    pub(crate) fn long(&mut self, v: &u32, _: &'static str) -> Result<(), EncodeError> {
        self.flush_bits();
        self.buf.put_u32(*v);
        Ok(())
    }

    pub(crate) fn longlong(&mut self, v: &u64, _: &'static str) -> Result<(), EncodeError> {
        self.flush_bits();
        self.buf.put_u64(*v);
        Ok(())
    }

    pub(crate) fn timestamp(&mut self, v: &u64, context: &'static str) -> Result<(), EncodeError> {
        self.longlong(v, context)
    }

    pub(crate) fn shortstr(
        &mut self,
        v: &ShortString,
        context: &'static str,
    ) -> Result<(), EncodeError> {
        self.flush_bits();
        put_shortstr(self.buf, v.as_str().as_bytes(), context)
    }

    pub(crate) fn longstr(
        &mut self,
        v: &LongString,
        context: &'static str,
    ) -> Result<(), EncodeError> {
        self.flush_bits();
        put_longstr(self.buf, v.as_bytes(), context)
    }

    pub(crate) fn table(
        &mut self,
        v: &FieldTable,
        context: &'static str,
    ) -> Result<(), EncodeError> {
        self.flush_bits();
        table::encode_table(self.buf, v, context, 0)
    }
}

pub(crate) fn put_shortstr(
    buf: &mut BytesMut,
    s: &[u8],
    context: &'static str,
) -> Result<(), EncodeError> {
    let len = u8::try_from(s.len()).map_err(|_| EncodeError::ShortStringTooLong {
        context,
        len: s.len(),
    })?;
    buf.put_u8(len);
    buf.put_slice(s);
    Ok(())
}

pub(crate) fn put_longstr(
    buf: &mut BytesMut,
    s: &[u8],
    context: &'static str,
) -> Result<(), EncodeError> {
    let len = u32::try_from(s.len()).map_err(|_| EncodeError::TooLong {
        context,
        len: s.len(),
    })?;
    buf.put_u32(len);
    buf.put_slice(s);
    Ok(())
}

/// Reads method arguments or properties from a frame payload.
pub(crate) struct Reader {
    buf: Bytes,
    bits: u8,
    /// Index of the next bit in `bits`; 8 means no octet is open.
    bit_idx: u8,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader {
            buf,
            bits: 0,
            bit_idx: 8,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&mut self, n: usize, context: &'static str) -> Result<(), DecodeError> {
        self.bit_idx = 8;
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                context,
                needed: n,
                available: self.buf.len(),
            });
        }
        Ok(())
    }

    /// Fails when bytes are left after the last field.
    pub(crate) fn finish(self, context: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                context,
                extra: self.buf.len(),
            })
        }
    }

    pub(crate) fn bit(&mut self, context: &'static str) -> Result<bool, DecodeError> {
        if self.bit_idx >= 8 {
            self.need(1, context)?;
            self.bits = self.buf.get_u8();
            self.bit_idx = 0;
        }
        let v = self.bits & (1 << self.bit_idx) != 0;
        self.bit_idx += 1;
        Ok(v)
    }

    pub(crate) fn octet(&mut self, context: &'static str) -> Result<u8, DecodeError> {
        self.need(1, context)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn short(&mut self, context: &'static str) -> Result<u16, DecodeError> {
        self.need(2, context)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn long(&mut self, context: &'static str) -> Result<u32, DecodeError> {
        self.need(4, context)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn longlong(&mut self, context: &'static str) -> Result<u64, DecodeError> {
        self.need(8, context)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn timestamp(&mut self, context: &'static str) -> Result<u64, DecodeError> {
        self.longlong(context)
    }

    /// Takes the next `n` bytes without copying.
    pub(crate) fn bytes(&mut self, n: usize, context: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, context)?;
        Ok(self.buf.split_to(n))
    }

    pub(crate) fn shortstr(&mut self, context: &'static str) -> Result<ShortString, DecodeError> {
        let len = self.octet(context)? as usize;
        let bytes = self.bytes(len, context)?;
        ShortString::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { context })
    }

    /// The bytes of a 32-bit length-prefixed value.
    pub(crate) fn long_prefixed(&mut self, context: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.long(context)? as usize;
        self.bytes(len, context)
    }

    pub(crate) fn longstr(&mut self, context: &'static str) -> Result<LongString, DecodeError> {
        Ok(LongString::from(self.long_prefixed(context)?))
    }

    pub(crate) fn table(&mut self, context: &'static str) -> Result<FieldTable, DecodeError> {
        let bytes = self.long_prefixed(context)?;
        table::decode_table(bytes, context, 0)
    }
}
