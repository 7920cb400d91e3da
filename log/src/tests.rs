//! Behaviour of the log as a whole, with a clock the tests move.

use std::fs;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_protocol::batch::{BatchBuilder, BatchError, BatchIter, BatchView};

use super::*;
use crate::clock::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn batch(records: usize, value_len: usize, ts: i64, tag: u8) -> BytesMut {
    let mut b = BatchBuilder::new(ts);
    for i in 0..records {
        let value = vec![tag.wrapping_add(i as u8); value_len];
        b.push(
            ts,
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[("n", Some(&[i as u8]))],
        );
    }
    BytesMut::from(&b.finish()[..])
}

fn config() -> TopicConfig {
    TopicConfig {
        durability: Durability::None,
        segment_bytes: 4096,
        max_batch_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        ..TopicConfig::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(T0),
        }
    }

    fn open(&self, topics: &[(&str, TopicConfig)]) -> Log {
        self.open_with(topics, LogOptions::default())
    }

    fn open_with(&self, topics: &[(&str, TopicConfig)], options: LogOptions) -> Log {
        let topics = topics.iter().map(|(n, c)| (n.to_string(), c.clone()));
        Log::open(
            self.dir.path(),
            topics,
            options,
            Arc::new(self.clock.clone()),
        )
        .unwrap()
    }

    fn partition_dir(&self, topic: &str) -> std::path::PathBuf {
        self.dir.path().join(topic).join("0")
    }
}

/// Every record offset and value readable from `from`, following reads.
fn read_all(p: &Partition, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = p.read(next, 1000).unwrap();
        if r.is_empty() {
            return out;
        }
        for chunk in &r.chunks {
            for b in BatchIter::new(chunk) {
                let b = b.unwrap();
                b.validate().unwrap();
                for rec in b.records() {
                    let rec = rec.unwrap();
                    if rec.offset >= next {
                        out.push((rec.offset, rec.value.unwrap().to_vec()));
                    }
                }
                next = b.header().next_offset();
            }
        }
    }
}

#[test]
fn appends_assign_offsets_and_reads_return_whole_batches() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    let a = p.append(batch(3, 10, T0, 1)).unwrap();
    let b = p.append(batch(2, 10, T0, 2)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!(p.high_watermark(), 5);

    // An offset in the middle of a batch returns that whole batch.
    let r = p.read(1, 1 << 20).unwrap();
    let first = BatchView::parse(&r.chunks[0]).unwrap();
    assert_eq!(first.header().base_offset, 0);
    assert_eq!(
        read_all(&p, 1).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );

    // A byte budget smaller than one batch still returns one whole batch.
    let r = p.read(0, 1).unwrap();
    assert_eq!(BatchIter::new(&r.chunks[0]).count(), 1);

    // Reading at the end is empty; beyond it is an error.
    assert!(p.read(5, 100).unwrap().is_empty());
    assert!(matches!(
        p.read(6, 100),
        Err(LogError::OffsetOutOfRange {
            offset: 6,
            start: 0,
            end: 5
        })
    ));
}

#[test]
fn reads_from_disk_match_reads_from_the_tail_cache() {
    let f = Fixture::new();
    let no_cache = LogOptions {
        tail_cache_bytes: 0,
        ..LogOptions::default()
    };
    let cached = f.open(&[("t", config())]);
    for i in 0..40 {
        cached
            .partition("t", 0)
            .unwrap()
            .append(batch(3, 50, T0 + i, i as u8))
            .unwrap();
    }
    let from_cache = read_all(&cached.partition("t", 0).unwrap(), 0);
    drop(cached);
    let uncached = f.open_with(&[("t", config())], no_cache);
    let p = uncached.partition("t", 0).unwrap();
    assert!(p.segment_count() > 1, "test needs several segments");
    assert_eq!(read_all(&p, 0), from_cache);
    for probe in [0u64, 7, 50, 119] {
        assert_eq!(read_all(&p, probe).first().map(|r| r.0), Some(probe));
    }
}

