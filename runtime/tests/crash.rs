//! Crash safety of the log under `sync` durability, with a real child process
//! killed by SIGKILL at random points.
//!
//! The child is this test binary re-executed with `SLUICE_CRASH_DIR` set: it
//! appends from several threads and prints `ACK <thread> <seq> <offset>` only
//! after `append` returned. The parent kills it after a random number of
//! acknowledgements, reopens the log and checks that every acknowledged
//! batch is there, byte-exact, that each thread's batches form a gap-free
//! prefix (nothing past a torn tail is served), and that offsets continue.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::BytesMut;
use rand::{Rng, SeedableRng};
use sluice_broker::clock::SystemClock;
use sluice_broker::log::{Durability, Log, LogOptions, TopicConfig};
use sluice_protocol::batch::{BatchBuilder, BatchIter};

const THREADS: u32 = 4;
const ITERATIONS: usize = 8;

fn config() -> TopicConfig {
    TopicConfig {
        durability: Durability::Sync,
        // Small segments and checkpoints so kills land during rolls and
        // between checkpoints too.
        segment_bytes: 48 << 10,
        index_interval_bytes: 512,
        retention_ms: None,
        ..TopicConfig::default()
    }
}

fn options() -> LogOptions {
    LogOptions {
        checkpoint_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(
        dir,
        [("t".to_string(), config())],
        options(),
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// The payload of batch `seq` of `thread`: recognisable and self-checking.
fn record_value(thread: u32, seq: u64, i: usize) -> Vec<u8> {
    let mut v = format!("{thread}:{seq}:{i}:").into_bytes();
    v.resize(64 + (seq as usize % 7) * 40, b'a' + (seq % 26) as u8);
    v
}

fn make_batch(thread: u32, seq: u64) -> BytesMut {
    let mut b = BatchBuilder::new(1_700_000_000_000 + seq as i64);
    let records = 1 + (seq % 5) as usize;
    for i in 0..records {
        b.push(
            1_700_000_000_000 + seq as i64,
            None,
            Some(&record_value(thread, seq, i)),
            &[],
        );
    }
    BytesMut::from(&b.finish()[..])
}

/// Runs only as the child process: appends until killed.
#[test]
fn crash_child_appender() {
    let Ok(dir) = std::env::var("SLUICE_CRASH_DIR") else {
        return;
    };
    let log = open(Path::new(&dir));
    let p = log.partition("t", 0).unwrap();
    // Each thread continues from the sequence numbers already stored.
    let start: HashMap<u32, u64> = stored_batches(&log)
        .into_iter()
        .map(|(t, seqs)| (t, seqs.len() as u64))
        .collect();
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            let stdout = stdout.clone();
            let first = start.get(&t).copied().unwrap_or(0);
            std::thread::spawn(move || {
                for seq in first.. {
                    let info = p.append(make_batch(t, seq)).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {t} {seq} {}", info.base_offset).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Per thread, the sequence numbers stored, in order, with their offsets.
/// Panics on anything that is not exactly a batch the child wrote.
fn stored_batches(log: &Log) -> HashMap<u32, Vec<(u64, u64)>> {
    let p = log.partition("t", 0).unwrap();
    let mut out: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    let mut next = p.log_start_offset();
    loop {
        let r = p.read(next, 256 << 10).unwrap();
        if r.is_empty() {
            assert_eq!(next, p.high_watermark());
            return out;
        }
        for chunk in &r.chunks {
            for batch in BatchIter::new(chunk) {
                let batch = batch.unwrap();
                batch.validate().unwrap();
                assert_eq!(batch.header().base_offset, next, "offsets are contiguous");
                let first = batch.records().next().unwrap().unwrap();
                let text = String::from_utf8_lossy(first.value.unwrap()).into_owned();
                let mut parts = text.split(':');
                let thread: u32 = parts.next().unwrap().parse().unwrap();
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let expected = make_batch(thread, seq);
                assert_eq!(
                    &batch.as_bytes()[12..],
                    &expected[12..],
                    "stored bytes equal what was appended (apart from the offset)"
                );
                out.entry(thread).or_default().push((seq, next));
                next = batch.header().next_offset();
            }
        }
    }
}

#[test]
fn sigkill_during_sync_appends_loses_no_acknowledged_batch() {
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash test seed {seed} (set SLUICE_CRASH_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u32, HashMap<u64, u64>> = HashMap::new();

    for iteration in 0..ITERATIONS {
        let kill_after: usize = rng.random_range(1..400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_appender",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("SLUICE_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else {
                panic!("child exited before it was killed (iteration {iteration})");
            };
            if record_ack(&line.unwrap(), &mut acked) {
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Acks printed before the kill are promises too.
        for line in lines {
            record_ack(&line.unwrap(), &mut acked);
        }
        child.wait().unwrap();

        let log = open(dir.path());
        let stored = stored_batches(&log);
        for (thread, seqs) in &stored {
            let in_order: Vec<u64> = seqs.iter().map(|(s, _)| *s).collect();
            assert_eq!(
                in_order,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "thread {thread}: stored batches form a gap-free prefix"
            );
        }
        for (thread, batches) in &acked {
            let got: HashMap<u64, u64> =
                stored.get(thread).into_iter().flatten().copied().collect();
            for (seq, offset) in batches {
                assert_eq!(
                    got.get(seq),
                    Some(offset),
                    "iteration {iteration}: acknowledged batch {thread}/{seq} at offset {offset} survives"
                );
            }
        }
        // The recovered log accepts appends right after what it kept.
        let p = log.partition("t", 0).unwrap();
        let end = p.high_watermark();
        assert_eq!(p.log_end_offset(), end);
        drop(log);
        eprintln!("iteration {iteration}: killed after {kill_after} acks, {end} records stored");
    }
    let total: usize = acked.values().map(HashMap::len).sum();
    assert!(total >= ITERATIONS, "the child acknowledged appends");
}

fn record_ack(line: &str, acked: &mut HashMap<u32, HashMap<u64, u64>>) -> bool {
    let Some(rest) = line.strip_prefix("ACK ") else {
        return false;
    };
    let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
    let (thread, seq, offset) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    acked.entry(thread as u32).or_default().insert(seq, offset);
    true
}
