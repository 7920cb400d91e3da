//! Samples of the group and function payloads (see `main.rs`).

use bytes::Bytes;
use sluice_protocol::codec::{Reader, Writer};
use sluice_protocol::ops::*;

use crate::Fixtures;

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

pub(crate) fn groups(fx: &mut Fixtures) {
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

pub(crate) fn functions(fx: &mut Fixtures) {
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
