//! A filter function attached to a group: the group asks it about each
//! stored batch of new messages before delivery (see
//! [`BatchFilter`]); what it rejects is settled for the group.
//!
//! The call runs on the group's delivery path (a blocking thread), under
//! the function's deadline. A failed call lets the batch through — a
//! broken filter must not lose messages — and is counted and logged.
//! Filters answer only with verdicts: their emits, schedules and kv
//! writes are not committed (use a transform or a handler for effects).

use std::sync::Arc;
use std::time::Instant;

use sluice_host_api::BatchContext;
use sluice_protocol::ops::function::LogLevel;

use super::{Deployment, Shared};
use crate::groups::BatchFilter;

#[derive(Debug)]
pub struct GroupFilter {
    deployment: Arc<Deployment>,
    shared: Arc<Shared>,
}

impl GroupFilter {
    pub fn new(deployment: Arc<Deployment>, shared: Arc<Shared>) -> Self {
        GroupFilter { deployment, shared }
    }
}

impl BatchFilter for GroupFilter {
    fn verdicts(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        batch: &[u8],
    ) -> Option<Vec<bool>> {
        let d = &self.deployment;
        let active = d.active();
        let context = BatchContext {
            topic: topic.to_owned(),
            partition,
            group: Some(group.to_owned()),
        };
        let started = Instant::now();
        match active.function.filter(&context, batch) {
            Ok(out) => {
                d.stats().call(out.messages, out.elapsed, out.fuel);
                Some(out.answer.iter().collect())
            }
            Err(e) => {
                let messages = sluice_protocol::batch::BatchIter::new(batch)
                    .flatten()
                    .map(|b| b.header().record_count as usize)
                    .sum();
                d.stats().failed(messages, started.elapsed(), &e);
                d.note(
                    self.shared.now_ms(),
                    LogLevel::Error,
                    &format!("filter call failed, delivering the batch unfiltered: {e}"),
                );
                None
            }
        }
    }
}
