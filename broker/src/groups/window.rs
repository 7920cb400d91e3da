//! The delivery window of one partition for one consumer: every message
//! from the committed offset up to the last one read, and where each is —
//! waiting, in flight to a member, retrying, or settled.
//!
//! Sans-IO: the caller reads the log, decides filters and keys, and does
//! the I/O of retries and dead letters; the window only keeps the books.
//! Times are milliseconds from the broker's clock, passed in.
//!
//! The committed offset is the first message not yet settled, so it moves
//! only past contiguous acks: a restart resumes there and redelivers what
//! was in flight (at-least-once).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// Source of window epochs: unique in the process, so a window created
/// again under the same key is never mistaken for the old one.
static EPOCHS: AtomicU64 = AtomicU64::new(1);

/// Index of a member within its group (cheaper than its id string).
pub type MemberSlot = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ordered mode: an earlier message with the same key is unsettled.
    Blocked,
    /// May be delivered now (a redelivery: timed out, released, unblocked).
    Ready,
    /// Delivered to `member`; redelivered if not settled by `time`.
    InFlight,
    /// Its nack or timeout is being written elsewhere (retry topic, DLQ).
    Settling,
    /// Retrying in place: deliverable again from `time`.
    Waiting,
    /// Acked, filtered, retried elsewhere or dead-lettered.
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: State,
    /// Deliveries so far (including the current one while in flight).
    attempt: u16,
    member: MemberSlot,
    /// Ordered mode: hash of the key (0 = no key: not ordered).
    key: u64,
    /// Deadline (in flight) or not-before (waiting), in ms.
    time: i64,
}

/// What an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It was in flight and is now done.
    Yes,
    /// It was not in flight (already settled, forgotten by a reset, never
    /// delivered): nothing changed.
    Stale,
}

/// A delivered message: offset and which delivery this is (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub offset: u64,
    pub attempt: u16,
}

/// A message whose ack deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub offset: u64,
    pub attempt: u16,
}

#[derive(Debug)]
pub struct Window {
    base: u64,
    slots: VecDeque<Slot>,
    /// Ordered mode: per key, its unsettled offsets in order; the front
    /// one is the only one that may be in flight.
    keys: Option<HashMap<u64, VecDeque<u64>>>,
    ready: usize,
    in_flight: usize,
    /// A lower bound of every in-flight deadline and waiting not-before
    /// time, so the periodic scan skips windows with nothing due.
    next_due: i64,
    /// The base moved since the last [`take_commit`](Window::take_commit).
    dirty: bool,
    /// Changes when the window is reset: work planned against an older
    /// epoch (a read, a redelivery) no longer applies to it.
    epoch: u64,
    /// A take is reading new messages for it (see
    /// [`claim_read`](Window::claim_read)).
    reading: bool,
    /// Another take was refused the claim meanwhile.
    contended: bool,
}

impl Window {
    pub fn new(base: u64, ordered: bool) -> Window {
        Window {
            base,
            slots: VecDeque::new(),
            keys: ordered.then(HashMap::new),
            ready: 0,
            in_flight: 0,
            next_due: i64::MAX,
            dirty: false,
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            reading: false,
            contended: false,
        }
    }

    /// Identifies this window's books until the next reset.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Claims the right to read new messages into the window: the reader
    /// reads from [`end`](Window::end) without the group lock and pushes
    /// what it read under it later; nobody else may read meanwhile, or the
    /// same messages would be pushed twice. `false` when another take
    /// holds it. A reset drops the claim (the reader's work is then stale).
    pub fn claim_read(&mut self) -> bool {
        let free = !std::mem::replace(&mut self.reading, true);
        self.contended |= !free;
        free
    }

    /// Ends a claim taken by [`claim_read`](Window::claim_read); `true`
    /// when another take was refused it meanwhile (and should look again).
    pub fn release_read(&mut self) -> bool {
        self.reading = false;
        std::mem::take(&mut self.contended)
    }

    /// The committed offset: the first message not yet settled.
    pub fn committed(&self) -> u64 {
        self.base
    }

