//! The wire bytes of every payload, pinned: a client in another language was
//! written from docs/protocol.md, so a refactoring of the codecs must not
//! move a single byte. `fixtures/payloads.txt` was captured from the
//! hand-written codecs before they were replaced by derived ones; this test
//! proves the current code writes exactly those bytes, reads them back to
//! the same value, and refuses every strict prefix.
//!
//! `SLUICE_BLESS_FIXTURES=1 cargo test -p sluice-protocol --test wire_fixtures`
//! rewrites the file; only do that for a deliberate, documented wire change.

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::Bytes;
use sluice_protocol::codec::{Reader, Writer};
use sluice_protocol::ops::delay::{read_loop, write_loop};
use sluice_protocol::ops::*;
use sluice_protocol::{ErrorCode, WireError};

mod groups_and_functions;

use groups_and_functions::{functions, groups};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/payloads.txt");

pub(crate) struct Fixtures {
    bless: bool,
    stored: BTreeMap<String, String>,
    seen: BTreeMap<String, String>,
}

impl Fixtures {
    fn load() -> Fixtures {
        let bless = std::env::var_os("SLUICE_BLESS_FIXTURES").is_some();
        let text = std::fs::read_to_string(PATH).unwrap_or_default();
        let stored = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (name, hex) = l.split_once(' ').unwrap_or((l, ""));
                (name.to_owned(), hex.to_owned())
            })
            .collect();
        Fixtures {
            bless,
            stored,
            seen: BTreeMap::new(),
        }
    }

    pub(crate) fn bytes(&mut self, name: &str, bytes: &[u8]) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            self.seen.insert(name.to_owned(), hex.clone()).is_none(),
            "fixture {name} named twice"
        );
        if !self.bless {
            let stored = self
                .stored
                .get(name)
                .unwrap_or_else(|| panic!("no fixture {name}"));
            assert_eq!(&hex, stored, "{name}: the wire bytes changed");
        }
    }

    pub(crate) fn payload<P: Payload + PartialEq + Debug>(&mut self, name: &str, value: P) {
        let bytes = value.encode();
        self.bytes(name, &bytes);
        assert_eq!(P::decode(bytes.clone()).unwrap(), value, "{name}");
        for cut in 0..bytes.len() {
            assert!(
                P::decode(bytes.slice(..cut)).is_err(),
                "{name} cut at {cut}"
            );
        }
    }

    fn finish(self) {
        if self.bless {
            let mut out =
                String::from("# name hex: the encoding of each sample in tests/wire_fixtures.rs\n");
            for (name, hex) in &self.seen {
                out.push_str(&format!("{name} {hex}\n"));
            }
            std::fs::write(PATH, out).unwrap();
            return;
        }
        let missing: Vec<_> = self
            .stored
            .keys()
            .filter(|k| !self.seen.contains_key(*k))
            .collect();
        assert!(missing.is_empty(), "fixtures with no sample: {missing:?}");
    }
}

fn record() -> DelayedRecord {
    DelayedRecord {
        key: Some(Bytes::from_static(b"k")),
        value: Bytes::from_static(b"value"),
        headers: vec![
            ("h".into(), Bytes::from_static(b"x")),
            ("sluice.tags".into(), Bytes::new()),
        ],
        timestamp: 1_700_000_000_123,
    }
}

fn loops() -> Vec<Option<LoopSpec>> {
    vec![
        None,
        Some(LoopSpec {
            interval_ms: 1000,
            times: 5,
            expire_at_ms: -1,
            backoff: LoopBackoff::Fixed,
        }),
        Some(LoopSpec {
            interval_ms: 250,
            times: 0,
            expire_at_ms: 1_800_000_000_000,
            backoff: LoopBackoff::Exponential {
                max_interval_ms: 60_000,
            },
        }),
    ]
}

fn topics(fx: &mut Fixtures) {
    fx.payload(
        "handshake_request",
        HandshakeRequest {
            version: 1,
            client_id: "client-ü".into(),
            token: "secret".into(),
            want_producer_id: true,
        },
    );
    fx.payload(
        "handshake_response",
        HandshakeResponse {
            version: 1,
            server: "sluice 0.1.0".into(),
            producer_id: -1,
            producer_epoch: -1,
            max_frame_bytes: 16 << 20,
            max_message_bytes: 1 << 20,
        },
    );
    fx.payload(
        "create_topic_request",
        CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            config: vec![
                ("durability".into(), "sync".into()),
                ("retention.ms".into(), "1000".into()),
            ],
        },
    );
    fx.payload(
        "delete_topic_request",
        DeleteTopicRequest {
            name: "orders".into(),
        },
    );
    fx.payload("list_topics_request", ListTopicsRequest);
    fx.payload(
        "list_topics_response",
        ListTopicsResponse {
            topics: vec![
                TopicSummary {
                    name: "a".into(),
                    partitions: 1,
                },
                TopicSummary {
                    name: "b".into(),
                    partitions: 8,
                },
            ],
        },
    );
    fx.payload(
        "describe_topic_request",
        DescribeTopicRequest { name: "a".into() },
    );
    fx.payload(
        "topic_description",
        TopicDescription {
            name: "a".into(),
            config: vec![("durability".into(), "async".into())],
            partitions: vec![PartitionDescription {
                partition: 0,
                log_start_offset: 5,
                high_watermark: 10,
                size_bytes: 4096,
                segments: 2,
            }],
        },
    );
    fx.payload("empty", Empty);
    fx.payload(
        "wire_error",
        WireError::new(ErrorCode::AuthenticationFailed, "bad token"),
    );
}

