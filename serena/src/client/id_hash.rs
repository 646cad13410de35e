//! Tables keyed by this client's own sequential `u64` ids (RPC call ids, the reliable
//! publisher's message ids): one multiplication hashes them, where SipHash, the default, cost
//! more than the rest of a lookup. The ids are ours, so nobody can flood a table with them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of a `u64`: the high bits, which the table uses for its tags, depend on
/// every bit of the id; the low bits, its slots, are a permutation of the id's.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A table keyed by ids, hashed with [`IdHash`].
pub(crate) type IdMap<T> = HashMap<u64, T, BuildHasherDefault<IdHash>>;
