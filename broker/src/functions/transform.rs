//! A transform function: input topic → output topics, exactly once.
//!
//! One runner per input partition. Per batch it reads from its position,
//! calls the guest, and builds one record batch per output partition,
//! stamped with the runner's idempotent producer id and the next sequence
//! numbers. Then, in one synced metadata write, it commits the new input
//! position, the sequences, the call's kv writes **and the output batches
//! themselves** (pending outputs); only then does it append the batches
//! to the log and forget them.
//!
//! A crash before that write loses nothing (the batch is read again from
//! the old position); a crash after it leaves pending outputs that the
//! next start appends again through the log's idempotent replay
//! ([`Partition::write_replayed`]): the partition's producer table, which
//! survives restarts whole, recognises a batch with the runner's producer
//! id and sequence that made it into the log, so it is not appended twice.
//! Every input's outputs therefore appear exactly once. Emitted
//! messages travel with the outputs and get the same guarantee; scheduled
//! messages are handed to the scheduler just before the commit (a crash in
//! between schedules them again: at least once), cancellations after it.
//!
//! Failed calls are retried message by message; an input whose own call
//! fails [`ATTEMPTS`] times, or that the guest reports as failed, goes to
//! the function's dead-letter topic (`sluice.fn-dlq.<name>`) with the
//! reason — as part of the same exactly-once outputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use sluice_host_api::{BatchContext, Effects, TransformOutput};
use sluice_meta::Batch;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::function::{Attach, LogLevel};
use sluice_protocol::transform_output::{OutputEntry, OutputHeaders};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use super::effects::{
    CancelEffectsError, OutMessage, OutputBatches, OutputTargetError, ScheduleEffectsError,
    append_all, output_partition,
};
use super::input::Input;
use super::store::{PendingBatch, TaskState};
use super::{Active, Deployment, Shared, dead_letter_topic};
use crate::groups::{GroupError, resolve_offset};
use crate::log::{LogError, Partition};
use crate::meta::MetaError;

/// Calls one failing input gets before it is dead-lettered.
pub const ATTEMPTS: u32 = 3;
/// Bytes read from the input per batch at most.
const READ_BYTES: usize = 1 << 20;