fn data(fx: &mut Fixtures) {
    for (name, acks) in [
        ("produce_request_durable", Acks::Durable),
        ("produce_request_none", Acks::None),
    ] {
        fx.payload(
            name,
            ProduceRequest {
                acks,
                entries: vec![
                    ProduceEntry {
                        topic: "t".into(),
                        partition: 2,
                        batch: Bytes::from_static(b"abc"),
                    },
                    ProduceEntry {
                        topic: "u".into(),
                        partition: 0,
                        batch: Bytes::new(),
                    },
                ],
            },
        );
    }
    fx.payload(
        "produce_response",
        ProduceResponse {
            results: vec![
                ProduceResult {
                    topic: "t".into(),
                    partition: 1,
                    error: ErrorCode::OutOfOrderSequence,
                    message: "gap".into(),
                    base_offset: 7,
                    last_offset: 9,
                    log_append_time: -1,
                    duplicate: false,
                },
                ProduceResult {
                    topic: "t".into(),
                    partition: 2,
                    error: ErrorCode::None,
                    message: String::new(),
                    base_offset: 100,
                    last_offset: 109,
                    log_append_time: 1_700_000_000_000,
                    duplicate: true,
                },
            ],
        },
    );
    fx.payload(
        "fetch_request",
        FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 42,
                max_bytes: 1024,
            }],
        },
    );
    fx.payload(
        "fetch_response",
        FetchResponse {
            partitions: vec![FetchResult {
                topic: "t".into(),
                partition: 0,
                error: ErrorCode::OffsetOutOfRange,
                message: "past the end".into(),
                high_watermark: 10,
                log_start_offset: 3,
                records: Bytes::from_static(b"xyz"),
            }],
        },
    );
    fx.payload(
        "list_offsets_request",
        ListOffsetsRequest {
            queries: [
                OffsetSpec::Earliest,
                OffsetSpec::Latest,
                OffsetSpec::Timestamp(1_700_000_000_000),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, spec)| OffsetQuery {
                topic: "t".into(),
                partition: i as u32,
                spec,
            })
            .collect(),
        },
    );
    fx.payload(
        "list_offsets_response",
        ListOffsetsResponse {
            results: vec![OffsetResult {
                topic: "t".into(),
                partition: 0,
                error: ErrorCode::UnknownTopic,
                message: "no topic".into(),
                offset: 77,
            }],
        },
    );
}

fn delays(fx: &mut Fixtures) {
    let whens = [When::After(500), When::At(1_700_000_000_000), When::At(-5)];
    fx.payload(
        "schedule_request",
        ScheduleRequest {
            entries: loops()
                .into_iter()
                .zip(whens)
                .enumerate()
                .map(|(i, (repeat, when))| ScheduleEntry {
                    topic: "t".into(),
                    partition: i as u32,
                    when,
                    repeat,
                    record: if i == 0 {
                        DelayedRecord::with_value("v")
                    } else {
                        record()
                    },
                })
                .collect(),
        },
    );
    fx.payload(
        "schedule_response",
        ScheduleResponse {
            results: vec![
                ScheduleResult {
                    error: ErrorCode::InvalidArgument,
                    message: "too far".into(),
                    delay_id: 0,
                    due_at_ms: -1,
                },
                ScheduleResult {
                    error: ErrorCode::None,
                    message: String::new(),
                    delay_id: 12,
                    due_at_ms: 1_700_000_000_500,
                },
            ],
        },
    );
    fx.payload(
        "cancel_delays_request",
        CancelDelaysRequest {
            ids: vec![1, 2, u64::MAX],
        },
    );
    fx.payload(
        "cancel_delays_response",
        CancelDelaysResponse {
            results: [
                CancelOutcome::Cancelled,
                CancelOutcome::AlreadyDelivered,
                CancelOutcome::AlreadyCancelled,
                CancelOutcome::Unknown,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| CancelResult {
                delay_id: i as u64,
                outcome,
                message: format!("outcome {i}"),
            })
            .collect(),
        },
    );
    fx.payload(
        "list_delays_request",
        ListDelaysRequest { topic: "t".into() },
    );
    fx.payload(
        "list_delays_response",
        ListDelaysResponse {
            topics: vec![DelaySummary {
                topic: "t".into(),
                pending: 3,
                next_due_ms: 77,
            }],
        },
    );
    // The scheduler's storage encodings.
    for (i, repeat) in loops().into_iter().enumerate() {
        let mut w = Writer::new();
        write_loop(&mut w, &repeat);
        let bytes = w.finish();
        fx.bytes(&format!("stored_loop_{i}"), &bytes);
        let mut r = Reader::new(bytes);
        assert_eq!(read_loop(&mut r).unwrap(), repeat);
        r.finish().unwrap();
    }
    for (i, rec) in [record(), DelayedRecord::with_value("v")]
        .into_iter()
        .enumerate()
    {
        let mut w = Writer::new();
        rec.write(&mut w);
        let bytes = w.finish();
        fx.bytes(&format!("stored_delayed_record_{i}"), &bytes);
        let mut r = Reader::new(bytes);
        assert_eq!(DelayedRecord::read(&mut r).unwrap(), rec);
        r.finish().unwrap();
    }
}

#[test]
fn every_payload_keeps_its_wire_bytes() {
    let mut fx = Fixtures::load();
    topics(&mut fx);
    data(&mut fx);
    delays(&mut fx);
    groups(&mut fx);
    functions(&mut fx);
    fx.finish();
}
