//! The bytes waiting for the socket, in order: frames encoded into one growing buffer, and
//! large bodies queued by reference between them, so a big message is written from the
//! caller's own [`Bytes`] (vectored) instead of being copied into the buffer.
//!
//! ```text
//!   sealed: [ frames ][ body slice ][ frames ][ body slice ] ...   open: [ frames being encoded ]
//!            <------------------------- oldest first -------------------------------------->
//! ```
//!
//! The driver writes [`chunks`](Outgoing::chunks) and removes what it wrote with
//! [`advance`](Outgoing::advance), or takes everything at once with [`take`](Outgoing::take).
//! Either bumps the [`generation`](Outgoing::generation): a position in the open buffer
//! remembered before (the machine remembers where its last ack is, to fold the next one into
//! it) is then stale.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// The bytes waiting to be sent. See the module docs.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Whole pieces, oldest first, all before `open`.
    sealed: VecDeque<Bytes>,
    sealed_len: usize,
    /// Where frames are encoded; its bytes follow every sealed piece.
    open: BytesMut,
    generation: u64,
}

impl Outgoing {
    /// Bytes waiting in all.
    pub fn len(&self) -> usize {
        self.sealed_len + self.open.len()
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bumped whenever bytes leave or the open buffer is sealed: positions in the open buffer
    /// taken before are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The buffer frames are encoded into; it follows everything queued before.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.open
    }

    /// Queues `bytes` by reference after everything queued so far (the open buffer is sealed
    /// first).
    pub fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal();
        self.sealed_len += bytes.len();
        self.sealed.push_back(bytes);
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            let frames = self.open.split().freeze();
            self.sealed_len += frames.len();
            self.sealed.push_back(frames);
            self.generation += 1;
        }
    }

    /// Fills `dst` with the waiting bytes, oldest first, as far as it has room; returns how
    /// many slices it filled.
    pub fn chunks<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let pieces = self
            .sealed
            .iter()
            .map(|b| &b[..])
            .chain((!self.open.is_empty()).then_some(&self.open[..]));
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(pieces) {
            *slot = IoSlice::new(piece);
            n += 1;
        }
        n
    }

    /// Removes the first `n` bytes (they were written).
    ///
    /// # Panics
    /// When `n` is more than [`len`](Self::len).
    pub fn advance(&mut self, mut n: usize) {
        assert!(
            n <= self.len(),
            "advance past the end of the outgoing bytes"
        );
        if n == 0 {
            return;
        }
        self.generation += 1;
        while n > 0 {
            let Some(front) = self.sealed.front_mut() else {
                self.open.advance(n);
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.sealed_len -= k;
            n -= k;
            if front.is_empty() {
                self.sealed.pop_front();
            }
        }
    }

    /// Takes every waiting byte, in order, leaving nothing.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        self.generation += 1;
        self.sealed_len = 0;
        self.sealed.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(out: &Outgoing) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 16];
        let n = out.chunks(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn shared_pieces_keep_their_place_between_frames() {
        let mut out = Outgoing::default();
        out.buf().extend_from_slice(b"ab");
        out.push_shared(Bytes::from_static(b"BODY"));
        out.buf().extend_from_slice(b"cd");
        assert_eq!(out.len(), 8);
        assert_eq!(all(&out), b"abBODYcd");
        out.advance(3);
        assert_eq!(all(&out), b"ODYcd");
        out.advance(4);
        assert_eq!(all(&out), b"d");
        let taken: Vec<u8> = out.take().concat();
        assert_eq!(taken, b"d");
        assert!(out.is_empty());
    }

    #[test]
    fn leaving_bytes_and_sealing_make_positions_stale() {
        let mut out = Outgoing::default();
        let g = out.generation();
        out.buf().extend_from_slice(b"x");
        assert_eq!(out.generation(), g, "appending keeps positions");
        out.push_shared(Bytes::from_static(b"y"));
        let sealed = out.generation();
        assert_ne!(sealed, g);
        out.advance(1);
        assert_ne!(out.generation(), sealed);
        let before = out.generation();
        out.take();
        assert_ne!(out.generation(), before);
    }

    #[test]
    fn chunks_stop_at_the_room_given() {
        let mut out = Outgoing::default();
        for piece in [&b"1"[..], b"2", b"3"] {
            out.buf().extend_from_slice(b"-");
            out.push_shared(Bytes::copy_from_slice(piece));
        }
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(out.chunks(&mut slices), 2);
        assert_eq!(&slices[0][..], b"-");
        assert_eq!(&slices[1][..], b"1");
    }
}
