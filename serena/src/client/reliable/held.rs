//! The reliable publisher's held messages, by id.
//!
//! Ids count up in publish order and messages mostly settle in that order, so they live in a
//! ring indexed by `id - base`: adding one writes the back, settling one the front, in the
//! order the memory lies (a hash table scattered a thousand held messages over its slots, and
//! the settles of a full window missed the cache). A message held much longer than the others
//! (a confirmation the caller keeps without awaiting it) would stretch the ring without bound:
//! once the ring spans more than `span` ids its front moves to an overflow table, so the ring's
//! length stays bounded by `span` whatever the caller does.

use std::collections::VecDeque;

use crate::client::id_hash::IdMap;

/// Values by increasing ids; see the module's docs.
pub(super) struct Held<T> {
    /// The id of `ring[0]`.
    base: u64,
    /// `None` where a value was removed (or an id never added); never `None` at the front.
    ring: VecDeque<Option<T>>,
    /// Values moved out of the ring's front while still held; all their ids are below `base`.
    overflow: IdMap<T>,
    len: usize,
    /// The most ids the ring spans.
    span: usize,
}

impl<T> Held<T> {
    /// An empty table whose ring spans at most `span` ids (at least 1).
    pub(super) fn new(span: usize) -> Self {
        Held {
            base: 0,
            ring: VecDeque::new(),
            overflow: IdMap::default(),
            len: 0,
            span: span.max(1),
        }
    }

    /// How many values are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds `value` under `id`, which is above every id added before.
    pub(super) fn insert(&mut self, id: u64, value: T) {
        if self.ring.is_empty() {
            self.base = id;
        }
        let end = self.base + self.ring.len() as u64;
        if id < end {
            // Not above the others: kept aside rather than misplaced.
            debug_assert!(false, "id {id} added after {end}");
            if self.overflow.insert(id, value).is_none() {
                self.len += 1;
            }
            return;
        }
        for _ in end..id {
            self.ring.push_back(None);
        }
        self.ring.push_back(Some(value));
        self.len += 1;
        while self.ring.len() > self.span {
            if let Some(Some(value)) = self.ring.pop_front() {
                self.overflow.insert(self.base, value);
            }
            self.base += 1;
        }
        self.trim();
    }

    /// Drops the empty slots at the ring's front.
    fn trim(&mut self) {
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.base += 1;
        }
    }

    /// Where `id` is in the ring, if it is in the ring's range.
    fn slot(&self, id: u64) -> Option<usize> {
        let at = id.checked_sub(self.base)?;
        (at < self.ring.len() as u64).then_some(at as usize)
    }

    /// The value of `id`.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.slot(id) {
            Some(at) => self.ring[at].as_mut(),
            None => self.overflow.get_mut(&id),
        }
    }

    /// True when `id` is held.
    pub(super) fn contains(&self, id: u64) -> bool {
        match self.slot(id) {
            Some(at) => self.ring[at].is_some(),
            None => self.overflow.contains_key(&id),
        }
    }

    /// Takes the value of `id` out.
    pub(super) fn remove(&mut self, id: u64) -> Option<T> {
        let value = match self.slot(id) {
            Some(at) => {
                let value = self.ring[at].take();
                if at == 0 {
                    self.trim();
                }
                value
            }
            None => self.overflow.remove(&id),
        }?;
        self.len -= 1;
        Some(value)
    }

    /// Every held id with its value, the overflow's first (in no order), then the ring's in
    /// order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let ring = self
            .ring
            .iter()
            .enumerate()
            .filter_map(|(at, v)| Some((self.base + at as u64, v.as_ref()?)));
        self.overflow.iter().map(|(id, v)| (*id, v)).chain(ring)
    }

    /// Every held value, mutably, in no particular order.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.overflow
            .values_mut()
            .chain(self.ring.iter_mut().flatten())
    }

    /// Every held id, in increasing order.
    pub(super) fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.overflow.keys().copied().collect();
        ids.sort_unstable();
        ids.extend(
            self.ring
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_some())
                .map(|(at, _)| self.base + at as u64),
        );
        ids
    }

    /// Takes every value out.
    pub(super) fn take_all(&mut self) -> Vec<T> {
        self.len = 0;
        let overflow = std::mem::take(&mut self.overflow).into_values();
        let ring = std::mem::take(&mut self.ring).into_iter().flatten();
        overflow.chain(ring).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Adds the next id, skipping this many.
        Insert(u8),
        /// Removes the held id at this position (modulo how many are held).
        Remove(usize),
        /// Removes an id that may not be held.
        RemoveAny(u64),
        /// Changes the value at this position.
        Touch(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3).prop_map(Op::Insert),
            3 => any::<usize>().prop_map(Op::Remove),
            1 => (0u64..300).prop_map(Op::RemoveAny),
            1 => any::<usize>().prop_map(Op::Touch),
        ]
    }

    proptest! {
        /// The table holds what a plain ordered map holds, whatever the order of removals,
        /// and its ring never spans more than `span` ids.
        #[test]
        fn it_holds_what_a_map_holds(span in 1usize..20, ops in proptest::collection::vec(op(), 0..300)) {
            let mut held = Held::new(span);
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Insert(skip) => {
                        next += u64::from(skip);
                        held.insert(next, next * 10);
                        model.insert(next, next * 10);
                        next += 1;
                    }
                    Op::Remove(at) if !model.is_empty() => {
                        let id = *model.keys().nth(at % model.len()).unwrap();
                        prop_assert_eq!(held.remove(id), model.remove(&id));
                    }
                    Op::Remove(_) => {}
                    Op::RemoveAny(id) => prop_assert_eq!(held.remove(id), model.remove(&id)),
                    Op::Touch(at) if !model.is_empty() => {
                        let id = *model.keys().nth(at % model.len()).unwrap();
                        *held.get_mut(id).unwrap() += 1;
                        *model.get_mut(&id).unwrap() += 1;
                    }
                    Op::Touch(_) => {}
                }
                prop_assert!(held.ring.len() <= span);
                prop_assert_eq!(held.len(), model.len());
                prop_assert_eq!(held.ids(), model.keys().copied().collect::<Vec<_>>());
                let mut seen: Vec<_> = held.iter().map(|(id, v)| (id, *v)).collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, model.iter().map(|(id, v)| (*id, *v)).collect::<Vec<_>>());
                for id in 0..next + 2 {
                    prop_assert_eq!(held.contains(id), model.contains_key(&id));
                }
            }
            let mut all = held.take_all();
            all.sort_unstable();
            prop_assert_eq!(all, model.values().copied().collect::<Vec<_>>());
            prop_assert!(held.is_empty());
        }
    }

    #[test]
    fn a_value_held_long_moves_aside_and_the_ring_stays_short() {
        let mut held = Held::new(8);
        held.insert(0, "kept");
        for id in 1..10_000 {
            held.insert(id, "passing");
            assert_eq!(held.remove(id), Some("passing"));
        }
        assert!(held.ring.len() <= 8);
        assert_eq!(held.len(), 1);
        assert_eq!(held.remove(0), Some("kept"));
        assert!(held.is_empty());
    }
}
