//! Ids, message bodies, the ledger of confirmed and consumed ids, and the workers' handler
//! that fills it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serena::worker::{ConsumerSpec, DeliveryContext, Handler, HandlerFuture, Outcome};
use tokio::time::sleep;

/// Bytes per message body: the id (12 bytes) and check bytes derived from it.
const BODY_LEN: usize = 128;
/// Sequence numbers at or above this are not ours: a guard on decoding, far above any run.
const MAX_SEQ: u64 = 1 << 32;
/// Each consumer's prefetch, and its handlers in flight.
const PREFETCH: u16 = 50;
const CONCURRENCY: usize = 8;

/// A message's identity: its publisher, and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id {
    pub(crate) publisher: u32,
    pub(crate) seq: u64,
}

fn check_byte(id: Id, i: usize) -> u8 {
    (id.seq as u8).wrapping_add(i as u8) ^ (id.publisher as u8).wrapping_mul(31)
}

/// The body of message `id`: publisher (4 bytes) and sequence number (8 bytes), big-endian,
/// then check bytes that depend on both.
pub(crate) fn encode_body(id: Id) -> [u8; BODY_LEN] {
    let mut body = [0u8; BODY_LEN];
    body[..4].copy_from_slice(&id.publisher.to_be_bytes());
    body[4..12].copy_from_slice(&id.seq.to_be_bytes());
    for (i, b) in body.iter_mut().enumerate().skip(12) {
        *b = check_byte(id, i);
    }
    body
}

/// The id in `body`, if the body is one of ours and intact.
fn decode_body(body: &[u8], publishers: u32) -> Option<Id> {
    if body.len() != BODY_LEN {
        return None;
    }
    let id = Id {
        publisher: u32::from_be_bytes(body[..4].try_into().ok()?),
        seq: u64::from_be_bytes(body[4..12].try_into().ok()?),
    };
    let intact = (12..BODY_LEN).all(|i| body[i] == check_byte(id, i));
    (id.publisher < publishers && id.seq < MAX_SEQ && intact).then_some(id)
}

/// A growable set of sequence numbers, one bit each.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// Adds `i`; true when it was not there yet.
    fn insert(&mut self, i: u64) -> bool {
        let word = (i / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let new = self.0[word] & mask == 0;
        self.0[word] |= mask;
        new
    }
}

/// Which ids were confirmed and which consumed, per publisher, with running counts.
#[derive(Default)]
pub(crate) struct Books {
    confirmed: Vec<Bits>,
    consumed: Vec<Bits>,
    /// Distinct confirmed ids.
    pub(crate) confirmed_count: u64,
    /// Distinct consumed ids.
    pub(crate) consumed_count: u64,
    /// Confirmed ids not consumed (yet).
    pub(crate) outstanding: u64,
    /// Deliveries of an id already consumed.
    pub(crate) duplicates: u64,
    /// Deliveries whose body was not one of ours, or damaged.
    pub(crate) malformed: u64,
}

/// Everything the publishers and workers report, shared by all of them.
#[derive(Default)]
pub(crate) struct Ledger {
    books: Mutex<Books>,
    /// Publishes handed to the connection, republishes included.
    pub(crate) published: AtomicU64,
    /// Publishes the broker nacked or returned (republished).
    pub(crate) nacked: AtomicU64,
    /// Publisher connections lost (and opened again).
    pub(crate) reconnects: AtomicU64,
}

impl Ledger {
    pub(crate) fn new(publishers: u32) -> Self {
        let books = Books {
            confirmed: (0..publishers).map(|_| Bits::default()).collect(),
            consumed: (0..publishers).map(|_| Bits::default()).collect(),
            ..Default::default()
        };
        Ledger {
            books: Mutex::new(books),
            ..Default::default()
        }
    }

    pub(crate) fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The broker confirmed `id`.
    pub(crate) fn confirm(&self, id: Id) {
        let b = &mut *self.books();
        let p = id.publisher as usize;
        if b.confirmed[p].insert(id.seq) {
            b.confirmed_count += 1;
            if !b.consumed[p].contains(id.seq) {
                b.outstanding += 1;
            }
        }
    }

    /// A handler got `id`.
    fn consume(&self, id: Id) {
        let b = &mut *self.books();
        let p = id.publisher as usize;
        if b.consumed[p].insert(id.seq) {
            b.consumed_count += 1;
            if b.confirmed[p].contains(id.seq) {
                b.outstanding -= 1;
            }
        } else {
            b.duplicates += 1;
        }
    }

    pub(crate) fn confirmed(&self) -> u64 {
        self.books().confirmed_count
    }

    pub(crate) fn outstanding(&self) -> u64 {
        self.books().outstanding
    }
}

/// The workers' handler: records each message's id, and the supervisor acks it after (a
/// damaged message is rejected and counted).
pub(crate) struct Recorder {
    pub(crate) name: &'static str,
    pub(crate) queue: &'static str,
    pub(crate) publishers: u32,
    pub(crate) ledger: Arc<Ledger>,
}

impl Handler for Recorder {
    fn spec(&self) -> ConsumerSpec {
        let mut spec = ConsumerSpec::new(self.name, self.queue);
        spec.prefetch = Some(PREFETCH);
        spec.concurrency = Some(CONCURRENCY);
        spec
    }

    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(id) = decode_body(&ctx.delivery.body, self.publishers) else {
                self.ledger.books().malformed += 1;
                return Outcome::Reject;
            };
            // Work that takes a moment, so handlers are in flight when a fault hits.
            if id.seq % 16 == 0 {
                sleep(Duration::from_millis(1)).await;
            }
            self.ledger.consume(id);
            Outcome::Ack
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_damage_is_caught() {
        let id = Id {
            publisher: 2,
            seq: 123_456,
        };
        let body = encode_body(id);
        assert_eq!(decode_body(&body, 3), Some(id));
        assert_eq!(decode_body(&body, 2), None, "publisher out of range");
        let mut damaged = body;
        damaged[100] ^= 1;
        assert_eq!(decode_body(&damaged, 3), None);
        assert_eq!(decode_body(&body[..64], 3), None);
    }

    #[test]
    fn the_books_count_lost_and_duplicate_ids() {
        let ledger = Ledger::new(1);
        let id = |seq| Id { publisher: 0, seq };
        ledger.confirm(id(0));
        ledger.confirm(id(1));
        ledger.consume(id(1));
        ledger.consume(id(1));
        // Consumed before its confirm was booked, and consumed without a confirm at all.
        ledger.consume(id(200));
        ledger.confirm(id(200));
        ledger.consume(id(300));
        let b = ledger.books();
        assert_eq!(
            (
                b.confirmed_count,
                b.consumed_count,
                b.outstanding,
                b.duplicates
            ),
            (3, 3, 1, 1)
        );
    }
}
