//! Loop messages (DDMQ's loop delay): checking a [`LoopSpec`] and working
//! out the next delivery.
//!
//! A loop message is delivered first when it is due, then every interval.
//! It stops after `times` deliveries (the first one included) or when the
//! next delivery would fall after `expire_at_ms`, whichever comes first.
//! With exponential backoff the interval doubles after each delivery, up to
//! `max_interval_ms` when that is set. The next due time counts from the
//! previous due time, not from when it was delivered, so a loop does not
//! drift when deliveries are late.

use sluice_protocol::ops::{LoopBackoff, LoopSpec};

/// The shortest interval a loop may have: anything shorter is a busy loop
/// writing to the log, not a schedule.
pub const MIN_LOOP_INTERVAL_MS: u64 = 10;

/// Why a loop spec was refused (the message is for the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    #[error("loop interval is {0} ms; the shortest allowed is {MIN_LOOP_INTERVAL_MS} ms")]
    TooShort(u64),
    #[error(
        "loop interval is {interval_ms} ms, longer than the scheduler's horizon of {horizon_ms} ms"
    )]
    IntervalPastHorizon { interval_ms: u64, horizon_ms: u64 },
    #[error("a loop needs a bound: a number of times, an expiry time, or both")]
    Unbounded,
    #[error(
        "the loop expires at {expire_at_ms} ms, before its first delivery at {first_due_ms} ms"
    )]
    ExpiresBeforeFirst {
        expire_at_ms: i64,
        first_due_ms: i64,
    },
    #[error(
        "the loop expires {in_ms} ms from now, beyond the scheduler's horizon of {horizon_ms} ms"
    )]
    ExpiryPastHorizon { in_ms: i64, horizon_ms: u64 },
    #[error(
        "the loop's maximum interval ({max_interval_ms} ms) is shorter than its interval ({interval_ms} ms)"
    )]
    MaxBelowInterval {
        max_interval_ms: u64,
        interval_ms: u64,
    },
}

/// Checks a loop spec whose first delivery is due at `first_due_ms`.
pub fn validate(
    spec: &LoopSpec,
    first_due_ms: i64,
    now_ms: i64,
    max_horizon_ms: u64,
) -> Result<(), LoopError> {
    if spec.interval_ms < MIN_LOOP_INTERVAL_MS {
        return Err(LoopError::TooShort(spec.interval_ms));
    }
    if spec.interval_ms > max_horizon_ms {
        return Err(LoopError::IntervalPastHorizon {
            interval_ms: spec.interval_ms,
            horizon_ms: max_horizon_ms,
        });
    }
    if spec.times == 0 && spec.expire_at_ms < 0 {
        return Err(LoopError::Unbounded);
    }
    if spec.expire_at_ms >= 0 {
        if spec.expire_at_ms < first_due_ms {
            return Err(LoopError::ExpiresBeforeFirst {
                expire_at_ms: spec.expire_at_ms,
                first_due_ms,
            });
        }
        if spec.expire_at_ms.saturating_sub(now_ms) as u64 > max_horizon_ms {
            return Err(LoopError::ExpiryPastHorizon {
                in_ms: spec.expire_at_ms - now_ms,
                horizon_ms: max_horizon_ms,
            });
        }
    }
    if let LoopBackoff::Exponential { max_interval_ms } = spec.backoff
        && max_interval_ms != 0
        && max_interval_ms < spec.interval_ms
    {
        return Err(LoopError::MaxBelowInterval {
            max_interval_ms,
            interval_ms: spec.interval_ms,
        });
    }
    Ok(())
}

/// After delivery number `iteration` (from 1) due at `due_ms`: when the
/// next one is due and the spec it carries, or `None` if the loop is done.
pub fn next(spec: &LoopSpec, due_ms: u64, iteration: u32) -> Option<(u64, LoopSpec)> {
    if spec.times != 0 && iteration >= spec.times {
        return None;
    }
    let next_due = due_ms.checked_add(spec.interval_ms)?;
    if spec.expire_at_ms >= 0 && next_due > spec.expire_at_ms as u64 {
        return None;
    }
    let interval_ms = match spec.backoff {
        LoopBackoff::Fixed => spec.interval_ms,
        LoopBackoff::Exponential { max_interval_ms } => {
            let doubled = spec.interval_ms.saturating_mul(2);
            if max_interval_ms == 0 {
                doubled
            } else {
                doubled.min(max_interval_ms)
            }
        }
    };
    Some((
        next_due,
        LoopSpec {
            interval_ms,
            ..*spec
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval_ms: u64, times: u32, expire_at_ms: i64, backoff: LoopBackoff) -> LoopSpec {
        LoopSpec {
            interval_ms,
            times,
            expire_at_ms,
            backoff,
        }
    }

    /// Every due time a loop produces, starting at `first`.
    fn schedule(s: LoopSpec, first: u64) -> Vec<u64> {
        let mut out = vec![first];
        let (mut due, mut cur, mut i) = (first, s, 1);
        while let Some((n, next_spec)) = next(&cur, due, i) {
            out.push(n);
            (due, cur, i) = (n, next_spec, i + 1);
            assert!(out.len() < 1000, "runaway loop");
        }
        out
    }

    #[test]
    fn times_and_expiry_bound_the_loop() {
        assert_eq!(
            schedule(spec(100, 3, -1, LoopBackoff::Fixed), 1000),
            vec![1000, 1100, 1200]
        );
        assert_eq!(
            schedule(spec(100, 0, 1250, LoopBackoff::Fixed), 1000),
            vec![1000, 1100, 1200]
        );
        // Both: whichever comes first.
        assert_eq!(
            schedule(spec(100, 10, 1100, LoopBackoff::Fixed), 1000),
            vec![1000, 1100]
        );
        assert_eq!(schedule(spec(100, 1, -1, LoopBackoff::Fixed), 5), vec![5]);
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        assert_eq!(
            schedule(
                spec(
                    100,
                    6,
                    -1,
                    LoopBackoff::Exponential {
                        max_interval_ms: 500
                    }
                ),
                0
            ),
            vec![0, 100, 300, 700, 1200, 1700]
        );
        assert_eq!(
            schedule(
                spec(10, 4, -1, LoopBackoff::Exponential { max_interval_ms: 0 }),
                0
            ),
            vec![0, 10, 30, 70]
        );
    }

    #[test]
    fn invalid_loops_are_refused_with_a_reason() {
        let h = 1_000_000;
        let ok = spec(100, 3, -1, LoopBackoff::Fixed);
        assert!(validate(&ok, 0, 0, h).is_ok());
        let cases = [
            (spec(5, 3, -1, LoopBackoff::Fixed), "shortest"),
            (spec(100, 0, -1, LoopBackoff::Fixed), "needs a bound"),
            (spec(100, 0, 50, LoopBackoff::Fixed), "before its first"),
            (spec(100, 0, 2 * h as i64, LoopBackoff::Fixed), "horizon"),
            (spec(2 * h, 3, -1, LoopBackoff::Fixed), "horizon"),
            (
                spec(
                    100,
                    3,
                    -1,
                    LoopBackoff::Exponential {
                        max_interval_ms: 50,
                    },
                ),
                "maximum interval",
            ),
        ];
        for (s, want) in cases {
            let err = validate(&s, 100, 0, h).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}