#[test]
fn lookup_by_timestamp_finds_the_first_record_at_or_after() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    for i in 0..100 {
        p.append(batch(2, 40, T0 + i * 10, 0)).unwrap();
    }
    assert!(p.segment_count() > 2);
    assert_eq!(p.offset_for_timestamp(T0 - 5).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(T0).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(T0 + 1).unwrap(), Some(2));
    assert_eq!(p.offset_for_timestamp(T0 + 500).unwrap(), Some(100));
    assert_eq!(p.offset_for_timestamp(T0 + 990).unwrap(), Some(198));
    assert_eq!(p.offset_for_timestamp(T0 + 991).unwrap(), None);
    drop(log);
    // The same answers come from indexes loaded from disk.
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(p.offset_for_timestamp(T0 + 501).unwrap(), Some(102));
}

#[test]
fn log_append_time_is_stamped_by_the_broker_clock() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        timestamp: TimestampPolicy::LogAppendTime,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    f.clock.set(T0 + 12345);
    let info = p.append(batch(2, 10, 42, 0)).unwrap();
    assert_eq!(info.log_append_time, Some(T0 + 12345));
    let r = p.read(0, 1 << 20).unwrap();
    let view = BatchView::parse(&r.chunks[0]).unwrap();
    view.validate().unwrap();
    assert!(view.records().all(|r| r.unwrap().timestamp == T0 + 12345));
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        segment_bytes: 2000,
        segment_ms: 60_000,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    p.append(batch(1, 900, T0, 0)).unwrap();
    p.append(batch(1, 900, T0, 0)).unwrap();
    assert_eq!(p.segment_count(), 1);
    p.append(batch(1, 900, T0, 0)).unwrap();
    assert_eq!(
        p.segment_count(),
        2,
        "third batch would exceed segment_bytes"
    );

    f.clock.advance(59_999);
    p.append(batch(1, 10, T0, 0)).unwrap();
    assert_eq!(p.segment_count(), 2);
    f.clock.advance(60_000);
    p.append(batch(1, 10, T0, 0)).unwrap();
    assert_eq!(p.segment_count(), 3, "segment older than segment_ms rolls");
    let names: Vec<String> = fs::read_dir(f.partition_dir("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(
        names.contains(&"00000000000000000002.log".to_string()),
        "{names:?}"
    );
}

#[test]
fn retention_by_age_deletes_whole_expired_segments() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        retention_ms: Some(3_600_000),
        segment_ms: 600_000,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    // Three segments, ten minutes apart, records timestamped with the clock.
    for _ in 0..3 {
        p.append(batch(5, 10, f.clock.now_ms(), 0)).unwrap();
        f.clock.advance(600_000);
    }
    assert_eq!(p.segment_count(), 3);
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);

    // 60 min after the first batch: it has just reached retention (not past).
    f.clock.set(T0 + 3_600_000);
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    f.clock.set(T0 + 3_600_001);
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 1);
    assert_eq!(p.log_start_offset(), 5);
    assert!(matches!(
        p.read(0, 100),
        Err(LogError::OffsetOutOfRange { start: 5, .. })
    ));
    assert_eq!(read_all(&p, 5).len(), 10);

    // Much later an idle topic expires completely: the active segment is
    // rolled so it can go, and the partition keeps its offsets.
    f.clock.advance(100 * 3_600_000);
    log.enforce_retention().unwrap();
    assert_eq!(p.log_start_offset(), 15);
    assert_eq!(p.high_watermark(), 15);
    assert!(p.read(15, 100).unwrap().is_empty());
    assert_eq!(p.append(batch(1, 10, T0, 0)).unwrap().base_offset, 15);
}

