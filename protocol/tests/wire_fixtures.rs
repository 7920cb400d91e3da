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

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/payloads.txt");

struct Fixtures {
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

    fn bytes(&mut self, name: &str, bytes: &[u8]) {
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

    fn payload<P: Payload + PartialEq + Debug>(&mut self, name: &str, value: P) {
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

fn member() -> MemberRef {
    MemberRef {
        group: "g".into(),
        member_id: "m-1".into(),
    }
}

fn settings() -> GroupSettings {
    GroupSettings {
        topic: "orders".into(),
        mode: GroupMode::Broadcast,
        ordered: true,
        tag_filter: "a AND NOT b".into(),
        start: OffsetSpec::Timestamp(1_700_000_000_000),
        ack_timeout_ms: 5000,
        max_attempts: 3,
        retry_ladder_ms: vec![10, 20],
        max_in_flight: 100,
    }
}

fn tp() -> TopicPartition {
    TopicPartition {
        topic: "orders".into(),
        partition: 2,
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

fn attaches() -> Vec<Attach> {
    vec![
        Attach::Filter {
            group: "billing".into(),
        },
        Attach::Transform {
            input: "raw".into(),
            outputs: vec!["clean".into(), "rejects".into()],
            start: OffsetSpec::Timestamp(1_700_000_000_000),
        },
        Attach::Transform {
            input: "raw".into(),
            outputs: vec![],
            start: OffsetSpec::Earliest,
        },
        Attach::Handler {
            group: "mailer".into(),
            settings: settings(),
            concurrency: 4,
        },
    ]
}

fn manifest(attach: Attach) -> FunctionManifest {
    FunctionManifest {
        name: "f".into(),
        attach,
        config: vec![("threshold".into(), "10".into()), ("k".into(), "".into())],
        limits: FunctionLimitsSpec {
            timeout_ms: 1000,
            memory_bytes: 64 << 20,
            fuel_per_call: 1_000_000,
            max_batch_messages: 100,
            log_lines_per_sec: 50,
        },
        allowed_topics: vec!["audit".into()],
    }
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

fn groups(fx: &mut Fixtures) {
    let mut w = Writer::new();
    settings().write(&mut w);
    let bytes = w.finish();
    fx.bytes("stored_group_settings", &bytes);
    let mut r = Reader::new(bytes);
    assert_eq!(GroupSettings::read(&mut r).unwrap(), settings());
    r.finish().unwrap();

    fx.payload(
        "join_group_request",
        JoinGroupRequest {
            group: "g".into(),
            member_id: String::new(),
            instance_id: "host-1".into(),
            session_timeout_ms: 10_000,
            settings: settings(),
        },
    );
    fx.payload(
        "join_group_request_defaults",
        JoinGroupRequest {
            group: "g".into(),
            member_id: "m".into(),
            instance_id: String::new(),
            session_timeout_ms: 0,
            settings: GroupSettings::default(),
        },
    );
    fx.payload(
        "join_group_response",
        JoinGroupResponse {
            member_id: "m-1".into(),
            generation: 4,
            heartbeat_interval_ms: 3000,
            assignment: vec![tp(), tp()],
        },
    );
    fx.payload("heartbeat_request", HeartbeatRequest(member()));
    fx.payload(
        "heartbeat_response",
        HeartbeatResponse {
            generation: 2,
            assignment: vec![tp()],
        },
    );
    fx.payload("leave_group_request", LeaveGroupRequest(member()));
    fx.payload(
        "poll_group_request",
        PollGroupRequest {
            member: member(),
            max_messages: 10,
            max_bytes: 1 << 20,
            max_wait_ms: 100,
        },
    );
    fx.payload(
        "subscribe_request",
        SubscribeRequest {
            member: member(),
            credit: 64,
            max_bytes: 1 << 20,
        },
    );
    fx.payload(
        "grant_credit_request",
        GrantCreditRequest {
            member: member(),
            messages: 8,
        },
    );
    fx.payload(
        "group_batch",
        GroupBatch {
            generation: 2,
            deliveries: vec![GroupDelivery {
                topic: "orders".into(),
                partition: 1,
                records: Bytes::from_static(b"batch"),
                ranges: vec![
                    DeliveredRange {
                        first_offset: 5,
                        count: 2,
                        attempt: 1,
                    },
                    DeliveredRange {
                        first_offset: 9,
                        count: 1,
                        attempt: 3,
                    },
                ],
            }],
        },
    );
    fx.payload("group_batch_empty", GroupBatch::default());
    fx.payload(
        "ack_request",
        AckRequest {
            member: member(),
            acks: vec![PartitionAcks {
                topic: "orders".into(),
                partition: 0,
                ranges: vec![OffsetRange {
                    first_offset: 1,
                    count: 3,
                }],
            }],
            nacks: [
                NackAction::Retry,
                NackAction::RetryAfter(250),
                NackAction::DeadLetter,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, action)| Nack {
                topic: "orders".into(),
                partition: 0,
                offset: 9 + i as u64,
                action,
                reason: "db down".into(),
            })
            .collect(),
        },
    );
    fx.payload(
        "ack_response",
        AckResponse {
            settled: 3,
            stale: 1,
        },
    );
    fx.payload(
        "describe_group_request",
        DescribeGroupRequest(GroupRef { group: "g".into() }),
    );
    fx.payload(
        "group_description",
        GroupDescription {
            group: "g".into(),
            settings: settings(),
            generation: 3,
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                instance_id: "i".into(),
                client_id: "c".into(),
                assignment: vec![tp()],
                in_flight: 7,
            }],
            partitions: vec![PartitionLag {
                topic: "orders".into(),
                partition: 2,
                instance_id: String::new(),
                committed: 10,
                high_watermark: 15,
                lag: 5,
                in_flight: 2,
                owner: "m-1".into(),
            }],
            retry_topic: "sluice.retry.g".into(),
            dead_letter_topic: "sluice.dlq.g".into(),
            dead_letters: 1,
        },
    );
    fx.payload("list_groups_request", ListGroupsRequest);
    fx.payload(
        "list_groups_response",
        ListGroupsResponse {
            groups: [GroupMode::Clustering, GroupMode::Broadcast]
                .into_iter()
                .map(|mode| GroupSummary {
                    group: format!("g-{mode}"),
                    topic: "orders".into(),
                    mode,
                    members: 2,
                    lag: 5,
                    dead_letters: 0,
                })
                .collect(),
        },
    );
    for (name, to) in [
        ("reset_group_request_offset", ResetTo::Offset(42)),
        (
            "reset_group_request_earliest",
            ResetTo::Spec(OffsetSpec::Earliest),
        ),
        (
            "reset_group_request_latest",
            ResetTo::Spec(OffsetSpec::Latest),
        ),
        (
            "reset_group_request_time",
            ResetTo::Spec(OffsetSpec::Timestamp(5)),
        ),
    ] {
        fx.payload(
            name,
            ResetGroupRequest {
                group: "g".into(),
                partitions: vec![0, 1],
                to,
            },
        );
    }
    fx.payload(
        "reset_group_response",
        ResetGroupResponse {
            positions: vec![(tp(), 3)],
        },
    );
    fx.payload(
        "redrive_request",
        RedriveRequest {
            group: "g".into(),
            max: 0,
        },
    );
    fx.payload(
        "redrive_response",
        RedriveResponse {
            redriven: 4,
            remaining: 0,
        },
    );
    fx.payload(
        "delete_group_request",
        DeleteGroupRequest(GroupRef { group: "g".into() }),
    );
}

fn functions(fx: &mut Fixtures) {
    for (i, attach) in attaches().into_iter().enumerate() {
        fx.payload(&format!("function_manifest_{i}"), manifest(attach.clone()));
        fx.payload(
            &format!("function_manifest_bare_{i}"),
            FunctionManifest::new("g", attach.clone()),
        );
        fx.payload(
            &format!("deploy_function_request_{i}"),
            DeployFunctionRequest {
                manifest: manifest(attach),
                component: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
            },
        );
    }
    fx.payload(
        "deploy_function_response",
        DeployFunctionResponse {
            version: 3,
            digest: "sha256:abcd".into(),
            previous_version: 2,
        },
    );
    fx.payload("list_functions_request", ListFunctionsRequest);
    fx.payload(
        "list_functions_response",
        ListFunctionsResponse {
            functions: FunctionKind::ALL
                .into_iter()
                .enumerate()
                .map(|(i, kind)| FunctionSummary {
                    name: format!("f{i}"),
                    kind,
                    attach: "filter on group g".into(),
                    version: i as u32 + 1,
                    status: "running".into(),
                    invocations: 100,
                    errors: 2,
                })
                .collect(),
        },
    );
    fx.payload(
        "describe_function_request",
        DescribeFunctionRequest { name: "f".into() },
    );
    fx.payload(
        "function_description",
        FunctionDescription {
            manifest: manifest(attaches().remove(1)),
            version: 2,
            digest: "sha256:ef".into(),
            status: "running".into(),
            versions: vec![FunctionVersion {
                version: 1,
                digest: "sha256:01".into(),
                size: 12_345,
                deployed_at_ms: 1_700_000_000_000,
            }],
            metrics: FunctionMetrics {
                invocations: 10,
                messages: 1000,
                errors: vec![("trap".into(), 1), ("timeout".into(), 2)],
                latency_p50_us: 50,
                latency_p99_us: 900,
                latency_max_us: 4000,
                fuel: 123_456,
                busy_us: 5000,
                instances_created: 2,
                instances_recycled: 1,
                log_lines: 7,
                log_dropped: 3,
            },
            positions: vec![FunctionPosition {
                topic: "raw".into(),
                partition: 1,
                position: 40,
                high_watermark: 50,
            }],
        },
    );
    fx.payload(
        "function_logs_request",
        FunctionLogsRequest {
            name: "f".into(),
            after_seq: 41,
            max_lines: 100,
        },
    );
    fx.payload(
        "function_logs_response",
        FunctionLogsResponse {
            lines: [
                LogLevel::Trace,
                LogLevel::Debug,
                LogLevel::Info,
                LogLevel::Warn,
                LogLevel::Error,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, level)| FunctionLogLine {
                seq: 42 + i as u64,
                at_ms: 1_700_000_000_000,
                level,
                version: 2,
                message: format!("line {i} ünïcödé"),
            })
            .collect(),
            dropped: 3,
        },
    );
    fx.payload(
        "delete_function_request",
        DeleteFunctionRequest { name: "f".into() },
    );
    fx.payload(
        "rollback_function_request",
        RollbackFunctionRequest {
            name: "f".into(),
            to_version: 0,
        },
    );
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
