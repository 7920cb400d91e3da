//! Dispatch of the scheduler's requests: schedule, cancel, list.

use sluice_protocol::ops::{
    CancelDelaysRequest, CancelDelaysResponse, CancelResult, ListDelaysRequest, ListDelaysResponse,
    ScheduleRequest, ScheduleResponse, ScheduleResult, When,
};
use sluice_protocol::{ErrorCode, WireError};

use super::errors::{ToWire, to_wire};
use super::{Broker, blocking};
use crate::sched::Delivery;

impl Broker {
    pub async fn schedule(&self, req: ScheduleRequest) -> Result<ScheduleResponse, WireError> {
        let sched = self.scheduler.clone();
        let now = self.clock.now_ms();
        let deliveries = req
            .entries
            .into_iter()
            .map(|e| Delivery {
                topic: e.topic,
                partition: e.partition,
                due_at_ms: match e.when {
                    When::At(ms) => ms,
                    When::After(ms) => now.saturating_add(ms.min(i64::MAX as u64) as i64),
                },
                repeat: e.repeat,
                record: e.record,
            })
            .collect();
        let results = blocking(move || sched.schedule(deliveries)).await?;
        Ok(ScheduleResponse {
            results: results
                .into_iter()
                .map(|r| match r {
                    Ok(s) => ScheduleResult {
                        error: ErrorCode::None,
                        message: String::new(),
                        delay_id: s.delay_id,
                        due_at_ms: s.due_at_ms,
                    },
                    Err(e) => {
                        let e = e.to_wire();
                        ScheduleResult {
                            error: e.code,
                            message: e.message,
                            delay_id: 0,
                            due_at_ms: -1,
                        }
                    }
                })
                .collect(),
        })
    }

    pub async fn cancel_delays(
        &self,
        req: CancelDelaysRequest,
    ) -> Result<CancelDelaysResponse, WireError> {
        let sched = self.scheduler.clone();
        let results = blocking(move || {
            req.ids
                .into_iter()
                .map(|id| {
                    sched.cancel(id).map(|(outcome, message)| CancelResult {
                        delay_id: id,
                        outcome,
                        message,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
        .map_err(to_wire)?;
        Ok(CancelDelaysResponse { results })
    }

    pub async fn list_delays(
        &self,
        req: ListDelaysRequest,
    ) -> Result<ListDelaysResponse, WireError> {
        let sched = self.scheduler.clone();
        let topic = (!req.topic.is_empty()).then_some(req.topic);
        let topics = blocking(move || sched.list(topic.as_deref()))
            .await?
            .map_err(to_wire)?;
        Ok(ListDelaysResponse { topics })
    }
}