#[test]
fn retention_by_size_keeps_at_least_the_limit() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        retention_bytes: Some(5000),
        segment_bytes: 2000,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    for _ in 0..20 {
        p.append(batch(1, 900, T0, 0)).unwrap();
    }
    let before = p.size_bytes();
    let outcome = log.enforce_retention().unwrap();
    assert!(outcome.segments_deleted > 0);
    assert_eq!(p.size_bytes(), before - outcome.bytes_deleted);
    assert!(
        p.size_bytes() >= 5000,
        "whole segments only, never below the limit"
    );
    assert!(
        p.size_bytes() < 5000 + 2000,
        "at most one segment over the limit"
    );
    // Everything from the new start is readable.
    let start = p.log_start_offset();
    assert_eq!(read_all(&p, start).len() as u64, p.high_watermark() - start);
}

#[test]
fn reopen_after_close_keeps_everything_and_continues_offsets() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    for i in 0..50 {
        log.partition("t", 0)
            .unwrap()
            .append(batch(2, 30, T0, i))
            .unwrap();
    }
    let before = read_all(&log.partition("t", 0).unwrap(), 0);
    drop(log);
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(read_all(&p, 0), before);
    assert_eq!(p.append(batch(1, 1, T0, 0)).unwrap().base_offset, 100);
}

#[test]
fn recovery_truncates_a_torn_tail_and_keeps_what_came_before() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let log = f.open(&[("t", cfg.clone())]);
    let p = log.partition("t", 0).unwrap();
    for i in 0..10 {
        p.append(batch(1, 100, T0, i)).unwrap();
    }
    let good = read_all(&p, 0);
    drop(log);

    // Simulate a crash mid-write: half a batch at the end of the active
    // segment, after the checkpoint written on close.
    let seg = f.partition_dir("t").join("00000000000000000000.log");
    let len = fs::metadata(&seg).unwrap().len();
    let torn = batch(1, 100, T0, 99);
    let mut torn = torn.to_vec();
    torn[..8].copy_from_slice(&10u64.to_be_bytes());
    let mut file = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).unwrap();
    drop(file);

    let log = f.open(&[("t", cfg.clone())]);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "torn tail cut off");
    assert_eq!(read_all(&p, 0), good);
    assert_eq!(p.append(batch(1, 1, T0, 0)).unwrap().base_offset, 10);
    drop(log);

    // Without any checkpoint the whole active segment is scanned, and a
    // batch with a bad CRC in the tail is cut too.
    fs::remove_file(f.partition_dir("t").join("recovery-point")).unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(p.high_watermark(), 10);
    assert_eq!(read_all(&p, 0), good);
}