    /// The next offset to read from the log.
    pub fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Messages read and not yet settled (the window's size).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether there may be redeliveries to hand out at `now`.
    pub fn has_ready(&self, now: i64) -> bool {
        self.ready > 0 || self.next_due <= now
    }

    /// The committed offset if it moved since the last call.
    pub fn take_commit(&mut self) -> Option<u64> {
        std::mem::take(&mut self.dirty).then_some(self.base)
    }

    fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let i = offset.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// Appends the next message (at [`end`](Window::end)). `None` = it is
    /// filtered out (settled at once). Returns whether it is delivered now
    /// to `member` (it may instead wait behind its key).
    pub fn push(
        &mut self,
        member: MemberSlot,
        message: Option<NewMessage>,
        deadline: i64,
    ) -> Option<Delivered> {
        let offset = self.end();
        let Some(m) = message else {
            self.slots.push_back(Slot {
                state: State::Done,
                attempt: 0,
                member: 0,
                key: 0,
                time: 0,
            });
            self.advance();
            return None;
        };
        let key = if self.keys.is_some() { m.key } else { 0 };
        let mut state = State::InFlight;
        if key != 0 {
            let queue = self.keys.as_mut().expect("ordered").entry(key).or_default();
            queue.push_back(offset);
            if queue.len() > 1 {
                state = State::Blocked;
            }
        }
        let attempt = m.attempts_before + 1;
        self.slots.push_back(Slot {
            state,
            attempt: if state == State::InFlight {
                attempt
            } else {
                m.attempts_before
            },
            member,
            key,
            time: deadline,
        });
        if state == State::InFlight {
            self.in_flight += 1;
            self.next_due = self.next_due.min(deadline);
            Some(Delivered { offset, attempt })
        } else {
            None
        }
    }

    /// Hands out up to `max` redeliveries (ready, or waiting and due) to
    /// `member`, in offset order.
    pub fn take_ready(
        &mut self,
        member: MemberSlot,
        max: usize,
        now: i64,
        deadline: i64,
        out: &mut Vec<Delivered>,
    ) {
        if max == 0 || !self.has_ready(now) {
            return;
        }
        let mut next_due = i64::MAX;
        let mut taken = 0;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let due = match s.state {
                State::Ready => true,
                State::Waiting => s.time <= now,
                State::InFlight => {
                    next_due = next_due.min(s.time);
                    false
                }
                _ => false,
            };
            if s.state == State::Waiting && !due {
                next_due = next_due.min(s.time);
            }
            if !due {
                continue;
            }
            if taken == max {
                // Still due: keep the hint low so the next take looks again.
                next_due = next_due.min(now);
                continue;
            }
            if s.state == State::Ready {
                self.ready -= 1;
            }
            s.state = State::InFlight;
            s.attempt = s.attempt.saturating_add(1);
            s.member = member;
            s.time = deadline;
            self.in_flight += 1;
            next_due = next_due.min(deadline);
            taken += 1;
            out.push(Delivered {
                offset: self.base + i as u64,
                attempt: s.attempt,
            });
        }
        self.next_due = next_due;
    }

    /// Acks one in-flight message (from any member: a late ack from a
    /// member that lost the partition still saves a redelivery).
    pub fn ack(&mut self, offset: u64) -> Settled {
        match self.slot_mut(offset) {
            Some(s) if s.state == State::InFlight => {
                self.in_flight -= 1;
                self.finish(offset);
                Settled::Yes
            }
            _ => Settled::Stale,
        }
    }

    /// Acks `first .. first + count`; returns (settled, stale). Only the
    /// part inside the window is walked, so a hostile count costs nothing.
    pub fn ack_range(&mut self, first: u64, count: u32) -> (u64, u64) {
        let end = first.saturating_add(count.into());
        let (lo, hi) = (first.max(self.base), end.min(self.end()));
        let mut settled = 0;
        for offset in lo..hi.max(lo) {
            if self.ack(offset) == Settled::Yes {
                settled += 1;
            }
        }
        (settled, u64::from(count) - settled)
    }

    /// Takes back a delivery that was not sent after all (the response was
    /// full, or reading it failed): ready again, attempt not counted.
    pub fn untake(&mut self, offset: u64) {
        if let Some(s) = self.slot_mut(offset)
            && s.state == State::InFlight
        {
            s.state = State::Ready;
            s.attempt = s.attempt.saturating_sub(1);
            self.in_flight -= 1;
            self.ready += 1;
        }
    }

    /// Starts settling a failed in-flight message held by `member`: it
    /// stays unsettled (and undeliverable) until [`finish_settle`] says how
    /// it ended. Returns its attempt count, or `None` when it was not in
    /// flight to `member`.
    ///
    /// [`finish_settle`]: Window::finish_settle
    pub fn begin_settle(&mut self, offset: u64, member: Option<MemberSlot>) -> Option<u16> {
        let s = self.slot_mut(offset)?;
        if s.state != State::InFlight || member.is_some_and(|m| m != s.member) {
            return None;
        }
        s.state = State::Settling;
        let attempt = s.attempt;
        self.in_flight -= 1;
        Some(attempt)
    }

