//! Delay admin: cancel scheduled messages and list what is pending.
//! Scheduling itself is in [`crate::delay`].

use sluice_protocol::ops::{CancelDelaysRequest, ListDelaysRequest};

use crate::Client;
use crate::delay::{CancelOutcome, CancelResult, DelaySummary};
use crate::error::{ClientError, Result};

impl Client {
    /// Cancels one scheduled message (a loop message stops looping); the
    /// outcome says whether it was still pending.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::CancelOutcome;
    /// match client.cancel_delay(42).await? {
    ///     CancelOutcome::Cancelled => println!("will not be delivered"),
    ///     other => println!("too late or unknown: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_delay(&self, delay_id: u64) -> Result<CancelOutcome> {
        let results = self.cancel_delays(&[delay_id]).await?;
        results
            .into_iter()
            .find(|r| r.delay_id == delay_id)
            .map(|r| r.outcome)
            .ok_or_else(|| ClientError::Corrupt(format!("no cancel result for delay {delay_id}")))
    }

    /// Cancels scheduled messages; one result per id, with the outcome and a
    /// sentence for people.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// for r in client.cancel_delays(&[7, 8]).await? {
    ///     println!("{}: {:?} ({})", r.delay_id, r.outcome, r.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_delays(&self, delay_ids: &[u64]) -> Result<Vec<CancelResult>> {
        Ok(self
            .conn
            .request(&CancelDelaysRequest {
                ids: delay_ids.to_vec(),
            })
            .await?
            .results)
    }

    /// Pending scheduled messages per topic (a loop message counts once):
    /// of one topic, or of every topic that has any.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// for t in client.list_delays(None).await? {
    ///     println!("{}: {} pending, next due at {}", t.topic, t.pending, t.next_due_ms);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_delays(&self, topic: Option<&str>) -> Result<Vec<DelaySummary>> {
        Ok(self
            .conn
            .request(&ListDelaysRequest {
                topic: topic.unwrap_or_default().to_owned(),
            })
            .await?
            .topics)
    }
}
