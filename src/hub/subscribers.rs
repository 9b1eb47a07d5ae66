//! The local subscribers of one channel, keyed by session.
//!
//! Most channels an instance holds have one local subscriber: every connection has
//! a personal channel of its own. An `IndexMap` holding one entry allocates an index
//! table and an entry vector sized for three (about 256 bytes with jemalloc's size
//! classes); a vector sized for one holds it in 48. So a channel keeps a plain
//! vector, searched linearly, until it has more than [`FEW`] subscribers, and an
//! `IndexMap` from then on, so that joining or leaving a room of thousands stays
//! O(1) (optimisation log entry 23 of docs/BENCHMARKS.md).

use indexmap::IndexMap;

use super::SessionId;

/// Up to this many subscribers, a linear search of a vector.
const FEW: usize = 8;

pub enum Subscribers<T> {
    Few(Vec<(SessionId, T)>),
    Many(IndexMap<SessionId, T>),
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Subscribers::Few(Vec::new())
    }
}

impl<T> Subscribers<T> {
    /// Adds `id` with `value` unless it is a subscriber already (then `value` is
    /// dropped and what it held stays). Returns whether it was added.
    pub fn add(&mut self, id: SessionId, value: T) -> bool {
        if self.get_mut(id).is_some() {
            return false;
        }
        match self {
            Subscribers::Few(v) if v.len() < FEW => {
                // The first subscriber costs one entry, not the four a first
                // push would make; later ones grow the vector as usual.
                if v.is_empty() {
                    v.reserve_exact(1);
                }
                v.push((id, value));
            }
            Subscribers::Few(v) => {
                let mut m: IndexMap<SessionId, T> = v.drain(..).collect();
                m.insert(id, value);
                *self = Subscribers::Many(m);
            }
            Subscribers::Many(m) => {
                m.insert(id, value);
            }
        }
        true
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut T> {
        match self {
            Subscribers::Few(v) => v.iter_mut().find(|(k, _)| *k == id).map(|(_, t)| t),
            Subscribers::Many(m) => m.get_mut(&id),
        }
    }

    /// Removes `id` (the order of the others may change).
    pub fn remove(&mut self, id: SessionId) -> Option<T> {
        match self {
            Subscribers::Few(v) => {
                let i = v.iter().position(|(k, _)| *k == id)?;
                Some(v.swap_remove(i).1)
            }
            Subscribers::Many(m) => m.swap_remove(&id),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Subscribers::Few(v) => v.len(),
            Subscribers::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every subscriber.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        match self {
            Subscribers::Few(v) => v.iter().for_each(|(_, t)| f(t)),
            Subscribers::Many(m) => m.values().for_each(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &Subscribers<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        s.for_each(|v| out.push(*v));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_channel_keeps_every_subscriber_across_the_switch_to_a_map() {
        let mut s = Subscribers::default();
        for id in 0..20u64 {
            assert!(s.add(id, id * 10));
            assert!(s.get_mut(id).is_some());
        }
        assert!(matches!(s, Subscribers::Many(_)));
        assert_eq!(s.len(), 20);
        assert_eq!(ids(&s), (0..20).map(|i| i * 10).collect::<Vec<_>>());
        for id in 0..19u64 {
            assert_eq!(s.remove(id), Some(id * 10));
            assert!(s.get_mut(id).is_none());
        }
        assert_eq!(s.remove(3), None);
        assert_eq!(ids(&s), vec![190]);
        assert_eq!(s.remove(19), Some(190));
        assert!(s.is_empty());
    }

    #[test]
    fn adding_a_subscriber_twice_keeps_the_first_instead_of_adding_a_second() {
        let mut s = Subscribers::default();
        assert!(s.add(7, 1u64));
        assert!(!s.add(7, 2));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get_mut(7).copied(), Some(1));
        for id in 0..FEW as u64 {
            assert!(s.add(id + 100, 0));
        }
        assert!(matches!(s, Subscribers::Many(_)));
        assert!(!s.add(7, 3));
        assert_eq!(s.len(), FEW + 1);
        assert_eq!(s.get_mut(7).copied(), Some(1));
    }

    #[test]
    fn the_first_subscriber_allocates_room_for_one() {
        let mut s = Subscribers::default();
        s.add(1, 0u64);
        let Subscribers::Few(v) = &s else {
            panic!("one subscriber is kept in a vector")
        };
        assert_eq!(v.capacity(), 1);
    }
}