#[test]
fn flipped_bytes_in_a_closed_segment_are_reported_not_served() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    for i in 0..30 {
        p.append(batch(1, 200, T0, i)).unwrap();
    }
    assert!(p.segment_count() > 1);
    drop(log);
    let seg = f.partition_dir("t").join("00000000000000000000.log");
    let mut bytes = fs::read(&seg).unwrap();
    bytes[300] ^= 0x01; // inside the second batch's records
    fs::write(&seg, &bytes).unwrap();

    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    assert!(p.read(0, 100).is_ok(), "the first batch is intact");
    match p.read(1, 100) {
        Err(LogError::Corrupt {
            path,
            position,
            reason,
        }) => {
            assert_eq!(path, seg);
            assert!(position > 0);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Later segments are still served.
    let later = p.high_watermark() - 1;
    assert!(!p.read(later, 100).unwrap().is_empty());
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    for i in 0..60 {
        p.append(batch(2, 100, T0 + i, i as u8)).unwrap();
    }
    let good = read_all(&p, 0);
    assert!(
        p.segment_count() >= 3,
        "{} segment(s), {} bytes",
        p.segment_count(),
        p.size_bytes()
    );
    drop(log);
    let dir = f.partition_dir("t");
    let mut logs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    fs::remove_file(logs[0].with_extension("index")).unwrap();
    fs::write(logs[1].with_extension("index"), b"garbage").unwrap();
    fs::write(logs[2].with_extension("timeindex"), [0xffu8; 24]).unwrap();
    fs::write(logs.last().unwrap().with_extension("index"), [0u8; 5]).unwrap();

    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(read_all(&p, 0), good);
    for probe in (0..120).step_by(7) {
        assert_eq!(read_all(&p, probe).first().map(|r| r.0), Some(probe));
    }
    assert_eq!(p.offset_for_timestamp(T0 + 30).unwrap(), Some(60));
}

#[test]
fn bad_input_gets_a_typed_error_and_loses_nothing() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        max_batch_bytes: 2048,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    p.append(batch(1, 10, T0, 0)).unwrap();

    let mut bad_crc = batch(1, 10, T0, 0);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    assert!(matches!(
        p.append(bad_crc),
        Err(LogError::InvalidBatch(BatchError::CrcMismatch { .. }))
    ));

    let good = batch(1, 10, T0, 0);
    let truncated = BytesMut::from(&good[..good.len() - 4]);
    assert!(matches!(
        p.append(truncated),
        Err(LogError::InvalidBatch(BatchError::Truncated { .. }))
    ));

    let mut magic = batch(1, 10, T0, 0);
    magic[16] = 1;
    assert!(matches!(
        p.append(magic),
        Err(LogError::InvalidBatch(BatchError::UnknownMagic(1)))
    ));

    let mut trailing = batch(1, 10, T0, 0);
    trailing.extend_from_slice(b"xx");
    assert!(matches!(
        p.append(trailing),
        Err(LogError::InvalidBatch(BatchError::Malformed(_)))
    ));

    assert!(matches!(
        p.append(batch(1, 4000, T0, 0)),
        Err(LogError::BatchTooLarge { max: 2048, .. })
    ));
    assert!(matches!(
        log.partition("nope", 0),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.partition("t", 1),
        Err(LogError::UnknownPartition { partition: 1, .. })
    ));
    assert!(matches!(
        log.create_topic("a/b", config()),
        Err(LogError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        log.create_topic("..", config()),
        Err(LogError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        log.create_topic("t", config()),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.create_topic(
            "z",
            TopicConfig {
                partitions: 0,
                ..config()
            }
        ),
        Err(LogError::InvalidConfig(_))
    ));

    // Nothing was lost and offsets did not move.
    assert_eq!(p.high_watermark(), 1);
    assert_eq!(p.append(batch(1, 10, T0, 0)).unwrap().base_offset, 1);
    assert_eq!(read_all(&p, 0).len(), 2);
}

#[test]
fn sync_appenders_share_fsyncs_and_all_are_acknowledged() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        durability: Durability::Sync,
        segment_bytes: 64 << 10,
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| (p.append(batch(2, 64, T0, t)).unwrap().base_offset, t, i))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|(o, _, _)| o)
        .collect();
    acked.sort();
    assert_eq!(acked, (0..400).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(p.high_watermark(), 800);
    assert_eq!(read_all(&p, 0).len(), 800);
}

#[test]
fn interval_durability_is_flushed_in_the_background() {
    let f = Fixture::new();
    let cfg = TopicConfig {
        durability: Durability::Interval(5),
        ..config()
    };
    let log = f.open(&[("t", cfg)]);
    let p = log.partition("t", 0).unwrap();
    p.append(batch(1, 10, T0, 0)).unwrap();
    assert_eq!(p.high_watermark(), 1, "interval acks on write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while p.durable_offset() < 1 {
        assert!(std::time::Instant::now() < deadline, "flusher never synced");
        std::thread::yield_now();
    }
}

#[test]
fn delete_topic_removes_its_files() {
    let f = Fixture::new();
    let log = f.open(&[("t", config()), ("u", config())]);
    log.partition("t", 0)
        .unwrap()
        .append(batch(1, 10, T0, 0))
        .unwrap();
    log.delete_topic("t").unwrap();
    assert!(!f.dir.path().join("t").exists());
    assert!(matches!(log.topic("t"), Err(LogError::UnknownTopic(_))));
    assert!(matches!(
        log.delete_topic("t"),
        Err(LogError::UnknownTopic(_))
    ));
    let t = log.create_topic("t", config()).unwrap();
    assert_eq!(t.partition(0).unwrap().high_watermark(), 0);
    assert_eq!(log.topics().len(), 2);
}

