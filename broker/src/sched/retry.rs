//! Consumer retries with backoff, on the same machinery as delayed
//! messages: a failed message is scheduled again, into the retry topic of
//! the group that failed it, after a delay taken from a ladder.
//!
//! This is the one interface consumer groups use: they build a
//! [`Delivery`] with [`RetryLadder::retry`] and hand it to
//! [`Scheduler::schedule`](super::Scheduler::schedule), so retries get the
//! scheduler's guarantees (never early, survive a crash, delivered once).

use std::time::Duration;

use sluice_protocol::ops::DelayedRecord;

use super::Delivery;

/// Delays before each retry, by attempt: the first retry waits
/// `steps[0]`, the second `steps[1]`, and every retry past the end of the
/// ladder waits its last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLadder {
    steps: Vec<Duration>,
}

impl Default for RetryLadder {
    /// RocketMQ's ladder from 1 s: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m
    /// 9m 10m 20m 30m 1h 2h. Quick first retries catch blips; the long
    /// tail gives a broken dependency hours to come back.
    fn default() -> Self {
        let secs = [
            1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
        ];
        RetryLadder {
            steps: secs.into_iter().map(Duration::from_secs).collect(),
        }
    }
}

impl RetryLadder {
    /// A ladder with these steps; `None` if it is empty.
    pub fn new(steps: Vec<Duration>) -> Option<Self> {
        (!steps.is_empty()).then_some(RetryLadder { steps })
    }

    /// The delay before retry number `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) as usize - 1).min(self.steps.len() - 1);
        self.steps[i]
    }

    /// The delivery that retries `record` for the `attempt`-th time into
    /// `topic`/`partition`, due `delay(attempt)` after `now_ms`.
    pub fn retry(
        &self,
        topic: &str,
        partition: u32,
        record: DelayedRecord,
        attempt: u32,
        now_ms: i64,
    ) -> Delivery {
        Delivery {
            topic: topic.to_owned(),
            partition,
            due_at_ms: now_ms.saturating_add(self.delay(attempt).as_millis() as i64),
            repeat: None,
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_steps_then_stays_on_the_last() {
        let l = RetryLadder::default();
        assert_eq!(l.delay(1), Duration::from_secs(1));
        assert_eq!(l.delay(4), Duration::from_secs(30));
        assert_eq!(l.delay(18), Duration::from_secs(7200));
        assert_eq!(l.delay(100), Duration::from_secs(7200));
        assert!(RetryLadder::new(vec![]).is_none());
        let d = l.retry("t", 1, DelayedRecord::default(), 2, 1000);
        assert_eq!(d.due_at_ms, 6000);
    }
}
