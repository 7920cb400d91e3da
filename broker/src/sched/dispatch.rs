//! Moving due messages into their topics exactly once.
//!
//! A round drains the due keys from the wheel, reads their messages and
//! groups them into one record batch per partition. For each batch it
//! first records an [`Intent`] (synced), then appends the batch, then
//! deletes the messages and the intent in one synced `WriteBatch` — the one
//! that also re-inserts the next occurrence of loop messages and marks the
//! ids delivered.
//!
//! Every batch is stamped with the scheduler's idempotent-producer id and
//! the next sequence the partition expects from it, and the intent records
//! that stamp. A crash after the intent and before that last write leaves
//! the intent; resolving it ([`Scheduler::resolve_leftovers`]) rebuilds the
//! same batch and appends it through [`Partition::write_replayed`], the one
//! idempotent append the broker's writers share: the partition's producer
//! table, which survives restarts whole, says whether it is already written.
//! Intents left by an older broker carry no stamp and are resolved the old
//! way, by searching the log from the end the intent recorded for a batch
//! whose first record carries the intent's first (delay id, due time).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use sluice_meta::{Batch, WriteMode};
use sluice_protocol::batch::{BatchBuilder, BatchIter};

use super::keys::{DueKey, Entry, IdState, Intent, StateKey};
use super::{
    DELAY_ID_HEADER, DUE_AT_HEADER, LOOP_ITERATION_HEADER, SchedError, Scheduler, TickReport, loops,
};
use crate::log::{LogError, Partition};

/// Per-record bytes a batch adds beyond the record's own (varints, the
/// scheduler's headers), rounded up.
pub(super) const RECORD_OVERHEAD: usize = 160;
pub(super) const BATCH_OVERHEAD: usize = 61;

/// An intent with the messages it covers, in batch order.
struct Prepared {
    intent: Intent,
    entries: Vec<Entry>,
}