mod model {
    //! The log against a plain vector of records, over random operations.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append { records: usize, value_len: usize },
        Read { at: u16, max_bytes: usize },
        LookupTime { at: u16 },
        Reopen,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..6, 0usize..300).prop_map(|(records, value_len)| Op::Append { records, value_len }),
            3 => (any::<u16>(), 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
            1 => any::<u16>().prop_map(|at| Op::LookupTime { at }),
            1 => Just(Op::Reopen),
            1 => Just(Op::Crash),
        ]
    }

    fn small_segments() -> TopicConfig {
        TopicConfig {
            segment_bytes: 2048,
            max_batch_bytes: 2048,
            index_interval_bytes: 128,
            ..config()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn log_behaves_like_a_vector_of_records(ops in proptest::collection::vec(op(), 1..50)) {
            let f = Fixture::new();
            let topics = [("t", small_segments())];
            let mut log = Some(f.open(&topics));
            // (offset, timestamp, value) of every record, in order.
            let mut model: Vec<(u64, i64, Vec<u8>)> = Vec::new();
            for op in ops {
                let p = log.as_ref().unwrap().partition("t", 0).unwrap();
                match op {
                    Op::Append { records, value_len } => {
                        let ts = T0 + model.len() as i64;
                        let info = p.append(batch(records, value_len, ts, model.len() as u8)).unwrap();
                        prop_assert_eq!(info.base_offset, model.len() as u64);
                        for i in 0..records {
                            let value = vec![(info.base_offset as u8).wrapping_add(i as u8); value_len];
                            model.push((model.len() as u64, ts, value));
                        }
                    }
                    Op::Read { at, max_bytes } => {
                        if model.is_empty() {
                            prop_assert!(p.read(0, max_bytes).unwrap().is_empty());
                            continue;
                        }
                        let offset = at as u64 % model.len() as u64;
                        let r = p.read(offset, max_bytes).unwrap();
                        prop_assert!(!r.is_empty());
                        let mut got = Vec::new();
                        let mut first_batch = None;
                        for chunk in &r.chunks {
                            for b in BatchIter::new(chunk) {
                                let b = b.unwrap();
                                b.validate().unwrap();
                                first_batch.get_or_insert((b.header().base_offset, b.header().last_offset()));
                                for rec in b.records() {
                                    let rec = rec.unwrap();
                                    got.push((rec.offset, rec.timestamp, rec.value.unwrap().to_vec()));
                                }
                            }
                        }
                        // Whole batches from the one holding `offset`, in order.
                        let (base, last) = first_batch.unwrap();
                        prop_assert!(base <= offset && offset <= last, "first batch {}..={} holds {}", base, last, offset);
                        let first = got[0].0 as usize;
                        prop_assert_eq!(&got[..], &model[first..first + got.len()]);
                        prop_assert!(got.last().unwrap().0 >= offset);
                    }
                    Op::LookupTime { at } => {
                        let ts = T0 + (at as i64 % (model.len() as i64 + 2)) - 1;
                        let want = model.iter().find(|r| r.1 >= ts).map(|r| r.0);
                        prop_assert_eq!(p.offset_for_timestamp(ts).unwrap(), want);
                    }
                    Op::Reopen => {
                        drop(p);
                        drop(log.take());
                        log = Some(f.open(&topics));
                    }
                    Op::Crash => {
                        drop(p);
                        log.take().unwrap().simulate_crash();
                        log = Some(f.open(&topics));
                    }
                }
                let p = log.as_ref().unwrap().partition("t", 0).unwrap();
                prop_assert_eq!(p.high_watermark(), model.len() as u64);
            }
        }
    }
}

