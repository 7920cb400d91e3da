//! Turning what a function produced into log appends and scheduler
//! entries: output batching (one record batch per output partition, split
//! at the topic's batch size) and committing a handler's effects.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_host_api::{Effects, OutgoingMessage, Scheduled};
use sluice_meta::Batch;
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::ops::DelayedRecord;
use sluice_protocol::ops::group::INTERNAL_TOPIC_PREFIX;

use super::store::FunctionStore;
use crate::log::{Log, LogError, Partition};
use crate::meta::MetaError;
use crate::sched::{Delivery, SchedError, Scheduler};

/// Bytes a batch header adds (Kafka v2: 61), and a generous per-record
/// overhead (varints), so split batches stay under the topic's limit.
const BATCH_OVERHEAD: usize = 61;
const RECORD_OVERHEAD: usize = 32;

/// The partition a message goes to: by key (the client producer's rule,
/// crc32c of the key, so keys land where producers put them), else
/// `keyless` modulo the partition count.
fn partition_for(
    log: &Log,
    topic: &str,
    key: Option<&[u8]>,
    keyless: u32,
) -> Result<Arc<Partition>, LogError> {
    let t = log.topic(topic)?;
    let n = t.partitions().len().max(1) as u32;
    let p = match key {
        Some(k) => crc32c::crc32c(k) % n,
        None => keyless % n,
    };
    t.partition(p).cloned()
}

/// Why a function's output or emitted message has nowhere to go. The
/// message is for the function's author (it becomes a dead-letter reason).
#[derive(Debug, thiserror::Error)]
pub enum OutputTargetError {
    #[error("topic {0} is reserved for the broker (names starting with {INTERNAL_TOPIC_PREFIX})")]
    Reserved(String),
    #[error("output to {topic}: {source}")]
    Unavailable {
        topic: String,
        #[source]
        source: LogError,
    },
}

/// The partition a function's output or emitted message goes to, refusing
/// unknown topics and the broker's own (`sluice.*`).
pub fn output_partition(
    log: &Log,
    topic: &str,
    key: Option<&[u8]>,
    keyless: u32,
) -> Result<Arc<Partition>, OutputTargetError> {
    if topic.starts_with(INTERNAL_TOPIC_PREFIX) {
        return Err(OutputTargetError::Reserved(topic.to_owned()));
    }
    partition_for(log, topic, key, keyless).map_err(|source| OutputTargetError::Unavailable {
        topic: topic.to_owned(),
        source,
    })
}

/// One output message, borrowed from a guest's answer.
#[derive(Debug)]
pub struct OutMessage<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> OutMessage<'a> {
    pub fn of(m: &'a OutgoingMessage) -> Self {
        OutMessage {
            key: m.key.as_deref(),
            value: &m.value,
            headers: m
                .headers
                .iter()
                .map(|h| (h.name.as_str(), Some(h.value.as_slice())))
                .collect(),
        }
    }

    /// Whether the message fits in a batch of its own on `partition`.
    pub fn fits(&self, partition: &Partition) -> bool {
        self.size() + BATCH_OVERHEAD <= partition.config().max_batch_bytes as usize
    }

    fn size(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 4)
                .sum::<usize>()
    }
}

/// Next producer sequence per output (topic, partition).
pub type Sequences = BTreeMap<(String, u32), i32>;

/// Finished batches with the partition each goes to.
pub type Batches = Vec<(Arc<Partition>, Bytes)>;

/// Output batches being built, per output partition.
#[derive(Debug)]
pub struct OutputBatches {
    now_ms: i64,
    /// Producer id and next sequences (transforms); `None` = plain batches.
    producer: Option<(i64, Sequences)>,
    open: BTreeMap<(String, u32), (Arc<Partition>, BatchBuilder)>,
    done: Batches,
}

impl OutputBatches {
    pub fn new(now_ms: i64) -> Self {
        OutputBatches {
            now_ms,
            producer: None,
            open: BTreeMap::new(),
            done: Vec::new(),
        }
    }

    /// Batches carrying an idempotent producer id, numbered from `sequences`.
    pub fn with_producer(now_ms: i64, id: i64, sequences: Sequences) -> Self {
        OutputBatches {
            producer: Some((id, sequences)),
            ..Self::new(now_ms)
        }
    }

    pub fn push(&mut self, partition: &Arc<Partition>, m: &OutMessage<'_>) {
        let key = (partition.topic().to_owned(), partition.id());
        let limit = partition.config().max_batch_bytes as usize;
        if let Some((_, b)) = self.open.get(&key)
            && !b.is_empty()
            && b.size_in_bytes() + m.size() + BATCH_OVERHEAD > limit
        {
            self.seal(&key);
        }
        let (_, builder) = self
            .open
            .entry(key)
            .or_insert_with(|| (partition.clone(), BatchBuilder::new(self.now_ms)));
        builder.push(self.now_ms, m.key, Some(m.value), &m.headers);
    }

    fn seal(&mut self, key: &(String, u32)) {
        let Some((partition, builder)) = self.open.remove(key) else {
            return;
        };
        let builder = match &mut self.producer {
            Some((id, sequences)) => {
                let seq = sequences.entry(key.clone()).or_insert(0);
                let first = *seq;
                *seq = seq.wrapping_add(builder.len() as i32) & i32::MAX;
                builder.producer(*id, 0, first)
            }
            None => builder,
        };
        self.done.push((partition, builder.finish()));
    }

