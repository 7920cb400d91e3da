//! A function's bounded log: the lines its guest writes (`log` calls and
//! stderr, panic messages included) and the broker's own notes about it
//! (failed calls, dead letters), read with `sluice fn logs`.
//!
//! The log keeps the last [`CAPACITY`] lines in memory, numbered so a
//! reader can follow it, and admits at most `lines_per_sec` guest lines a
//! second (a token bucket): a chatty guest loses lines, counted, instead of
//! slowing its calls or the broker. Lines are also sent to `tracing` at
//! debug level under the target `sluice::function`.

use std::collections::VecDeque;

use parking_lot::Mutex;
use sluice_protocol::ops::function::{FunctionLogLine, LogLevel};

/// Lines kept per function.
pub const CAPACITY: usize = 1000;
/// Guest lines admitted per second unless the manifest says otherwise.
pub const DEFAULT_LINES_PER_SEC: u32 = 100;

#[derive(Debug)]
struct Inner {
    lines: VecDeque<FunctionLogLine>,
    next_seq: u64,
    dropped: u64,
    /// Token bucket: lines still admitted, refilled from `refilled_ms`.
    tokens: f64,
    refilled_ms: i64,
}

/// One function's log, shared by all its versions.
#[derive(Debug)]
pub struct LogBook {
    name: String,
    lines_per_sec: u32,
    inner: Mutex<Inner>,
}

impl LogBook {
    pub fn new(name: &str, lines_per_sec: u32) -> LogBook {
        let lines_per_sec = if lines_per_sec == 0 {
            DEFAULT_LINES_PER_SEC
        } else {
            lines_per_sec
        };
        LogBook {
            name: name.to_owned(),
            lines_per_sec,
            inner: Mutex::new(Inner {
                lines: VecDeque::with_capacity(64),
                next_seq: 1,
                dropped: 0,
                tokens: f64::from(lines_per_sec),
                refilled_ms: 0,
            }),
        }
    }

    /// A line from the guest: subject to the rate limit.
    pub fn guest(&self, now_ms: i64, version: u32, level: LogLevel, message: &str) {
        let mut inner = self.inner.lock();
        let rate = f64::from(self.lines_per_sec);
        let elapsed = (now_ms - inner.refilled_ms).max(0) as f64 / 1000.0;
        inner.tokens = (inner.tokens + elapsed * rate).min(rate);
        inner.refilled_ms = now_ms;
        if inner.tokens < 1.0 {
            inner.dropped += 1;
            return;
        }
        inner.tokens -= 1.0;
        self.push(&mut inner, now_ms, version, level, message);
    }

    /// A line from the broker about the function: always kept.
    pub fn broker(&self, now_ms: i64, version: u32, level: LogLevel, message: &str) {
        let mut inner = self.inner.lock();
        self.push(&mut inner, now_ms, version, level, message);
    }

    fn push(&self, inner: &mut Inner, at_ms: i64, version: u32, level: LogLevel, message: &str) {
        tracing::debug!(target: "sluice::function", function = %self.name, version, %level, "{message}");
        if inner.lines.len() == CAPACITY {
            inner.lines.pop_front();
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.lines.push_back(FunctionLogLine {
            seq,
            at_ms,
            level,
            version,
            message: message.to_owned(),
        });
    }

    /// Up to `max` lines numbered above `after_seq`, oldest first, and the
    /// count of guest lines dropped by the rate limit so far.
    pub fn read(&self, after_seq: u64, max: usize) -> (Vec<FunctionLogLine>, u64) {
        let inner = self.inner.lock();
        let lines = inner
            .lines
            .iter()
            .filter(|l| l.seq > after_seq)
            .take(max)
            .cloned()
            .collect();
        (lines, inner.dropped)
    }

    /// Lines written so far (kept or not) and lines dropped.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.next_seq - 1, inner.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_numbers_them() {
        let book = LogBook::new("f", 1_000_000);
        for i in 0..(CAPACITY + 5) {
            book.broker(0, 1, LogLevel::Info, &format!("line {i}"));
        }
        let (lines, dropped) = book.read(0, usize::MAX);
        assert_eq!(lines.len(), CAPACITY);
        assert_eq!(lines[0].seq, 6);
        assert_eq!(lines[0].message, "line 5");
        assert_eq!(dropped, 0);
        let (tail, _) = book.read(lines[CAPACITY - 2].seq, 10);
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].message, format!("line {}", CAPACITY + 4));
    }

    #[test]
    fn rate_limit_drops_and_counts_guest_lines() {
        let book = LogBook::new("f", 10);
        for _ in 0..25 {
            book.guest(1_000, 1, LogLevel::Info, "chatty");
        }
        assert_eq!(book.read(0, 100).0.len(), 10);
        assert_eq!(book.counts(), (10, 15));
        // Half a second later, five more fit.
        for _ in 0..25 {
            book.guest(1_500, 1, LogLevel::Info, "chatty");
        }
        assert_eq!(book.counts(), (15, 35));
        // Broker notes are never dropped.
        book.broker(1_500, 1, LogLevel::Error, "call failed");
        assert_eq!(book.counts().0, 16);
    }
}
