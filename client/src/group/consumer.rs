//! The group consumer: joining ([`Client::group_consumer`]), pulling with
//! [`GroupConsumer::poll`], and leaving. Pushed delivery is in
//! [`super::push`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_protocol::ops::{PollGroupRequest, TopicPartition};
use tokio::task::JoinHandle;

use super::acks::AckStats;
use super::config::{GroupConfig, millis_u32};
use super::member::{Shared, heartbeat_loop, needs_rejoin};
use super::message::GroupMessage;
use super::settle::ack_loop;
use crate::Client;
use crate::error::Result;

/// A member of a consumer group; see the module docs.
///
/// Dropping it leaves the group in the background (queued acks are sent
/// first) when inside a Tokio runtime; [`GroupConsumer::leave`] does the
/// same and reports how it went.
#[derive(Debug)]
pub struct GroupConsumer {
    pub(super) shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    left: bool,
}

impl Client {
    /// Joins a consumer group and keeps the membership alive in the
    /// background. Fails when the group exists with other settings
    /// ([`ErrorCode::InconsistentGroup`](crate::ErrorCode::InconsistentGroup)) or the topic does not.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::GroupConfig;
    /// let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
    /// println!("member {} has {:?}", consumer.member_id(), consumer.assignment());
    /// consumer.leave().await?;
    /// # Ok(()) }
    /// ```
    pub async fn group_consumer(&self, config: GroupConfig) -> Result<GroupConsumer> {
        config.validate()?;
        let shared = Arc::new(Shared::new(self.conn.clone(), config));
        let resp = shared.join().await?;
        shared.install(resp);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(shared.clone())),
            tokio::spawn(ack_loop(shared.clone())),
        ];
        Ok(GroupConsumer {
            shared,
            tasks,
            left: false,
        })
    }
}

impl GroupConsumer {
    /// The group's name.
    pub fn group(&self) -> &str {
        &self.shared.config.group
    }

    /// The configuration this consumer joined with.
    pub fn config(&self) -> &GroupConfig {
        &self.shared.config
    }

    /// The current member id (it changes when the consumer rejoins).
    pub fn member_id(&self) -> String {
        self.shared.member.lock().member_id.clone()
    }

    /// The instance id this consumer joins as (see [`GroupConfig::instance_id`]).
    pub fn instance_id(&self) -> String {
        self.shared.instance_id.lock().clone()
    }

    /// The group generation last heard of.
    pub fn generation(&self) -> u32 {
        self.shared.member.lock().generation
    }

    /// The partitions assigned to this member, as last heard of (from the
    /// join or the latest heartbeat).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared.member.lock().assignment.clone()
    }

    /// Settlement counts so far (see [`AckStats`]).
    pub fn ack_stats(&self) -> AckStats {
        AckStats {
            settled: self.shared.settled.load(Ordering::Relaxed),
            stale: self.shared.stale.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Long-polls for messages: returns as soon as any are ready, or empty
    /// after [`GroupConfig::poll_max_wait`]. Rejoins by itself when the
    /// broker forgot the member. Several tasks may poll at once.
    pub async fn poll(&self) -> Result<Vec<GroupMessage>> {
        let config = &self.shared.config;
        let mut req = PollGroupRequest {
            member: self.shared.member_ref(),
            max_messages: config.poll_max_messages,
            max_bytes: config.max_bytes,
            max_wait_ms: millis_u32(config.poll_max_wait),
        };
        let mut rejoins = 0;
        loop {
            let stream = self.shared.stream().await?;
            match stream.request(&req, Some(config.poll_max_wait)).await {
                Ok(batch) => {
                    self.shared
                        .note_generation(&req.member.member_id, batch.generation);
                    let messages = self.shared.parse(&batch)?;
                    if config.auto_ack {
                        messages.iter().for_each(|m| {
                            m.ack();
                        });
                    }
                    return Ok(messages);
                }
                Err(e) if needs_rejoin(&e) && rejoins < 3 => {
                    rejoins += 1;
                    self.shared.rejoin(&req.member.member_id).await?;
                    req.member = self.shared.member_ref();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends every queued settlement now and waits for the broker's answers.
    pub async fn flush_acks(&self) -> Result<()> {
        self.shared.flush_acks().await
    }

    /// Sends the queued settlements and leaves the group: the broker hands
    /// this member's unsettled messages to the others at once.
    pub async fn leave(mut self) -> Result<()> {
        self.left = true;
        self.shared.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let flushed = self.shared.flush_acks().await;
        let left = self.shared.leave_group().await;
        flushed.and(left)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        self.shared.shutdown.send_replace(true);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            rt.spawn(async move {
                let _ = shared.flush_acks().await;
                let _ = shared.leave_group().await;
            });
        }
    }
}