fn producer_batch(pid: i64, seq: i32, records: usize) -> BytesMut {
    let mut b = BatchBuilder::new(T0).producer(pid, 0, seq);
    for i in 0..records {
        b.push(
            T0,
            None,
            Some(format!("p{pid}-{}", seq as usize + i).as_bytes()),
            &[],
        );
    }
    BytesMut::from(&b.finish()[..])
}

#[test]
fn idempotent_retries_are_not_written_twice_even_after_a_crash() {
    let f = Fixture::new();
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    let first = p.append(producer_batch(9, 0, 3)).unwrap();
    assert!(!first.duplicate);
    // A retry of the same batch answers with the original offsets.
    let retry = p.append(producer_batch(9, 0, 3)).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
    // A gap is refused and writes nothing.
    assert!(matches!(
        p.append(producer_batch(9, 7, 1)),
        Err(LogError::OutOfOrderSequence {
            expected: 3,
            got: 7,
            ..
        })
    ));
    p.append(producer_batch(9, 3, 1)).unwrap();
    assert_eq!(p.high_watermark(), 4);
    drop(p);
    log.simulate_crash();

    // After a crash the table is rebuilt from the log: the retry is still seen.
    let log = f.open(&[("t", config())]);
    let p = log.partition("t", 0).unwrap();
    let retry = p.append(producer_batch(9, 3, 1)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 3);
    assert!(p.append(producer_batch(9, 5, 1)).is_err());
    assert_eq!(p.append(producer_batch(9, 4, 1)).unwrap().base_offset, 4);
    assert_eq!(read_all(&p, 0).len(), 5);
}

#[test]
fn producer_state_survives_restarts_whole_across_rolls_and_checkpoints() {
    // Tiny segments: producer 1 writes once, then many other batches roll
    // the log past it several times (and a checkpoint comes in between),
    // so its batch is neither in the active segment nor near the end.
    const OTHER: i32 = 150;
    let f = Fixture::new();
    let topics = [("t", config())];
    let log = f.open(&topics);
    let p = log.partition("t", 0).unwrap();
    p.append(producer_batch(1, 0, 2)).unwrap();
    for seq in 0..OTHER {
        p.append(producer_batch(2, seq * 4, 4)).unwrap();
        if seq == 5 {
            p.checkpoint().unwrap();
        }
    }
    assert!(
        p.segment_count() >= 3,
        "{} segment(s), {} bytes",
        p.segment_count(),
        p.size_bytes()
    );
    drop(p);
    log.simulate_crash();

    let log = f.open(&topics);
    let p = log.partition("t", 0).unwrap();
    let retry = p.append(producer_batch(1, 0, 2)).unwrap();
    assert!(
        retry.duplicate,
        "a retry of the old producer's batch was written again"
    );
    assert_eq!((retry.base_offset, retry.last_offset), (0, 1));
    let retry = p.append(producer_batch(2, (OTHER - 1) * 4, 4)).unwrap();
    assert!(retry.duplicate);
    // Clean close and reopen: the snapshot alone answers.
    p.append(producer_batch(1, 2, 1)).unwrap();
    drop(p);
    log.close().unwrap();
    let log = f.open(&topics);
    let p = log.partition("t", 0).unwrap();
    assert!(p.append(producer_batch(1, 2, 1)).unwrap().duplicate);
    assert!(p.append(producer_batch(1, 0, 2)).unwrap().duplicate);
    assert!(
        p.append(producer_batch(1, 9, 1)).is_err(),
        "a gap is still refused"
    );

    // A damaged snapshot: the whole log is replayed, nothing is forgotten.
    drop(p);
    log.simulate_crash();
    std::fs::write(f.partition_dir("t").join("producer-state"), b"garbage").unwrap();
    let log = f.open(&topics);
    let p = log.partition("t", 0).unwrap();
    assert!(p.append(producer_batch(1, 2, 1)).unwrap().duplicate);
    assert!(
        p.append(producer_batch(2, (OTHER - 1) * 4, 4))
            .unwrap()
            .duplicate
    );
    assert_eq!(read_all(&p, 0).len(), 2 + OTHER as usize * 4 + 1);
}
