//! Settling: acks and nacks of members, and the retry copies and dead
//! letters a nack or an ack timeout leads to. Window bookkeeping happens
//! under the group lock; the copies are written after it is released.

use sluice_protocol::ops::{AckRequest, AckResponse, NackAction, TopicPartition};

use super::copies::{self, Origin};
use super::state::{Group, WindowKey};
use super::window::SettleOutcome;
use super::{Groups, Result};
use crate::log::LogError;
use crate::sched::Delivery;

/// A nack or timeout whose retry copy or dead letter must be written.
#[derive(Debug)]
pub(super) struct Settle {
    pub key: WindowKey,
    pub offset: u64,
    pub attempt: u16,
    /// `None` = retry through the retry topic at this time; `Some` = dead
    /// letter with this reason.
    pub dead: Option<String>,
    pub due_at_ms: i64,
}

impl Groups {
    /// Settles acks and nacks.
    pub fn ack(&self, req: &AckRequest) -> Result<AckResponse> {
        let g = self.live_member_group(&req.member)?;
        let now = self.now();
        let mut resp = AckResponse::default();
        let mut jobs = Vec::new();
        let mut wake = false;
        {
            let mut st = g.state.lock();
            let broadcast = st.broadcast();
            let slot = match g.member(&mut st, &req.member.member_id) {
                Ok((slot, m)) => {
                    m.live.touch(now);
                    Some(slot)
                }
                // Acks of a member that is gone still count (they save
                // redeliveries); its nacks do not.
                Err(_) if !broadcast => None,
                Err(e) => return Err(e),
            };
            let instance = slot.map(|s| st.instance_key(s)).unwrap_or_default();
            let max_in_flight = st.settings.max_in_flight as usize;
            for pa in &req.acks {
                let key = (
                    instance.clone(),
                    TopicPartition {
                        topic: pa.topic.clone(),
                        partition: pa.partition,
                    },
                );
                let w = st.windows.get_mut(&key);
                let Some(w) = w else {
                    let total: u64 = pa.ranges.iter().map(|r| u64::from(r.count)).sum();
                    resp.stale = resp.stale.saturating_add(total.min(u32::MAX.into()) as u32);
                    continue;
                };
                let was_full = w.len() >= max_in_flight;
                for r in &pa.ranges {
                    let (settled, stale) = w.ack_range(r.first_offset, r.count);
                    resp.settled = resp.settled.saturating_add(settled as u32);
                    resp.stale = resp.stale.saturating_add(stale as u32);
                }
                // Wake waiting members only when the ack made something
                // deliverable: room in a full window, or a key unblocked.
                wake |= (was_full && w.len() < max_in_flight) || w.has_ready(now);
            }
            let in_place = st.retries_in_place();
            let max_attempts = st.settings.max_attempts;
            for n in &req.nacks {
                let key = (
                    instance.clone(),
                    TopicPartition {
                        topic: n.topic.clone(),
                        partition: n.partition,
                    },
                );
                let begun = match (slot, st.windows.get_mut(&key)) {
                    (Some(slot), Some(w)) => w.begin_settle(n.offset, Some(slot)),
                    _ => None,
                };
                let Some(attempt) = begun else {
                    resp.stale += 1;
                    continue;
                };
                resp.settled += 1;
                let delay = match n.action {
                    NackAction::RetryAfter(ms) => i64::from(ms),
                    _ => st.ladder.delay(attempt.into()).as_millis() as i64,
                };
                let dead = n.action == NackAction::DeadLetter || attempt >= max_attempts;
                if dead {
                    let reason = if n.reason.is_empty() {
                        "failed".to_owned()
                    } else {
                        n.reason.clone()
                    };
                    jobs.push(Settle {
                        key,
                        offset: n.offset,
                        attempt,
                        dead: Some(reason),
                        due_at_ms: now,
                    });
                } else if in_place {
                    let w = st.windows.get_mut(&key).expect("settling");
                    w.finish_settle(n.offset, SettleOutcome::RetryAt(now + delay));
                } else {
                    jobs.push(Settle {
                        key,
                        offset: n.offset,
                        attempt,
                        dead: None,
                        due_at_ms: now + delay,
                    });
                }
            }
        }
        wake |= !jobs.is_empty() || !req.nacks.is_empty();
        self.settle(&g, jobs);
        if wake {
            g.changed.notify_waiters();
        }
        Ok(resp)
    }

    /// Writes retry copies and dead letters, then settles their windows:
    /// done when written, redelivered when writing failed.
    pub(super) fn settle(&self, g: &Group, jobs: Vec<Settle>) {
        if jobs.is_empty() {
            return;
        }
        let outcomes: Vec<SettleOutcome> = jobs
            .iter()
            .map(|job| match self.write_copy(g, job) {
                Ok(()) => SettleOutcome::Done,
                Err(e) => {
                    tracing::warn!(group = %g.name, topic = %job.key.1.topic, partition = job.key.1.partition,
                        offset = job.offset, error = %e, "could not write a retry or dead letter; delivering it again");
                    SettleOutcome::Redeliver
                }
            })
            .collect();
        let mut st = g.state.lock();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            if let Some(w) = st.windows.get_mut(&job.key) {
                w.finish_settle(job.offset, outcome);
            }
        }
    }

    fn write_copy(&self, g: &Group, job: &Settle) -> Result<()> {
        let tp = &job.key.1;
        let partition = self.store.log().partition(&tp.topic, tp.partition)?;
        let source = match copies::read_record(&partition, job.offset) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { .. }) => {
                tracing::warn!(group = %g.name, topic = %tp.topic, partition = tp.partition, offset = job.offset,
                    "a failed message was deleted by retention before it could be retried");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let origin = Origin {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: job.offset,
        };
        let record = copies::failed_copy(source, &origin, job.attempt, job.dead.as_deref());
        // Both go through the scheduler, due now or later: it appends each
        // exactly once, across crashes, with its own producer id.
        let topic = match &job.dead {
            Some(_) => {
                self.ensure_topic(&g.dead_letter_topic)?;
                g.dead_letter_topic.clone()
            }
            None => g.retry_topic.clone(),
        };
        let delivery = Delivery {
            topic,
            partition: 0,
            due_at_ms: job.due_at_ms,
            repeat: None,
            record,
        };
        self.scheduler
            .schedule(vec![delivery])
            .pop()
            .expect("one result per delivery")?;
        if let Some(reason) = &job.dead {
            tracing::info!(group = %g.name, topic = %tp.topic, partition = tp.partition, offset = job.offset,
                attempts = job.attempt, reason = %reason, "message dead-lettered");
        }
        Ok(())
    }
}