    /// Ends a settle begun by [`begin_settle`](Window::begin_settle).
    pub fn finish_settle(&mut self, offset: u64, outcome: SettleOutcome) {
        let Some(s) = self.slot_mut(offset) else {
            return; // forgotten by a reset meanwhile
        };
        if s.state != State::Settling {
            return;
        }
        match outcome {
            SettleOutcome::Done => self.finish(offset),
            SettleOutcome::RetryAt(at) => {
                s.state = State::Waiting;
                s.time = at;
                self.next_due = self.next_due.min(at);
            }
            SettleOutcome::Redeliver => {
                s.state = State::Ready;
                self.ready += 1;
            }
        }
    }

    /// In-flight messages whose deadline passed; the caller settles each
    /// (redeliver, or dead-letter at the last attempt) with
    /// [`begin_settle`](Window::begin_settle) / `finish_settle`.
    pub fn expired(&self, now: i64, out: &mut Vec<Expired>) {
        if self.next_due > now {
            return;
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.state == State::InFlight && s.time <= now {
                out.push(Expired {
                    offset: self.base + i as u64,
                    attempt: s.attempt,
                });
            }
        }
    }

    /// A member left or died: its in-flight messages become ready for the
    /// others, and the delivery does not count as an attempt.
    pub fn release(&mut self, member: MemberSlot) {
        for s in self.slots.iter_mut() {
            if s.state == State::InFlight && s.member == member {
                s.state = State::Ready;
                s.attempt = s.attempt.saturating_sub(1);
                self.in_flight -= 1;
                self.ready += 1;
            }
        }
    }

    /// Moves the committed offset to `base`, forgetting everything in
    /// flight (rewind or skip).
    pub fn reset(&mut self, base: u64) {
        let ordered = self.keys.is_some();
        *self = Window::new(base, ordered);
        self.dirty = true;
    }

    fn finish(&mut self, offset: u64) {
        let Some(s) = self.slot_mut(offset) else {
            return;
        };
        s.state = State::Done;
        let key = s.key;
        if key != 0
            && let Some(keys) = self.keys.as_mut()
            && let Some(queue) = keys.get_mut(&key)
        {
            debug_assert_eq!(queue.front(), Some(&offset));
            queue.pop_front();
            match queue.front().copied() {
                Some(next) => {
                    if let Some(n) = self.slot_mut(next)
                        && n.state == State::Blocked
                    {
                        n.state = State::Ready;
                        self.ready += 1;
                    }
                }
                None => {
                    keys.remove(&key);
                }
            }
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.slots.front().is_some_and(|s| s.state == State::Done) {
            self.slots.pop_front();
            self.base += 1;
            self.dirty = true;
        }
    }
}

/// A message read from the log, as the window needs it.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage {
    /// Hash of its key (0 = none); only used in ordered mode.
    pub key: u64,
    /// Failed deliveries before this copy (from a retry copy's header).
    pub attempts_before: u16,
}

