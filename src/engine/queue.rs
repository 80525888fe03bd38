//! Fair admission: the waiting room between the HTTP side and the engine.
//!
//! SECURITY / fairness: requests wait in one FIFO per API key, and keys are served
//! round-robin, so a key that floods the queue delays only itself: every other key's
//! next request is at most one turn per waiting key away. The whole room is bounded
//! (`limits.queue_depth`); beyond it the caller answers 503 with Retry-After instead of
//! waiting. A request whose client has gone is dropped without costing compute
//! (`retain`).
//!
//! Pure data structure, no locking and no llama.cpp: the engine wraps it in a mutex
//! that is never held across a model call.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The room is full.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Debug)]
pub struct FairQueue<T> {
    capacity: usize,
    len: usize,
    /// Keys with at least one waiting request, in the order they get their next turn.
    turns: VecDeque<Arc<str>>,
    waiting: HashMap<Arc<str>, VecDeque<T>>,
}

impl<T> FairQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            len: 0,
            turns: VecDeque::new(),
            waiting: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add at the back of `key`'s own line; a key with no line yet takes the last turn.
    pub fn push(&mut self, key: &Arc<str>, item: T) -> Result<(), (Full, T)> {
        if self.len >= self.capacity {
            return Err((Full, item));
        }
        let line = self.waiting.entry(key.clone()).or_default();
        if line.is_empty() {
            self.turns.push_back(key.clone());
        }
        line.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The oldest request of the key whose turn it is; that key then goes to the back.
    pub fn pop(&mut self) -> Option<T> {
        let key = self.turns.pop_front()?;
        let line = self.waiting.get_mut(&key)?;
        let item = line.pop_front();
        if line.is_empty() {
            self.waiting.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Keep only the requests for which `keep` is true; returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let mut dropped = 0;
        for line in self.waiting.values_mut() {
            let before = line.len();
            line.retain(&mut keep);
            dropped += before - line.len();
        }
        if dropped > 0 {
            self.waiting.retain(|_, line| !line.is_empty());
            let waiting = &self.waiting;
            self.turns.retain(|k| waiting.contains_key(k));
            self.len -= dropped;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn one_key_is_fifo() {
        let mut q = FairQueue::new(10);
        for i in 0..3 {
            q.push(&key("a"), i).unwrap();
        }
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(0), Some(1), Some(2), None)
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_flooding_key_does_not_starve_others() {
        let mut q = FairQueue::new(100);
        for i in 0..50 {
            q.push(&key("flood"), ("flood", i)).unwrap();
        }
        q.push(&key("b"), ("b", 0)).unwrap();
        q.push(&key("c"), ("c", 0)).unwrap();
        q.push(&key("b"), ("b", 1)).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).take(6).collect();
        assert_eq!(
            order,
            vec![
                ("flood", 0),
                ("b", 0),
                ("c", 0),
                ("flood", 1),
                ("b", 1),
                ("flood", 2)
            ]
        );
        assert_eq!(q.len(), 53 - 6);
    }

    #[test]
    fn bounded_in_total() {
        let mut q = FairQueue::new(2);
        q.push(&key("a"), 1).unwrap();
        q.push(&key("b"), 2).unwrap();
        assert_eq!(q.push(&key("c"), 3), Err((Full, 3)));
        q.pop();
        assert!(q.push(&key("c"), 3).is_ok());
    }

    #[test]
    fn retain_drops_and_keeps_turns_consistent() {
        let mut q = FairQueue::new(10);
        q.push(&key("a"), 1).unwrap();
        q.push(&key("b"), 2).unwrap();
        q.push(&key("a"), 3).unwrap();
        q.push(&key("c"), 4).unwrap();
        assert_eq!(q.retain(|v| *v % 2 == 1), 2);
        assert_eq!(q.len(), 2);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(3), None));
        assert!(q.is_empty());
        // A key whose line emptied gets a fresh turn when it comes back.
        q.push(&key("b"), 6).unwrap();
        assert_eq!(q.pop(), Some(6));
    }
}