    /// The finished batches and, for producer batches, the next sequences.
    pub fn finish(mut self) -> (Batches, Sequences) {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.seal(&k);
        }
        let sequences = self.producer.map(|(_, s)| s).unwrap_or_default();
        (self.done, sequences)
    }
}

/// Appends batches and waits until they are durable.
pub fn append_all(batches: &[(Arc<Partition>, Bytes)]) -> Result<(), LogError> {
    let pending = batches
        .iter()
        .map(|(p, b)| Ok((p, p.write_batch(BytesMut::from(&b[..]))?)))
        .collect::<Result<Vec<_>, LogError>>()?;
    for (p, w) in pending {
        p.wait_durable(&w)?;
    }
    Ok(())
}

/// Why a handler call's effects could not be committed (its messages are
/// retried).
#[derive(Debug, thiserror::Error)]
pub enum CommitEffectsError {
    /// Writing the call's kv writes or delay ids to the metadata store.
    #[error(transparent)]
    Store(#[from] MetaError),
    #[error(transparent)]
    Schedule(#[from] ScheduleEffectsError),
    #[error(transparent)]
    Cancel(#[from] CancelEffectsError),
    #[error(transparent)]
    Output(#[from] OutputTargetError),
    #[error("emit: {0}")]
    Emit(#[source] LogError),
}

/// Commits a handler call's effects: scheduled messages, then kv writes
/// and delay-id mappings in one synced write, then cancellations, then
/// emitted messages appended durably. The caller settles the messages afterwards,
/// so a crash in between redelivers them (at least once).
pub fn commit(
    fs: &FunctionStore,
    scheduler: &Scheduler,
    name: &str,
    effects: &Effects,
    now_ms: i64,
    keyless: u32,
) -> Result<(), CommitEffectsError> {
    if effects.is_empty() {
        return Ok(());
    }
    let log = fs.store().log();
    let mut batch = Batch::default();
    fs.kv_write(&mut batch, name, &effects.kv_writes)?;
    schedule(fs, scheduler, name, &effects.scheduled, keyless, &mut batch)?;
    if !batch.is_empty() {
        // A call that only emits costs no metadata fsync.
        fs.commit(batch)?;
    }
    cancel(fs, scheduler, name, &effects.cancelled)?;
    if !effects.emitted.is_empty() {
        let mut out = OutputBatches::new(now_ms);
        for e in &effects.emitted {
            let p = output_partition(log, &e.topic, e.message.key.as_deref(), keyless)?;
            out.push(&p, &OutMessage::of(&e.message));
        }
        append_all(&out.finish().0).map_err(CommitEffectsError::Emit)?;
    }
    Ok(())
}

/// Why messages a function scheduled could not be handed to the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleEffectsError {
    #[error(transparent)]
    Output(#[from] OutputTargetError),
    #[error("schedule to {topic}: {source}")]
    Schedule {
        topic: String,
        #[source]
        source: SchedError,
    },
    /// Recording the guest's delay id.
    #[error(transparent)]
    Store(#[from] MetaError),
}

/// Hands scheduled messages to the scheduler (each write is synced there)
/// and adds the mapping of the guest's delay ids to `batch`.
pub fn schedule(
    fs: &FunctionStore,
    scheduler: &Scheduler,
    name: &str,
    scheduled: &[Scheduled],
    keyless: u32,
    batch: &mut Batch,
) -> Result<(), ScheduleEffectsError> {
    if scheduled.is_empty() {
        return Ok(());
    }
    let log = fs.store().log();
    let deliveries = scheduled
        .iter()
        .map(|s| {
            let p = output_partition(log, &s.topic, s.message.key.as_deref(), keyless)?;
            Ok(Delivery {
                topic: s.topic.clone(),
                partition: p.id(),
                due_at_ms: s.at_ms as i64,
                repeat: None,
                record: delayed_record(&s.message),
            })
        })
        .collect::<Result<Vec<_>, OutputTargetError>>()?;
    for (s, r) in scheduled.iter().zip(scheduler.schedule(deliveries)) {
        let done = r.map_err(|source| ScheduleEffectsError::Schedule {
            topic: s.topic.clone(),
            source,
        })?;
        fs.put_delay(batch, name, &s.id, done.delay_id)?;
    }
    Ok(())
}

/// A delay the guest cancelled that the scheduler could not cancel.
#[derive(Debug, thiserror::Error)]
#[error("cancel {id}: {source}")]
pub struct CancelEffectsError {
    /// The guest's delay id.
    id: String,
    #[source]
    source: SchedError,
}

/// Cancels delays the guest cancelled (by its delay ids).
pub fn cancel(
    fs: &FunctionStore,
    scheduler: &Scheduler,
    name: &str,
    cancelled: &[String],
) -> Result<(), CancelEffectsError> {
    for id in cancelled {
        if let Ok(Some(delay_id)) = fs.delay(name, id) {
            scheduler
                .cancel(delay_id)
                .map_err(|source| CancelEffectsError {
                    id: id.clone(),
                    source,
                })?;
            let _ = fs.forget_delay(name, id);
        }
    }
    Ok(())
}

fn delayed_record(m: &OutgoingMessage) -> DelayedRecord {
    DelayedRecord {
        key: m.key.clone().map(Bytes::from),
        value: Bytes::from(m.value.clone()),
        headers: m
            .headers
            .iter()
            .map(|h| (h.name.clone(), Bytes::from(h.value.clone())))
            .collect(),
        timestamp: -1,
    }
}