/// How a settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Retried through the retry topic or dead-lettered: done here.
    Done,
    /// Retry in place (ordered or broadcast) from this time.
    RetryAt(i64),
    /// Writing elsewhere failed: deliver it again.
    Redeliver,
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: MemberSlot = 1;
    const M2: MemberSlot = 2;

    fn plain() -> Option<NewMessage> {
        Some(NewMessage {
            key: 0,
            attempts_before: 0,
        })
    }

    fn keyed(key: u64) -> Option<NewMessage> {
        Some(NewMessage {
            key,
            attempts_before: 0,
        })
    }

    #[test]
    fn commit_moves_only_past_contiguous_acks() {
        let mut w = Window::new(10, false);
        for _ in 0..4 {
            assert!(w.push(M1, plain(), 100).is_some());
        }
        assert_eq!(w.end(), 14);
        assert_eq!(w.ack(11), Settled::Yes);
        assert_eq!(w.ack(12), Settled::Yes);
        assert_eq!(w.committed(), 10);
        assert_eq!(w.take_commit(), None);
        assert_eq!(w.ack(10), Settled::Yes);
        assert_eq!(w.committed(), 13);
        assert_eq!(w.take_commit(), Some(13));
        assert_eq!(w.ack(10), Settled::Stale);
        assert_eq!(w.ack(99), Settled::Stale);
        assert_eq!(w.ack(13), Settled::Yes);
        assert_eq!(w.committed(), 14);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn range_acks_walk_only_the_window() {
        let mut w = Window::new(100, false);
        for _ in 0..3 {
            w.push(M1, plain(), 100);
        }
        assert_eq!(w.ack_range(0, u32::MAX), (3, u64::from(u32::MAX) - 3));
        assert_eq!(w.committed(), 103);
        w.push(M1, plain(), 100);
        w.untake(103);
        assert_eq!(w.in_flight(), 0);
        let mut got = Vec::new();
        w.take_ready(M2, 1, 0, 100, &mut got);
        assert_eq!(got[0].attempt, 1);
    }

    #[test]
    fn filtered_messages_settle_at_once() {
        let mut w = Window::new(0, false);
        assert!(w.push(M1, None, 100).is_none());
        assert_eq!(w.committed(), 1);
        w.push(M1, plain(), 100);
        w.push(M1, None, 100);
        assert_eq!(w.committed(), 1);
        w.ack(1);
        assert_eq!(w.committed(), 3);
    }

    #[test]
    fn timeouts_are_reported_and_redelivered_with_the_next_attempt() {
        let mut w = Window::new(0, false);
        w.push(M1, plain(), 100);
        w.push(M1, plain(), 200);
        let mut out = Vec::new();
        w.expired(99, &mut out);
        assert!(out.is_empty());
        w.expired(150, &mut out);
        assert_eq!(
            out,
            vec![Expired {
                offset: 0,
                attempt: 1
            }]
        );
        assert_eq!(w.begin_settle(0, None), Some(1));
        w.finish_settle(0, SettleOutcome::Redeliver);
        let mut got = Vec::new();
        w.take_ready(M2, 10, 150, 300, &mut got);
        assert_eq!(
            got,
            vec![Delivered {
                offset: 0,
                attempt: 2
            }]
        );
        assert_eq!(w.in_flight(), 2);
    }

    #[test]
    fn a_released_member_does_not_use_up_attempts() {
        let mut w = Window::new(0, false);
        w.push(M1, plain(), 100);
        w.push(M2, plain(), 100);
        w.release(M1);
        assert_eq!(w.in_flight(), 1);
        let mut got = Vec::new();
        w.take_ready(M2, 10, 0, 100, &mut got);
        assert_eq!(
            got,
            vec![Delivered {
                offset: 0,
                attempt: 1
            }]
        );
        // A nack from the old holder is stale; the new one may settle.
        assert_eq!(w.begin_settle(0, Some(M1)), None);
        assert_eq!(w.begin_settle(0, Some(M2)), Some(1));
    }

    #[test]
    fn in_place_retries_wait_for_their_time() {
        let mut w = Window::new(0, false);
        w.push(M1, plain(), 100);
        w.begin_settle(0, Some(M1));
        w.finish_settle(0, SettleOutcome::RetryAt(50));
        let mut got = Vec::new();
        w.take_ready(M1, 10, 49, 1000, &mut got);
        assert!(got.is_empty());
        w.take_ready(M1, 10, 50, 1000, &mut got);
        assert_eq!(got[0].attempt, 2);
    }

    #[test]
    fn ordered_mode_holds_a_key_until_its_head_settles() {
        let mut w = Window::new(0, true);
        assert!(w.push(M1, keyed(7), 100).is_some()); // 0
        assert!(w.push(M1, keyed(8), 100).is_some()); // 1
        assert!(w.push(M1, keyed(7), 100).is_none()); // 2 waits for 0
        assert!(w.push(M1, plain(), 100).is_some()); // 3 has no key
        // 0 fails and retries in place: 2 stays blocked, 1 and 3 go on.
        w.begin_settle(0, Some(M1));
        w.finish_settle(0, SettleOutcome::RetryAt(10));
        w.ack(1);
        w.ack(3);
        let mut got = Vec::new();
        w.take_ready(M1, 10, 5, 100, &mut got);
        assert!(got.is_empty());
        w.take_ready(M1, 10, 10, 100, &mut got);
        assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![0]);
        w.ack(0);
        got.clear();
        w.take_ready(M1, 10, 10, 100, &mut got);
        assert_eq!(
            got,
            vec![Delivered {
                offset: 2,
                attempt: 1
            }]
        );
        w.ack(2);
        assert_eq!(w.committed(), 4);
    }

    #[test]
    fn reset_forgets_everything_in_flight() {
        let mut w = Window::new(0, true);
        w.push(M1, keyed(1), 100);
        w.push(M1, keyed(1), 100);
        w.reset(0);
        assert_eq!(w.take_commit(), Some(0));
        assert_eq!(w.ack(0), Settled::Stale);
        assert!(w.push(M1, keyed(1), 100).is_some());
    }

    #[test]
    fn take_ready_respects_max_and_comes_back_for_the_rest() {
        let mut w = Window::new(0, false);
        for _ in 0..5 {
            w.push(M1, plain(), 100);
        }
        w.release(M1);
        let mut got = Vec::new();
        w.take_ready(M2, 2, 0, 100, &mut got);
        assert_eq!(got.len(), 2);
        w.take_ready(M2, 10, 0, 100, &mut got);
        assert_eq!(got.len(), 5);
        assert!(!w.has_ready(0));
    }
}
