//! Sending settlements: the background task that empties the ack queue
//! in batched requests, several in flight, and the flush that waits for
//! all of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_protocol::ops::{AckRequest, AckResponse};

use super::acks::{ACK_REQUESTS_IN_FLIGHT, SettleBatch};
use super::member::{Shared, needs_rejoin, stopped};
use crate::error::{ClientError, Result};

impl Shared {
    /// Sends one settlement request, rejoining once if the member is gone
    /// (the broker matches settlements by partition and offset, so the new
    /// member id still settles what is in flight).
    async fn settle(&self, batch: &SettleBatch) -> Result<AckResponse> {
        let mut req = AckRequest {
            member: self.member_ref(),
            acks: batch.acks.clone(),
            nacks: batch.nacks.clone(),
        };
        let mut rejoined = false;
        loop {
            let stream = self.stream().await?;
            match stream.request(&req, None).await {
                Ok(r) => return Ok(r),
                Err(e) if needs_rejoin(&e) && !rejoined => {
                    rejoined = true;
                    self.rejoin(&req.member.member_id).await?;
                    req.member = self.member_ref();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn record(&self, batch: &SettleBatch, result: &Result<AckResponse>) {
        match result {
            Ok(r) => {
                self.settled.fetch_add(r.settled.into(), Ordering::Relaxed);
                self.stale.fetch_add(r.stale.into(), Ordering::Relaxed);
            }
            Err(e) => {
                self.failed
                    .fetch_add(batch.messages as u64, Ordering::Relaxed);
                tracing::warn!(
                    group = %self.config.group,
                    messages = batch.messages,
                    error = %e,
                    "settling messages failed; the broker will deliver them again"
                );
            }
        }
    }

    /// Sends everything queued and waits for every settlement request's answer.
    pub(super) async fn flush_acks(&self) -> Result<()> {
        let _all = self
            .ack_slots
            .acquire_many(ACK_REQUESTS_IN_FLIGHT as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let Some(batch) = self.acks.take() else {
            return Ok(());
        };
        let result = self.settle(&batch).await;
        self.record(&batch, &result);
        result.map(|_| ())
    }
}

/// Sends queued settlements: at once when a batch is full, else after the
/// ack interval, several requests in flight at a time.
pub(super) async fn ack_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let queue = shared.acks.clone();
    loop {
        tokio::select! {
            _ = queue.queued.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if !queue.is_full() {
            tokio::select! {
                _ = tokio::time::sleep(shared.config.ack_interval) => {}
                _ = queue.full.notified() => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
        // The permit before the batch: whoever holds every permit knows no
        // batch is taken and not yet sent (see `Shared::flush_acks`).
        let permit = tokio::select! {
            p = shared.ack_slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Some(batch) = queue.take() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = shared.settle(&batch).await;
            shared.record(&batch, &result);
            drop(permit);
        });
    }
}
