//! A hashed timing wheel holding the keys of the messages due soon.
//!
//! One slot per millisecond over a fixed span (a few seconds). Inserting is
//! O(1) and draining what is due visits only the slots whose time has come.
//! The wheel holds keys, not messages: the messages stay in RocksDB and are
//! read when they are dispatched, so a burst of a million due messages
//! costs 16 bytes each in memory. Messages due beyond the span stay on disk
//! until the scheduler loads the next stretch of time.

use super::keys::DueKey;

#[derive(Debug)]
pub struct TimingWheel {
    slots: Vec<Vec<DueKey>>,
    /// The time of the slot at the cursor: every earlier slot is empty.
    cursor_ms: u64,
    len: usize,
}

impl TimingWheel {
    /// A wheel of `span_ms` one-millisecond slots starting at `now_ms`.
    pub fn new(span_ms: usize, now_ms: u64) -> Self {
        TimingWheel {
            slots: (0..span_ms.max(2)).map(|_| Vec::new()).collect(),
            cursor_ms: now_ms,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys due before this time fit in the wheel (exclusive).
    pub fn horizon_ms(&self) -> u64 {
        self.cursor_ms + self.slots.len() as u64
    }

    fn slot(&self, ms: u64) -> usize {
        (ms % self.slots.len() as u64) as usize
    }

    /// Adds a key. A key already due goes into the cursor's slot; a key at
    /// or past [`horizon_ms`](Self::horizon_ms) is refused (`false`): the
    /// caller keeps it on disk.
    pub fn insert(&mut self, key: DueKey) -> bool {
        let at = key.due_ms.max(self.cursor_ms);
        if at >= self.horizon_ms() {
            return false;
        }
        let slot = self.slot(at);
        self.slots[slot].push(key);
        self.len += 1;
        true
    }

    /// Removes and returns up to `max` keys due at or before `now_ms`, in
    /// key order within each millisecond. A slot only partly taken keeps
    /// the rest (its smallest keys are taken first) and the cursor stays.
    pub fn drain_due(&mut self, now_ms: u64, max: usize, out: &mut Vec<DueKey>) {
        self.skip_idle(now_ms);
        while self.cursor_ms <= now_ms && out.len() < max {
            if self.len == 0 {
                // Nothing left: jump instead of stepping through empty slots.
                self.cursor_ms = now_ms;
                break;
            }
            let slot = self.slot(self.cursor_ms);
            let keys = &mut self.slots[slot];
            let room = max - out.len();
            if keys.len() <= room {
                self.len -= keys.len();
                keys.sort_unstable();
                out.append(keys);
                self.cursor_ms += 1;
            } else {
                keys.sort_unstable_by(|a, b| b.cmp(a));
                let rest = keys.len() - room;
                out.extend(keys.drain(rest..).rev());
                self.len -= room;
            }
        }
    }

    /// An empty wheel jumps straight to `now_ms` (instead of stepping
    /// through every idle millisecond), so its horizon moves with the clock.
    pub fn skip_idle(&mut self, now_ms: u64) {
        if self.len == 0 && self.cursor_ms < now_ms {
            self.cursor_ms = now_ms;
        }
    }

    /// The time of the earliest non-empty slot, if any.
    pub fn next_due_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        (0..self.slots.len() as u64)
            .map(|i| self.cursor_ms + i)
            .find(|&ms| !self.slots[self.slot(ms)].is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_in_due_then_sequence_order_and_never_early() {
        let mut w = TimingWheel::new(100, 1000);
        for (due, seq) in [(1005, 3), (1001, 9), (1005, 1), (1050, 2), (990, 7)] {
            assert!(w.insert(DueKey::new(due, seq)));
        }
        assert!(!w.insert(DueKey::new(1100, 1)), "beyond the span");
        assert_eq!(w.next_due_ms(), Some(1000));
        let mut out = Vec::new();
        w.drain_due(1004, 100, &mut out);
        assert_eq!(out, vec![DueKey::new(990, 7), DueKey::new(1001, 9)]);
        out.clear();
        w.drain_due(1005, 1, &mut out);
        assert_eq!(out, vec![DueKey::new(1005, 1)]);
        out.clear();
        w.drain_due(1005, 10, &mut out);
        assert_eq!(out, vec![DueKey::new(1005, 3)]);
        assert_eq!(w.next_due_ms(), Some(1050));
        out.clear();
        w.drain_due(1049, 10, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.len(), 1);
        // The wheel turned: a key past the old span now fits.
        assert!(w.insert(DueKey::new(1100, 1)));
    }
}
