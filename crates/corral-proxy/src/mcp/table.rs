//! A map with a fixed capacity: past it, the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A bounded map (first in, first out).
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    /// An empty map that holds at most `cap` entries.
    pub(crate) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Inserts or replaces; a new key past the capacity evicts the oldest.
    pub(crate) fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_some() {
            return;
        }
        self.order.push_back(k);
        while self.map.len() > self.cap {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.map.remove(k)?;
        self.order.retain(|x| x != k);
        Some(v)
    }

    /// Keeps the entries `keep` says to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.map.retain(|_, v| keep(v));
        let map = &self.map;
        self.order.retain(|k| map.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_goes_first() {
        let mut t = Bounded::new(2);
        t.insert(1, "a");
        t.insert(2, "b");
        t.insert(1, "c");
        t.insert(3, "d");
        assert_eq!(t.get(&1), None);
        assert_eq!(t.get(&2), Some(&"b"));
        assert_eq!(t.get(&3), Some(&"d"));
        assert_eq!(t.remove(&2), Some("b"));
        t.insert(4, "e");
        t.insert(5, "f");
        assert_eq!(t.len(), 2);
        t.retain(|v| *v != "e");
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&5), Some(&"f"));
    }
}
