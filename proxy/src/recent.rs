//! A bounded set that remembers the most recent keys, for logging something once per peer
//! rather than once per event: a client or upstream that fails in a loop would drown the log.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// A bounded set; when full, the oldest key is forgotten (and counts as new again).
#[derive(Debug)]
pub struct Recent<T> {
    capacity: usize,
    order: VecDeque<T>,
    members: HashSet<T>,
}

impl<T: Hash + Eq + Clone> Recent<T> {
    /// An empty set holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            order: VecDeque::with_capacity(capacity),
            members: HashSet::with_capacity(capacity),
        }
    }

    /// Adds `key`; true if it was not already there.
    pub fn insert(&mut self, key: T) -> bool {
        if !self.members.insert(key.clone()) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn keys_are_new_once_and_the_oldest_is_forgotten_when_full() {
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mut peers = Recent::new(2);
        assert!(peers.insert(ip(1)));
        assert!(!peers.insert(ip(1)), "a known address is not new");
        assert!(peers.insert(ip(2)));
        assert!(peers.insert(ip(3)), "the set is full: the oldest goes");
        assert!(peers.insert(ip(1)), "the forgotten address is new again");
        assert!(!peers.insert(ip(3)));
        assert_eq!(peers.members.len(), 2);
    }
}
