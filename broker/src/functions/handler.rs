//! A handler function: a member of its group, inside the broker.
//!
//! Each runner joins the group (as an ordinary member, so the group's
//! assignment, ack timeouts, retries and dead letters apply unchanged),
//! polls batches, calls the guest and settles each message by its
//! outcome: ack, retry (after the guest's delay, or the group's backoff)
//! or dead-letter. A failed call (trap, timeout, memory cap) is retried
//! message by message, each settled as soon as it is done, so one poison
//! message fails alone; a message whose own call fails is nacked and
//! counts an attempt, and after the group's `max_attempts` it lands in the
//! group's dead-letter topic.
//!
//! A call's effects are committed before its messages are settled: a
//! crash in between redelivers them, so effects are at least once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_host_api::{BatchContext, CallError, Outcome};
use sluice_protocol::ops::function::{Attach, LogLevel};
use sluice_protocol::ops::{
    AckRequest, GroupDelivery, GroupMode, JoinGroupRequest, MemberRef, Nack, NackAction,
    OffsetRange, PartitionAcks,
};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use super::effects::{self, CommitEffectsError};
use super::input::Input;
use super::{Deployment, Shared};
use crate::groups::GroupError;

/// Connection id of handler members (no network connection closes them).
const HANDLER_CONNECTION: u64 = u64::MAX;
const SESSION_TIMEOUT_MS: u32 = 30_000;
const POLL_WAIT: Duration = Duration::from_millis(500);
const POLL_MAX_BYTES: u32 = 4 << 20;

/// What happened to one message: the guest's outcome, or why it is
/// retried.
type Settled = (u64, Result<Outcome, Unsettled>);