impl Scheduler {
    /// Resolves intents left by a crash or a failed append. On failure they
    /// stay for the next tick.
    pub(super) fn resolve_leftovers(
        &self,
        intents: &mut Vec<Intent>,
        report: &mut TickReport,
    ) -> Result<(), SchedError> {
        if intents.is_empty() {
            return Ok(());
        }
        let leftovers = std::mem::take(intents);
        let prepared = leftovers
            .iter()
            .map(|intent| {
                let entries = self.read_entries(&intent.keys)?;
                match entries.into_iter().collect::<Option<Vec<_>>>() {
                    Some(entries) => Ok(Prepared {
                        intent: intent.clone(),
                        entries,
                    }),
                    None => Err(SchedError::corrupt(format!(
                        "dispatch intent {} names a message that is not stored",
                        intent.id
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>();
        let result = prepared.and_then(|p| {
            report.intents_resolved += p.len() as u64;
            self.complete(p, Vec::new(), true, report)
        });
        if result.is_err() {
            *intents = leftovers;
        }
        result
    }

    /// Reads the stored messages at `keys` (`None` where there is none: it
    /// was cancelled after its key went into the wheel).
    fn read_entries(&self, keys: &[DueKey]) -> Result<Vec<Option<Entry>>, SchedError> {
        let encoded: Vec<[u8; 16]> = keys.iter().map(|k| k.encode()).collect();
        self.families()?
            .delays
            .multi_get(encoded.iter(), true)
            .into_iter()
            .map(|r| match r? {
                Some(v) => Entry::decode(&v).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// One dispatch round; returns how many keys it took from the wheel.
    pub(super) fn dispatch_round(
        &self,
        intents: &mut Vec<Intent>,
        report: &mut TickReport,
    ) -> Result<usize, SchedError> {
        let now = self.now_ms();
        let mut due = Vec::new();
        {
            let mut st = self.state.lock();
            st.wheel
                .drain_due(now.max(0) as u64, self.options.round_max_messages, &mut due);
            due.sort_unstable();
            due.dedup();
            due.retain(|k| !st.claimed.contains(k));
            st.claimed.extend(due.iter().copied());
        }
        let taken = due.len();
        if taken == 0 {
            return Ok(0);
        }
        // Until the intents are written nothing is durable: on any failure
        // the round's keys go back, untouched.
        let planned = self.plan(&due, now).and_then(|(prepared, dropped)| {
            self.record_intents(&prepared).map(|()| (prepared, dropped))
        });
        let (prepared, dropped) = match planned {
            Ok(p) => p,
            Err(e) => {
                // Back into the wheel (they were drained from it) for the
                // next try.
                self.release(&due, &due);
                return Err(e);
            }
        };
        crash_point("sched.after_intent");
        let recorded: Vec<Intent> = prepared.iter().map(|p| p.intent.clone()).collect();
        if let Err(e) = self.complete(prepared, dropped, false, report) {
            // Whatever was appended, the intents say how to finish.
            intents.extend(recorded);
            return Err(e);
        }
        Ok(taken)
    }

    /// Reads the messages at `due` and groups them into batches per
    /// partition (due order within each), plus the ones to drop because
    /// their partition is gone. Keys whose message was cancelled meanwhile
    /// are released here.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        due: &[DueKey],
        now: i64,
    ) -> Result<(Vec<Prepared>, Vec<(DueKey, Entry)>), SchedError> {
        let entries = self.read_entries(due)?;
        let mut groups: HashMap<(String, u32), Vec<(DueKey, Entry)>> = HashMap::new();
        let mut order = Vec::new();
        let mut cancelled = Vec::new();
        for (key, entry) in due.iter().copied().zip(entries) {
            let Some(entry) = entry else {
                cancelled.push(key);
                continue;
            };
            let target = (entry.topic.clone(), entry.partition);
            let group = groups.entry(target.clone()).or_default();
            if group.is_empty() {
                order.push(target);
            }
            group.push((key, entry));
        }
        self.release(&cancelled, &[]);

        let mut prepared = Vec::new();
        let mut dropped = Vec::new();
        // Sequences handed to this round's batches, per partition: a
        // partition's producer table only learns of a batch once it is
        // appended, and one round may send it several.
        let mut next_sequence: HashMap<(String, u32), i32> = HashMap::new();
        for target in order {
            let group = groups.remove(&target).unwrap_or_default();
            let partition = match self.store.log().partition(&target.0, target.1) {
                Ok(p) => p,
                Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {
                    dropped.extend(group);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let limit = self
                .options
                .max_batch_bytes
                .min(partition.config().max_batch_bytes as usize);
            let mut chunk: Vec<(DueKey, Entry)> = Vec::new();
            let mut bytes = BATCH_OVERHEAD;
            for (key, entry) in group {
                let size = entry.record.approx_size() + RECORD_OVERHEAD;
                if !chunk.is_empty() && bytes + size > limit {
                    let chunk = std::mem::take(&mut chunk);
                    prepared.push(self.prepare(&partition, chunk, now, &mut next_sequence)?);
                    bytes = BATCH_OVERHEAD;
                }
                bytes += size;
                chunk.push((key, entry));
            }
            if !chunk.is_empty() {
                prepared.push(self.prepare(&partition, chunk, now, &mut next_sequence)?);
            }
        }
        Ok((prepared, dropped))
    }

    /// Records the intents, synced, before any append.
    fn record_intents(&self, prepared: &[Prepared]) -> Result<(), SchedError> {
        if prepared.is_empty() {
            return Ok(());
        }
        let state_cf = self.families()?.state;
        let mut batch = Batch::default();
        for p in prepared {
            batch.put(&state_cf, StateKey::intent(p.intent.id), p.intent.encode());
        }
        let meta = self.store.meta();
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }

    fn prepare(
        &self,
        partition: &Partition,
        chunk: Vec<(DueKey, Entry)>,
        now: i64,
        next_sequence: &mut HashMap<(String, u32), i32>,
    ) -> Result<Prepared, SchedError> {
        let id = {
            let mut st = self.state.lock();
            self.next_seq(&mut st)?
        };
        let (keys, entries): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
        let next = next_sequence
            .entry((partition.topic().to_owned(), partition.id()))
            .or_insert_with(|| partition.next_sequence(self.producer_id));
        let base_sequence = *next;
        // Sequences wrap at i32::MAX like every producer's.
        *next = ((i64::from(base_sequence) + keys.len() as i64) % (i64::from(i32::MAX) + 1)) as i32;
        Ok(Prepared {
            intent: Intent {
                id,
                topic: partition.topic().to_owned(),
                partition: partition.id(),
                log_end_before: partition.log_end_offset(),
                dispatch_ms: now,
                keys,
                stamp: Some((self.producer_id, base_sequence)),
            },
            entries,
        })
    }

    /// Appends the prepared batches (unless `check_log` finds them already
    /// in the log), then finishes their messages and the dropped ones in
    /// one synced write, and releases their keys.
    fn complete(
        &self,
        prepared: Vec<Prepared>,
        mut dropped: Vec<(DueKey, Entry)>,
        check_log: bool,
        report: &mut TickReport,
    ) -> Result<(), SchedError> {
        let mut appended: Vec<Prepared> = Vec::with_capacity(prepared.len());
        // Intents whose messages were dropped instead of appended.
        let mut finished_intents = Vec::new();
        let mut waits = Vec::new();
        for p in prepared {
            let partition = match self
                .store
                .log()
                .partition(&p.intent.topic, p.intent.partition)
            {
                Ok(part) => part,
                Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {
                    finished_intents.push(p.intent.id);
                    dropped.extend(p.intent.keys.iter().copied().zip(p.entries));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let legacy_in_log =
                p.intent.stamp.is_none() && check_log && batch_in_log(&partition, &p)?;
            let batch = build_batch(&p);
            let written = match p.intent.stamp {
                _ if legacy_in_log => Ok(None),
                Some(_) => partition.write_replayed(batch),
                None => partition.write_batch(batch).map(Some),
            };
            match written {
                Ok(Some(pending)) => waits.push((partition.clone(), pending)),
                Ok(None) => {
                    report.already_in_log += 1;
                    tracing::info!(
                        topic = %p.intent.topic,
                        partition = p.intent.partition,
                        messages = p.entries.len(),
                        "dispatch found already in the log; not appending again"
                    );
                }
                // Checked at schedule time, so only a topic whose limit
                // shrank since gets here: a message that can never be
                // appended must not stop every other delivery.
                Err(e @ (LogError::BatchTooLarge { .. } | LogError::InvalidBatch(_)))
                    if p.entries.len() == 1 =>
                {
                    tracing::error!(
                        topic = %p.intent.topic,
                        delay_id = p.entries[0].delay_id,
                        error = %e,
                        "dropping a delayed message its topic refuses"
                    );
                    finished_intents.push(p.intent.id);
                    dropped.extend(p.intent.keys.iter().copied().zip(p.entries));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            appended.push(p);
        }
        for (partition, pending) in &waits {
            partition.wait_durable(pending)?;
        }
        crash_point("sched.after_append");
        self.finish(appended, dropped, &finished_intents, report)
    }

    /// The write that records the dispatch: deletes the delivered and
    /// dropped messages and their intents, re-inserts loop messages.
    fn finish(
        &self,
        appended: Vec<Prepared>,
        dropped: Vec<(DueKey, Entry)>,
        finished_intents: &[u64],
        report: &mut TickReport,
    ) -> Result<(), SchedError> {
        let cfs = self.families()?;
        let now = self.now_ms();
        let mut batch = Batch::default();
        let mut released = Vec::new();
        let mut reinserted = Vec::new();
        let mut delivered = 0u64;
        let mut lateness = Vec::new();
        for id in finished_intents {
            batch.delete(&cfs.state, StateKey::intent(*id));
        }
        for p in &appended {
            batch.delete(&cfs.state, StateKey::intent(p.intent.id));
            for (key, entry) in p.intent.keys.iter().zip(&p.entries) {
                cfs.remove_pending(&mut batch, *key, &entry.topic);
                released.push(*key);
                delivered += 1;
                lateness.push((p.intent.dispatch_ms - key.due_ms as i64).max(0) as u64);
                let next = entry
                    .repeat
                    .as_ref()
                    .and_then(|spec| loops::next(spec, key.due_ms, entry.iteration));
                match next {
                    Some((due_ms, spec)) => {
                        let seq = {
                            let mut st = self.state.lock();
                            self.next_seq(&mut st)?
                        };
                        let next_key = DueKey::new(due_ms, seq);
                        let next_entry = Entry {
                            iteration: entry.iteration + 1,
                            repeat: Some(spec),
                            ..entry.clone()
                        };
                        cfs.put_pending(&mut batch, next_key, &next_entry);
                        reinserted.push(next_key);
                    }
                    None => cfs.set_id(
                        &mut batch,
                        entry.delay_id,
                        IdState::Delivered { at_ms: now },
                    ),
                }
            }
        }
        for (key, entry) in &dropped {
            tracing::warn!(
                topic = %entry.topic,
                partition = entry.partition,
                delay_id = entry.delay_id,
                "dropping a delayed message that cannot be delivered"
            );
            cfs.remove_pending(&mut batch, *key, &entry.topic);
            cfs.set_id(&mut batch, entry.delay_id, IdState::Dropped { at_ms: now });
            released.push(*key);
        }
        let meta = self.store.meta();
        if let Err(e) = meta.write(batch, WriteMode::Synced) {
            // The intents stay on disk and in the caller's list: the next
            // tick retries, checking the log first.
            return Err(e.into());
        }
        report.dispatched += delivered;
        report.dropped += dropped.len() as u64;
        self.stats
            .dispatched
            .fetch_add(delivered, Ordering::Relaxed);
        self.stats
            .dropped
            .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        {
            let mut h = self.stats.lateness_ms.lock();
            let h = h.get_or_insert_with(|| {
                hdrhistogram::Histogram::new(3).expect("3 significant figures is valid")
            });
            for l in lateness {
                h.saturating_record(l);
            }
        }
        self.release(&released, &reinserted);
        Ok(())
    }

    /// Un-claims `keys` and admits `reinserted` keys (loop occurrences, or a
    /// failed round's keys) to the wheel, then wakes cancels waiting on any
    /// of them.
    fn release(&self, keys: &[DueKey], reinserted: &[DueKey]) {
        {
            let mut st = self.state.lock();
            for k in keys {
                st.claimed.remove(k);
            }
        }
        if !reinserted.is_empty() {
            self.admit(reinserted.iter().copied());
        }
        self.released.notify_all();
    }
}

/// The record batch for a prepared dispatch, stamped with the intent's
/// (producer id, base sequence). Built the same from the same intent, so a
/// replay after a crash is byte for byte the batch that may be in the log.
fn build_batch(p: &Prepared) -> BytesMut {
    let mut b = BatchBuilder::new(p.intent.dispatch_ms);
    if let Some((producer_id, base_sequence)) = p.intent.stamp {
        b = b.producer(producer_id, 0, base_sequence);
    }
    for (key, entry) in p.intent.keys.iter().zip(&p.entries) {
        let r = &entry.record;
        let delay_id = entry.delay_id.to_be_bytes();
        let due_at = (key.due_ms as i64).to_be_bytes();
        let iteration = entry.iteration.to_be_bytes();
        let mut headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(&v[..])))
            .collect();
        headers.push((DELAY_ID_HEADER, Some(&delay_id)));
        headers.push((DUE_AT_HEADER, Some(&due_at)));
        if entry.repeat.is_some() {
            headers.push((LOOP_ITERATION_HEADER, Some(&iteration)));
        }
        let timestamp = if r.timestamp >= 0 {
            r.timestamp
        } else {
            p.intent.dispatch_ms
        };
        b.push(timestamp, r.key.as_deref(), Some(&r.value), &headers);
    }
    BytesMut::from(&b.finish()[..])
}

/// Whether the batch of an unstamped (older broker's) intent is in the
/// partition at or after the log end the intent recorded.
fn batch_in_log(partition: &Arc<Partition>, p: &Prepared) -> Result<bool, SchedError> {
    let (Some(first_key), Some(first)) = (p.intent.keys.first(), p.entries.first()) else {
        return Ok(false);
    };
    let want_id = first.delay_id.to_be_bytes();
    let want_due = (first_key.due_ms as i64).to_be_bytes();
    let mut offset = p.intent.log_end_before.max(partition.log_start_offset());
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20)?;
        let before = offset;
        for chunk in &read.chunks {
            for view in BatchIter::new(chunk) {
                let view = view.map_err(|e| SchedError::corrupt(format!("log batch: {e}")))?;
                if let Some(Ok(rec)) = view.records().next()
                    && rec.header(DELAY_ID_HEADER) == Some(&want_id[..])
                    && rec.header(DUE_AT_HEADER) == Some(&want_due[..])
                {
                    return Ok(true);
                }
                offset = view.header().next_offset();
            }
        }
        if offset == before {
            break;
        }
    }
    Ok(false)
}

/// Test hook for the crash tests: with `SLUICE_CRASH_POINT` set to `name`,
/// the process announces it on stdout and stops there, waiting for the test
/// to SIGKILL it.
fn crash_point(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("SLUICE_CRASH_POINT").ok());
    if point.as_deref() == Some(name) {
        println!("CRASH POINT {name}");
        loop {
            std::thread::park();
        }
    }
}