/// Why a transform runner stopped; [`supervise`](super::supervise) notes
/// it in the function's status and log and starts the runner again.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Recover(#[from] RecoverError),
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Why a runner could not start: its input partition or its stored state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("not a transform")]
    NotATransform,
    /// The input partition does not exist (any more).
    #[error(transparent)]
    Input(LogError),
    /// Resolving the manifest's start position in the input.
    #[error(transparent)]
    Position(GroupError),
    /// Reading or storing the runner's state (position, producer id).
    #[error(transparent)]
    State(#[from] MetaError),
    #[error("task failed: {0}")]
    Task(#[from] JoinError),
}

/// Why the pending outputs a crash left could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Reading or clearing the pending outputs.
    #[error(transparent)]
    State(#[from] MetaError),
    #[error(transparent)]
    Append(#[from] LogError),
    #[error("task failed: {0}")]
    Task(#[from] JoinError),
}

/// Why one batch of input could not be transformed and committed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Read(LogError),
    #[error("no readable batch at offset {0}")]
    NoBatch(u64),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("task failed: {0}")]
    Task(#[from] JoinError),
}

/// Why a batch's outputs and new position could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("not a transform")]
    NotATransform,
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Writing kv writes, the runner's state or the pending outputs.
    #[error(transparent)]
    State(#[from] MetaError),
    /// Creating the function's dead-letter topic.
    #[error(transparent)]
    DeadLetterTopic(GroupError),
    #[error(transparent)]
    DeadLetterPartition(LogError),
    #[error(transparent)]
    Schedule(#[from] ScheduleEffectsError),
    #[error(transparent)]
    Cancel(#[from] CancelEffectsError),
    #[error("appending outputs: {0}")]
    Append(#[source] LogError),
    #[error("task failed: {0}")]
    Task(#[from] JoinError),
}

/// Why an output message cannot be written; an input with such an output
/// is dead-lettered with this as its reason.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Target(#[from] OutputTargetError),
    #[error("an output for {0} is larger than its max batch size")]
    TooLarge(String),
}

/// Runs the transform of `d` on input partition `partition` until `stop`.
pub async fn run(shared: Arc<Shared>, d: Arc<Deployment>, partition: u32, stop: CancellationToken) {
    let what = format!("transform partition {partition}");
    super::supervise(&shared, &d, &stop, &what, || {
        serve(&shared, &d, partition, &stop)
    })
    .await;
}

struct Task {
    shared: Arc<Shared>,
    d: Arc<Deployment>,
    input: Arc<Partition>,
    partition: u32,
    state: TaskState,
}

/// Runs `f` off the async workers (metadata writes sync to disk).
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<JoinError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

async fn serve(
    shared: &Arc<Shared>,
    d: &Arc<Deployment>,
    partition: u32,
    stop: &CancellationToken,
) -> Result<(), TransformError> {
    let Attach::Transform { input, start, .. } = d.active().manifest.attach.clone() else {
        return Err(StartError::NotATransform.into());
    };
    let part = shared
        .store()
        .log()
        .partition(&input, partition)
        .map_err(StartError::Input)?;
    let (s, name, p) = (shared.clone(), d.name.clone(), part.clone());
    let state = blocking(move || {
        if let Some(state) = s.fs.task_state(&name, partition)? {
            return Ok(state);
        }
        // First start: fix the position now, so `latest` does not drift.
        let state = TaskState {
            position: resolve_offset(&p, start).map_err(StartError::Position)?,
            producer_id: s.store().meta().allocate_producer_id()?,
            sequences: Vec::new(),
        };
        let mut batch = Batch::default();
        s.fs.put_task(&mut batch, &name, partition, &state, &[])?;
        s.fs.commit(batch)?;
        Ok::<_, StartError>(state)
    })
    .await?;
    let mut task = Task {
        shared: shared.clone(),
        d: d.clone(),
        input: part,
        partition,
        state,
    };
    task.recover().await?;
    d.positions.lock().insert(partition, task.state.position);
    d.set_status("running");
    let mut hw = task.input.watch_high_watermark();
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        hw.borrow_and_update();
        if task.input.high_watermark() <= task.state.position {
            tokio::select! {
                _ = hw.changed() => {}
                _ = stop.cancelled() => return Ok(()),
            }
            continue;
        }
        task.step().await?;
        d.positions.lock().insert(partition, task.state.position);
    }
}

impl Task {
    /// Appends pending outputs a crash left behind (those not in the log).
    async fn recover(&mut self) -> Result<(), RecoverError> {
        let (s, name, partition) = (self.shared.clone(), self.d.name.clone(), self.partition);
        let recovered = blocking(move || {
            let pending = s.fs.pending(&name, partition)?;
            let mut appended = Vec::new();
            for pb in &pending {
                let Ok(out) = s.store().log().partition(&pb.topic, pb.partition) else {
                    tracing::warn!(function = %name, topic = %pb.topic, "output topic is gone; dropping its pending outputs");
                    continue;
                };
                // Stamped with the runner's producer id and sequence: the
                // log recognises the ones it already holds.
                if let Some(w) = out.write_replayed(BytesMut::from(&pb.batch[..]))? {
                    appended.push((out, w));
                }
            }
            for (out, w) in &appended {
                out.wait_durable(w)?;
            }
            s.fs.clear_pending(&name, partition)?;
            Ok::<_, RecoverError>((pending.len(), appended.len()))
        })
        .await?;
        if recovered.0 > 0 {
            self.d.note(
                self.shared.now_ms(),
                LogLevel::Info,
                &format!(
                    "partition {}: recovered {} pending output batch(es), {} not yet in the log",
                    self.partition, recovered.0, recovered.1
                ),
            );
        }
        Ok(())
    }

    /// Transforms one batch of input and commits it.
    async fn step(&mut self) -> Result<(), StepError> {
        let active = self.d.active();
        let max = super::batch_messages(&active.manifest) as u64;
        let from = self.state.position;
        // A read may miss the tail cache and pread the disk: off the workers.
        let input = self.input.clone();
        let read = tokio::task::spawn_blocking(move || input.read(from, READ_BYTES)).await?;
        let read = match read {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { start, .. }) if from < start => {
                // Retention deleted input the transform had not read.
                self.d.note(
                    self.shared.now_ms(),
                    LogLevel::Warn,
                    &format!(
                        "partition {}: offsets {from}..{start} were deleted by retention before they were transformed",
                        self.partition
                    ),
                );
                return Ok(self.commit(&active, start, Vec::new()).await?);
            }
            Err(e) => return Err(StepError::Read(e)),
        };
        // Whole stored batches, up to `max` messages past `from`.
        let mut end = from;
        let mut input = Input::default();
        for chunk in &read.chunks {
            for b in BatchIter::new(chunk).flatten() {
                let h = b.header();
                if h.next_offset() <= from {
                    continue;
                }
                if end > from && end - from + u64::from(h.record_count) > max {
                    break;
                }
                end = end.max(h.next_offset());
                input.extend(b.as_bytes(), |o| o >= from);
            }
        }
        if end == from {
            return Err(StepError::NoBatch(from));
        }
        let context = BatchContext {
            topic: self.input.topic().to_owned(),
            partition: self.partition,
            group: None,
        };
        let results = self.call(&active, &context, input).await;
        Ok(self.commit(&active, end, results).await?)
    }

    /// Calls the transform on `input`; on failure, message by message.
    async fn call(&self, active: &Active, context: &BatchContext, input: Input) -> Vec<CallResult> {
        if input.is_empty() {
            return Vec::new();
        }
        let mut todo = vec![(input, 1u32)];
        let mut done = Vec::new();
        while let Some((input, attempt)) = todo.pop() {
            let started = Instant::now();
            let buf = input.buf.clone();
            match active.function.transform_async(context.clone(), buf).await {
                Ok(out) => {
                    self.d.stats().call(out.messages, out.elapsed, out.fuel);
                    done.push(CallResult::Done {
                        input,
                        answer: out.answer,
                        effects: out.effects,
                    });
                }
                Err(e) => {
                    self.d.stats().failed(input.len(), started.elapsed(), &e);
                    self.d.note(
                        self.shared.now_ms(),
                        LogLevel::Error,
                        &format!(
                            "call failed on {} message(s) at offset {} (attempt {attempt}): {e}",
                            input.len(),
                            input.offsets[0]
                        ),
                    );
                    if input.len() > 1 {
                        // Reversed, so they are popped in input order.
                        todo.extend(input.split().into_iter().rev().map(|i| (i, 1)));
                    } else if attempt < ATTEMPTS && !e.is_transient() {
                        todo.push((input, attempt + 1));
                    } else if e.is_transient() {
                        todo.push((input, attempt));
                    } else {
                        done.push(CallResult::Failed {
                            input,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        done
    }

    /// Commits the outputs with the new position, then appends them.
    async fn commit(
        &mut self,
        active: &Active,
        end: u64,
        results: Vec<CallResult>,
    ) -> Result<(), CommitError> {
        let Attach::Transform { outputs, .. } = &active.manifest.attach else {
            return Err(CommitError::NotATransform);
        };
        let default_output = outputs[0].clone();
        let shared = self.shared.clone();
        let name = self.d.name.clone();
        let partition = self.partition;
        let mut state = self.state.clone();
        state.position = end;
        let input_topic = self.input.topic().to_owned();
        let (built, dead, unwritable) = blocking(move || {
            let log = shared.store().log();
            let now = shared.now_ms();
            let sequences = state
                .sequences
                .iter()
                .map(|(t, p, s)| ((t.clone(), *p), *s))
                .collect();
            let mut out = OutputBatches::with_producer(now, state.producer_id, sequences);
            let mut kv = Batch::default();
            let mut scheduled = Effects::default();
            let mut dead = 0;
            let mut unwritable = 0;
            let dlq = dead_letter_topic(&name);
            for r in &results {
                let failures = match r {
                    CallResult::Done {
                        input,
                        answer,
                        effects,
                    } => {
                        let failures =
                            route(log, &mut out, &default_output, partition, input, answer)?;
                        for e in &effects.emitted {
                            let m = OutMessage::of(&e.message);
                            match output_partition(log, &e.topic, m.key, partition) {
                                Ok(p) if m.fits(&p) => out.push(&p, &m),
                                _ => unwritable += 1,
                            }
                        }
                        shared.fs.kv_write(&mut kv, &name, &effects.kv_writes)?;
                        scheduled
                            .scheduled
                            .extend(effects.scheduled.iter().cloned());
                        scheduled
                            .cancelled
                            .extend(effects.cancelled.iter().cloned());
                        failures
                    }
                    CallResult::Failed { input, reason } => input
                        .offsets
                        .iter()
                        .map(|o| (*o, reason.clone(), input))
                        .collect(),
                };
                if !failures.is_empty() {
                    shared
                        .groups
                        .ensure_topic(&dlq)
                        .map_err(CommitError::DeadLetterTopic)?;
                    let dlq_partition = log
                        .partition(&dlq, 0)
                        .map_err(CommitError::DeadLetterPartition)?;
                    for (offset, reason, input) in failures {
                        dead_letter(
                            &mut out,
                            &dlq_partition,
                            &input_topic,
                            partition,
                            offset,
                            &reason,
                            input,
                        );
                        dead += 1;
                    }
                }
            }
            let (batches, sequences) = out.finish();
            state.sequences = sequences.into_iter().map(|((t, p), s)| (t, p, s)).collect();
            let pending: Vec<PendingBatch> = batches
                .iter()
                .map(|(p, b)| PendingBatch {
                    topic: p.topic().to_owned(),
                    partition: p.id(),
                    search_from: p.high_watermark(),
                    batch: b.clone(),
                })
                .collect();
            shared
                .fs
                .put_task(&mut kv, &name, partition, &state, &pending)?;
            // Scheduled before the commit, so a crash in between schedules
            // them again with the retried batch: at least once, never lost.
            super::effects::schedule(
                &shared.fs,
                &shared.scheduler,
                &name,
                &scheduled.scheduled,
                partition,
                &mut kv,
            )?;
            shared.fs.commit(kv)?;
            // Committed: from here on a crash is recovered from `pending`.
            append_all(&batches).map_err(CommitError::Append)?;
            if !pending.is_empty() {
                shared.fs.clear_pending(&name, partition)?;
            }
            super::effects::cancel(&shared.fs, &shared.scheduler, &name, &scheduled.cancelled)?;
            Ok::<_, CommitError>((state, dead, unwritable))
        })
        .await?;
        if unwritable > 0 {
            self.d.stats().error("output_limit");
            self.d.note(
                self.shared.now_ms(),
                LogLevel::Error,
                &format!(
                    "{unwritable} emitted message(s) dropped: their topic does not exist, is reserved, or is smaller than they are"
                ),
            );
        }
        if dead > 0 {
            for _ in 0..dead {
                self.d.stats().error("dead_letter");
            }
            self.d.note(
                self.shared.now_ms(),
                LogLevel::Warn,
                &format!(
                    "{dead} input(s) dead-lettered to {}",
                    dead_letter_topic(&self.d.name)
                ),
            );
        }
        self.state = built;
        Ok(())
    }
}

enum CallResult {
    Done {
        input: Input,
        answer: TransformOutput,
        effects: Effects,
    },
    Failed {
        input: Input,
        reason: String,
    },
}

/// Adds a call's output messages to `out`; returns the inputs that failed
/// — reported as failed by the guest, or with an output that cannot be
/// written (unknown or reserved topic, larger than its topic's batch
/// limit). A failed input's other outputs are not written: it goes to the
/// dead-letter topic whole.
fn route<'a>(
    log: &crate::log::Log,
    out: &mut OutputBatches,
    default_output: &str,
    partition: u32,
    input: &'a Input,
    answer: &TransformOutput,
) -> Result<Vec<(u64, String, &'a Input)>, RouteError> {
    let target = |topic: &str, key: Option<&[u8]>, m: &OutMessage<'_>| {
        let topic = if topic.is_empty() {
            default_output
        } else {
            topic
        };
        let p = output_partition(log, topic, key, partition)?;
        if m.fits(&p) {
            Ok(p)
        } else {
            Err(RouteError::TooLarge(topic.to_owned()))
        }
    };
    let mut failed: BTreeMap<u32, String> = BTreeMap::new();
    for entry in answer.entries() {
        match entry {
            OutputEntry::Message {
                input: i,
                topic,
                key,
                value,
                headers,
            } => {
                if let Err(e) = target(topic, key, &out_message(key, value, headers)) {
                    // The dead-letter reason header.
                    failed.entry(i).or_insert_with(|| e.to_string());
                }
            }
            OutputEntry::Failure { input: i, reason } => {
                failed.entry(i).or_insert_with(|| reason.to_owned());
            }
        }
    }
    for entry in answer.entries() {
        if let OutputEntry::Message {
            input: i,
            topic,
            key,
            value,
            headers,
        } = entry
            && !failed.contains_key(&i)
        {
            let m = out_message(key, value, headers);
            out.push(&target(topic, key, &m)?, &m);
        }
    }
    Ok(failed
        .into_iter()
        .map(|(i, reason)| {
            let offset = input.offsets.get(i as usize).copied().unwrap_or_default();
            (offset, reason, input)
        })
        .collect())
}

fn out_message<'a>(
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: OutputHeaders<'a>,
) -> OutMessage<'a> {
    OutMessage {
        key,
        value,
        headers: headers.map(|(k, v)| (k, Some(v))).collect(),
    }
}

/// Adds the input at `offset` to the dead-letter batch, with its origin and
/// the reason in headers.
fn dead_letter(
    out: &mut OutputBatches,
    dlq: &Arc<Partition>,
    topic: &str,
    partition: u32,
    offset: u64,
    reason: &str,
    input: &Input,
) {
    let Some(r) = BatchIter::new(&input.buf)
        .flatten()
        .flat_map(|b| b.records().flatten().collect::<Vec<_>>())
        .find(|r| r.offset == offset)
    else {
        return;
    };
    // Big-endian integers, as the protocol defines these headers.
    let (p, o) = (partition.to_be_bytes(), offset.to_be_bytes());
    let mut hs: Vec<(&str, Option<&[u8]>)> = r
        .headers()
        .flatten()
        .filter(|(k, _)| !k.starts_with(headers::RESERVED_PREFIX) || *k == headers::TAG)
        .collect();
    hs.push((headers::ORIGIN_TOPIC, Some(topic.as_bytes())));
    hs.push((headers::ORIGIN_PARTITION, Some(&p[..])));
    hs.push((headers::ORIGIN_OFFSET, Some(&o[..])));
    hs.push((headers::DEAD_REASON, Some(reason.as_bytes())));
    out.push(
        dlq,
        &OutMessage {
            key: r.key,
            value: r.value.unwrap_or_default(),
            headers: hs,
        },
    );
}