/// Why a handler member stopped; [`supervise`](super::supervise) notes it
/// in the function's status and log and joins the group again.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("not a handler")]
    NotAHandler,
    #[error("joining group {group}: {source}")]
    Join {
        group: String,
        #[source]
        source: GroupError,
    },
    /// The group forgot the member (its session expired).
    #[error("left the group; rejoining")]
    LeftGroup,
    #[error("polling: {0}")]
    Poll(#[source] GroupError),
    #[error("settling: {0}")]
    Settle(#[source] GroupError),
    #[error(transparent)]
    Task(#[from] JoinError),
}

/// Why a message is not settled by the guest's outcome: it is retried,
/// with this as the nack's reason.
#[derive(Debug, Clone, thiserror::Error)]
enum Unsettled {
    /// The call that had the message failed.
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("could not commit the handler's effects: {0}")]
    Commit(#[source] Arc<CommitEffectsError>),
    #[error("could not commit the handler's effects: {0}")]
    CommitTask(#[source] Arc<JoinError>),
}

/// The instance id of a handler's members in a broadcast group (in a
/// clustering group, member `i` adds `.i`).
pub fn instance_id(function: &str) -> String {
    format!("fn.{function}")
}

/// Runs member `index` of handler `d` until `stop`.
pub async fn run(shared: Arc<Shared>, d: Arc<Deployment>, index: u32, stop: CancellationToken) {
    let what = format!("handler member {index}");
    super::supervise(&shared, &d, &stop, &what, || {
        serve(&shared, &d, index, &stop)
    })
    .await;
}

async fn serve(
    shared: &Arc<Shared>,
    d: &Arc<Deployment>,
    index: u32,
    stop: &CancellationToken,
) -> Result<(), HandlerError> {
    let manifest = d.active().manifest.clone();
    let Attach::Handler {
        group, settings, ..
    } = &manifest.attach
    else {
        return Err(HandlerError::NotAHandler);
    };
    let groups = shared.groups.clone();
    let req = JoinGroupRequest {
        group: group.clone(),
        member_id: String::new(),
        // In a broadcast group every member of the handler shares one
        // instance (one window), so each message is handled once.
        instance_id: if settings.mode == GroupMode::Broadcast {
            instance_id(&d.name)
        } else {
            format!("{}.{index}", instance_id(&d.name))
        },
        session_timeout_ms: SESSION_TIMEOUT_MS,
        settings: settings.clone(),
    };
    let client_id = format!("function {}", d.name);
    let joined =
        tokio::task::spawn_blocking(move || groups.join(req, &client_id, HANDLER_CONNECTION))
            .await?
            .map_err(|source| HandlerError::Join {
                group: group.clone(),
                source,
            })?;
    let member = MemberRef {
        group: group.clone(),
        member_id: joined.member_id,
    };
    d.set_status("running");
    // Polls keep the session alive, but a batch retried message by message
    // can take longer than the session timeout: heartbeat meanwhile.
    let heartbeat = {
        let (groups, member) = (shared.groups.clone(), member.clone());
        tokio::spawn(async move {
            let every = Duration::from_millis(u64::from(SESSION_TIMEOUT_MS) / 3);
            loop {
                tokio::time::sleep(every).await;
                if groups.heartbeat(&member).is_err() {
                    return;
                }
            }
        })
    };
    let result = poll_loop(shared, d, &member, stop).await;
    heartbeat.abort();
    let groups = shared.groups.clone();
    let m = member.clone();
    let _ = tokio::task::spawn_blocking(move || groups.leave(&m)).await;
    result
}

async fn poll_loop(
    shared: &Arc<Shared>,
    d: &Arc<Deployment>,
    member: &MemberRef,
    stop: &CancellationToken,
) -> Result<(), HandlerError> {
    while !stop.is_cancelled() {
        let max = super::batch_messages(&d.active().manifest) as u32;
        let batch = match shared
            .groups
            .poll(member, max, POLL_MAX_BYTES, POLL_WAIT, stop)
            .await
        {
            Ok(b) => b,
            Err(GroupError::UnknownMember { .. }) => return Err(HandlerError::LeftGroup),
            Err(e) => return Err(HandlerError::Poll(e)),
        };
        for delivery in batch.deliveries {
            handle_delivery(shared, d, member, &delivery).await?;
        }
    }
    Ok(())
}

/// Calls the handler on a delivery and settles its messages. When the
/// call fails, each message is retried on its own and settled as soon as
/// it is done, so one poison message fails alone and the others are not
/// held until their ack timeout.
async fn handle_delivery(
    shared: &Arc<Shared>,
    d: &Arc<Deployment>,
    member: &MemberRef,
    delivery: &GroupDelivery,
) -> Result<(), HandlerError> {
    let mut input = Input::default();
    input.extend(&delivery.records, |o| {
        delivery
            .ranges
            .iter()
            .any(|r| o >= r.first_offset && o < r.first_offset + u64::from(r.count))
    });
    if input.is_empty() {
        return Ok(());
    }
    let context = BatchContext {
        topic: delivery.topic.clone(),
        partition: delivery.partition,
        group: Some(member.group.clone()),
    };
    match call(shared, d, &context, &input).await {
        Ok(settled) => settle(shared, member, delivery, settled).await,
        Err(e) if input.len() == 1 => {
            settle(
                shared,
                member,
                delivery,
                vec![(input.offsets[0], Err(e.into()))],
            )
            .await
        }
        Err(_) => {
            for one in input.split() {
                let settled = match call(shared, d, &context, &one).await {
                    Ok(settled) => settled,
                    Err(e) => vec![(one.offsets[0], Err(e.into()))],
                };
                settle(shared, member, delivery, settled).await?;
            }
            Ok(())
        }
    }
}

/// One call of the handler: each message's outcome once its effects are
/// committed (an `Err` outcome when they could not be), or the call's
/// failure.
async fn call(
    shared: &Arc<Shared>,
    d: &Arc<Deployment>,
    context: &BatchContext,
    input: &Input,
) -> Result<Vec<Settled>, CallError> {
    let active = d.active();
    let started = Instant::now();
    let out = match active
        .function
        .handle_async(context.clone(), input.buf.clone())
        .await
    {
        Ok(out) => out,
        Err(e) => {
            d.stats().failed(input.len(), started.elapsed(), &e);
            d.note(
                shared.now_ms(),
                LogLevel::Error,
                &format!(
                    "call failed on {} message(s) at {}/{} offset {}: {e}",
                    input.len(),
                    context.topic,
                    context.partition,
                    input.offsets[0]
                ),
            );
            return Err(e);
        }
    };
    d.stats().call(out.messages, out.elapsed, out.fuel);
    let (s, name, effects) = (shared.clone(), d.name.clone(), out.effects);
    let keyless = context.partition;
    let committed = match tokio::task::spawn_blocking(move || {
        effects::commit(&s.fs, &s.scheduler, &name, &effects, s.now_ms(), keyless)
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Unsettled::Commit(Arc::new(e))),
        Err(e) => Err(Unsettled::CommitTask(Arc::new(e))),
    };
    let outcomes: Vec<Result<Outcome, Unsettled>> = match committed {
        Ok(()) => out.answer.into_iter().map(Ok).collect(),
        Err(reason) => {
            d.stats().error("commit");
            d.note(shared.now_ms(), LogLevel::Error, &reason.to_string());
            vec![Err(reason); input.len()]
        }
    };
    Ok(input.offsets.iter().copied().zip(outcomes).collect())
}

/// Acks and nacks the delivery's messages by their outcomes.
async fn settle(
    shared: &Arc<Shared>,
    member: &MemberRef,
    delivery: &GroupDelivery,
    settled: Vec<Settled>,
) -> Result<(), HandlerError> {
    let mut ranges: Vec<OffsetRange> = Vec::new();
    let mut nacks = Vec::new();
    for (offset, outcome) in settled {
        let (action, reason) = match outcome {
            Ok(Outcome::Ack) => {
                match ranges.last_mut() {
                    Some(r) if r.first_offset + u64::from(r.count) == offset => r.count += 1,
                    _ => ranges.push(OffsetRange {
                        first_offset: offset,
                        count: 1,
                    }),
                }
                continue;
            }
            Ok(Outcome::Retry(None)) => (NackAction::Retry, "the handler asked for a retry".into()),
            Ok(Outcome::Retry(Some(ms))) => (
                NackAction::RetryAfter(ms.min(u64::from(u32::MAX)) as u32),
                format!("the handler asked for a retry after {ms} ms"),
            ),
            Ok(Outcome::DeadLetter(reason)) => (NackAction::DeadLetter, reason),
            Err(reason) => (NackAction::Retry, reason.to_string()),
        };
        nacks.push(Nack {
            topic: delivery.topic.clone(),
            partition: delivery.partition,
            offset,
            action,
            reason,
        });
    }
    let req = AckRequest {
        member: member.clone(),
        acks: if ranges.is_empty() {
            Vec::new()
        } else {
            vec![PartitionAcks {
                topic: delivery.topic.clone(),
                partition: delivery.partition,
                ranges,
            }]
        },
        nacks,
    };
    let groups = shared.groups.clone();
    tokio::task::spawn_blocking(move || groups.ack(&req))
        .await?
        .map(|_| ())
        .map_err(HandlerError::Settle)
}
