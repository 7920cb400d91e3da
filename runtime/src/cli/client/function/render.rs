//! What `sluice fn list|describe|logs|deploy|rollback` print, as text and
//! as JSON; pure, so the exact output is unit-tested here.

use std::time::Duration;

use serde_json::{Value as Json, json};
use sluice_client::{
    Attach, DeployFunctionResponse, FunctionDescription, FunctionLogLine, FunctionSummary,
    OffsetSpec,
};

use crate::cli::client::render::{duration, human_bytes, micros, rfc3339, table};

/// `version 3 (0123456789ab), replacing version 2`; without the last part
/// for a new function.
pub(super) fn version_line(r: &DeployFunctionResponse) -> String {
    let mut line = format!("version {} ({})", r.version, short_digest(&r.digest));
    if r.previous_version != 0 {
        line.push_str(&format!(", replacing version {}", r.previous_version));
    }
    line
}

/// The first 12 characters of a digest, after any `algorithm:` prefix.
fn short_digest(digest: &str) -> &str {
    let hex = digest.rsplit_once(':').map_or(digest, |(_, h)| h);
    match hex.char_indices().nth(12) {
        Some((i, _)) => &hex[..i],
        None => hex,
    }
}

/// The table `sluice fn list` prints.
pub(super) fn list_text(functions: Vec<FunctionSummary>) -> String {
    if functions.is_empty() {
        return "no functions\n".into();
    }
    let rows = functions
        .into_iter()
        .map(|f| {
            vec![
                f.name,
                f.kind.to_string(),
                f.version.to_string(),
                f.status,
                f.attach,
                f.invocations.to_string(),
                f.errors.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "VERSION",
            "STATUS",
            "ATTACH",
            "INVOCATIONS",
            "ERRORS",
        ],
        rows,
    )
}

pub(super) fn list_json(functions: &[FunctionSummary]) -> String {
    let items: Vec<Json> = functions
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": f.kind.as_str(),
                "version": f.version,
                "status": f.status,
                "attach": f.attach,
                "invocations": f.invocations,
                "errors": f.errors,
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("JSON values serialise")
}

/// `earliest`, `latest` or `time:<ms>`, as `--start` takes it.
fn start_str(s: OffsetSpec) -> String {
    match s {
        OffsetSpec::Earliest => "earliest".into(),
        OffsetSpec::Latest => "latest".into(),
        OffsetSpec::Timestamp(t) => format!("time:{t}"),
    }
}

/// A limit, or `default` for 0.
fn or_default(v: u64, show: impl Fn(u64) -> String) -> String {
    if v == 0 { "default".into() } else { show(v) }
}

/// The text `sluice fn describe` prints.
pub(super) fn describe_text(d: &FunctionDescription) -> String {
    let m = &d.manifest;
    let mut out = format!(
        "function {} ({}), version {} ({}), status {}\n",
        m.name,
        m.kind(),
        d.version,
        short_digest(&d.digest),
        d.status
    );
    out.push_str(&format!("attach: {}\n", m.attach.describe()));
    match &m.attach {
        Attach::Filter { .. } => {}
        Attach::Transform { start, .. } => {
            out.push_str(&format!("  starts at {}\n", start_str(*start)));
        }
        Attach::Handler {
            settings: s,
            concurrency,
            ..
        } => {
            let ladder: Vec<String> = s
                .retry_ladder_ms
                .iter()
                .map(|ms| duration(Duration::from_millis((*ms).into())))
                .collect();
            out.push_str(&format!(
                "  {}tags {}, starts at {}, ack timeout {} ms, max attempts {}, retry {}, concurrency {}\n",
                if s.ordered { "ordered, " } else { "" },
                if s.tag_filter.is_empty() {
                    "*".to_owned()
                } else {
                    format!("'{}'", s.tag_filter)
                },
                start_str(s.start),
                s.ack_timeout_ms,
                s.max_attempts,
                if ladder.is_empty() {
                    "default".to_owned()
                } else {
                    ladder.join(",")
                },
                or_default((*concurrency).into(), |n| n.to_string()),
            ));
        }
    }
    let config: Vec<String> = m.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!(
        "config: {}\n",
        if config.is_empty() {
            "none".to_owned()
        } else {
            config.join(", ")
        }
    ));
    out.push_str(&format!(
        "allowed topics: {}\n",
        if m.allowed_topics.is_empty() {
            "any".to_owned()
        } else {
            m.allowed_topics.join(", ")
        }
    ));
    let l = &m.limits;
    out.push_str(&format!(
        "limits: timeout {}, memory {}, fuel {}, max batch {}, log rate {}\n\n",
        or_default(l.timeout_ms.into(), |ms| format!("{ms} ms")),
        or_default(l.memory_bytes, human_bytes),
        or_default(l.fuel_per_call, |n| n.to_string()),
        or_default(l.max_batch_messages.into(), |n| n.to_string()),
        or_default(l.log_lines_per_sec.into(), |n| format!("{n}/s")),
    ));

    let rows = d
        .versions
        .iter()
        .map(|v| {
            let mut version = v.version.to_string();
            if v.version == d.version {
                version.push_str(" (active)");
            }
            vec![
                version,
                short_digest(&v.digest).to_owned(),
                human_bytes(v.size),
                rfc3339(v.deployed_at_ms),
            ]
        })
        .collect();
    out.push_str(&table(&["VERSION", "DIGEST", "SIZE", "DEPLOYED"], rows));
    out.push('\n');

    let mt = &d.metrics;
    let mut errors: Vec<&(String, u64)> = mt.errors.iter().collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let by_kind: Vec<String> = errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push_str(&format!(
        "invocations {}, messages {}, errors {}{}\n",
        mt.invocations,
        mt.messages,
        mt.total_errors(),
        if by_kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_kind.join(", "))
        }
    ));
    out.push_str(&format!(
        "latency p50 {}, p99 {}, max {}; busy {}; fuel {}\n",
        micros(mt.latency_p50_us),
        micros(mt.latency_p99_us),
        micros(mt.latency_max_us),
        micros(mt.busy_us),
        mt.fuel
    ));
    out.push_str(&format!(
        "instances created {}, recycled {}; log lines {}, dropped {}\n",
        mt.instances_created, mt.instances_recycled, mt.log_lines, mt.log_dropped
    ));
    if !d.positions.is_empty() {
        out.push('\n');
        let rows = d
            .positions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.position.to_string(),
                    p.high_watermark.to_string(),
                    p.lag().to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TOPIC", "PARTITION", "POSITION", "HIGH-WATERMARK", "LAG"],
            rows,
        ));
        out.push_str(&format!("total lag {}\n", d.total_lag()));
    }
    out
}

fn attach_json(a: &Attach) -> Json {
    match a {
        Attach::Filter { group } => json!({ "kind": "filter", "group": group }),
        Attach::Transform {
            input,
            outputs,
            start,
        } => json!({
            "kind": "transform",
            "input": input,
            "outputs": outputs,
            "start": start_str(*start),
        }),
        Attach::Handler {
            group,
            settings: s,
            concurrency,
        } => json!({
            "kind": "handler",
            "group": group,
            "topic": s.topic,
            "mode": s.mode.to_string(),
            "ordered": s.ordered,
            "tags": s.tag_filter,
            "start": start_str(s.start),
            "ack_timeout_ms": s.ack_timeout_ms,
            "max_attempts": s.max_attempts,
            "retry_ms": s.retry_ladder_ms,
            "max_in_flight": s.max_in_flight,
            "concurrency": concurrency,
        }),
    }
}

/// What `sluice fn describe --json` prints.
pub(super) fn describe_json(d: &FunctionDescription) -> Json {
    let m = &d.manifest;
    let l = &m.limits;
    let mt = &d.metrics;
    let config: serde_json::Map<String, Json> = m
        .config
        .iter()
        .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
        .collect();
    let errors: serde_json::Map<String, Json> = mt
        .errors
        .iter()
        .map(|(k, n)| (k.clone(), Json::from(*n)))
        .collect();
    json!({
        "name": m.name,
        "kind": m.kind().as_str(),
        "version": d.version,
        "digest": d.digest,
        "status": d.status,
        "attach": attach_json(&m.attach),
        "config": config,
        "allowed_topics": m.allowed_topics,
        "limits": {
            "timeout_ms": l.timeout_ms,
            "memory_bytes": l.memory_bytes,
            "fuel_per_call": l.fuel_per_call,
            "max_batch_messages": l.max_batch_messages,
            "log_lines_per_sec": l.log_lines_per_sec,
        },
        "versions": d.versions.iter().map(|v| json!({
            "version": v.version,
            "digest": v.digest,
            "size": v.size,
            "deployed_at_ms": v.deployed_at_ms,
        })).collect::<Vec<_>>(),
        "metrics": {
            "invocations": mt.invocations,
            "messages": mt.messages,
            "errors": errors,
            "latency_p50_us": mt.latency_p50_us,
            "latency_p99_us": mt.latency_p99_us,
            "latency_max_us": mt.latency_max_us,
            "fuel": mt.fuel,
            "busy_us": mt.busy_us,
            "instances_created": mt.instances_created,
            "instances_recycled": mt.instances_recycled,
            "log_lines": mt.log_lines,
            "log_dropped": mt.log_dropped,
        },
        "positions": d.positions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "position": p.position,
            "high_watermark": p.high_watermark,
            "lag": p.lag(),
        })).collect::<Vec<_>>(),
    })
}

/// `2026-03-01T09:00:00.250Z info  v3 message`.
pub(super) fn log_text(l: &FunctionLogLine) -> String {
    format!(
        "{} {:5} v{} {}",
        rfc3339(l.at_ms),
        l.level,
        l.version,
        l.message
    )
}

pub(super) fn log_json(l: &FunctionLogLine) -> String {
    json!({
        "seq": l.seq,
        "time": l.at_ms,
        "level": l.level.as_str(),
        "version": l.version,
        "message": l.message,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use sluice_client::{
        FunctionKind, FunctionManifest, FunctionMetrics, FunctionPosition, FunctionVersion,
        GroupSettings, LogLevel,
    };

    use super::*;

    #[test]
    fn deploy_and_rollback_lines() {
        let r = DeployFunctionResponse {
            version: 3,
            digest: "sha256:0123456789abcdef0123".into(),
            previous_version: 2,
        };
        assert_eq!(
            version_line(&r),
            "version 3 (0123456789ab), replacing version 2"
        );
        let r = DeployFunctionResponse {
            version: 1,
            digest: "abc".into(),
            previous_version: 0,
        };
        assert_eq!(version_line(&r), "version 1 (abc)");
    }

    fn description() -> FunctionDescription {
        let version = |version, digest: &str, size, deployed_at_ms| FunctionVersion {
            version,
            digest: digest.into(),
            size,
            deployed_at_ms,
        };
        FunctionDescription {
            manifest: FunctionManifest::transform("redact", "raw", ["clean", "rejects"])
                .start(OffsetSpec::Earliest)
                .config("fields", "email")
                .memory_bytes(64 << 20),
            version: 2,
            digest: "sha256:ffeeddccbbaa99887766".into(),
            status: "running".into(),
            versions: vec![
                version(1, "sha256:00112233445566778899", 2048, 1_772_355_600_000),
                version(2, "sha256:ffeeddccbbaa99887766", 1536, 1_772_355_660_000),
            ],
            metrics: FunctionMetrics {
                invocations: 10,
                messages: 1000,
                errors: vec![("trap".into(), 1), ("timeout".into(), 2)],
                latency_p50_us: 50,
                latency_p99_us: 1500,
                latency_max_us: 2_500_000,
                fuel: 0,
                busy_us: 9000,
                instances_created: 2,
                instances_recycled: 1,
                log_lines: 7,
                log_dropped: 0,
            },
            positions: vec![FunctionPosition {
                topic: "raw".into(),
                partition: 0,
                position: 40,
                high_watermark: 50,
            }],
        }
    }

    #[test]
    fn describe_shows_manifest_versions_metrics_and_lag() {
        let expected = "\
function redact (transform), version 2 (ffeeddccbbaa), status running
attach: transform raw -> clean, rejects
  starts at earliest
config: fields=email
allowed topics: any
limits: timeout default, memory 64.0 MiB, fuel default, max batch default, log rate default

VERSION     DIGEST        SIZE     DEPLOYED
1           001122334455  2.0 KiB  2026-03-01T09:00:00.000Z
2 (active)  ffeeddccbbaa  1.5 KiB  2026-03-01T09:01:00.000Z

invocations 10, messages 1000, errors 3 (timeout 2, trap 1)
latency p50 50µs, p99 1.5ms, max 2.50s; busy 9.0ms; fuel 0
instances created 2, recycled 1; log lines 7, dropped 0

TOPIC  PARTITION  POSITION  HIGH-WATERMARK  LAG
raw    0          40        50              10
total lag 10
";
        assert_eq!(describe_text(&description()), expected);

        let v = describe_json(&description());
        assert_eq!(v["kind"], "transform");
        assert_eq!(v["attach"]["outputs"], json!(["clean", "rejects"]));
        assert_eq!(v["attach"]["start"], "earliest");
        assert_eq!(v["config"]["fields"], "email");
        assert_eq!(v["metrics"]["errors"]["timeout"], 2);
        assert_eq!(v["positions"][0]["lag"], 10);
        assert_eq!(v["limits"]["memory_bytes"], 64 << 20);

        let mut h = description();
        let settings = GroupSettings {
            topic: "orders".into(),
            ordered: true,
            tag_filter: "vip".into(),
            retry_ladder_ms: vec![1000, 60_000],
            ..GroupSettings::default()
        };
        h.manifest = FunctionManifest::handler("mailer", "mail", settings);
        let text = describe_text(&h);
        let expected = "attach: handler on group mail (topic orders)\n  ordered, tags 'vip', \
                        starts at latest, ack timeout 30000 ms, max attempts 16, retry 1s,1m, \
                        concurrency default\n";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn lists_and_log_lines_render() {
        let f = FunctionSummary {
            name: "vip".into(),
            kind: FunctionKind::Filter,
            attach: "filter on group g".into(),
            version: 1,
            status: "running".into(),
            invocations: 5,
            errors: 0,
        };
        assert_eq!(list_text(vec![]), "no functions\n");
        assert_eq!(
            list_text(vec![f.clone()]),
            "\
NAME  KIND    VERSION  STATUS   ATTACH             INVOCATIONS  ERRORS
vip   filter  1        running  filter on group g  5            0
"
        );
        let v: Json = serde_json::from_str(&list_json(&[f])).unwrap();
        assert_eq!(v[0]["kind"], "filter");
        assert_eq!(v[0]["invocations"], 5);

        let line = FunctionLogLine {
            seq: 9,
            at_ms: 1_772_355_600_250,
            level: LogLevel::Info,
            version: 3,
            message: "hello".into(),
        };
        assert_eq!(log_text(&line), "2026-03-01T09:00:00.250Z info  v3 hello");
        let v: Json = serde_json::from_str(&log_json(&line)).unwrap();
        let expected = json!({
            "seq": 9,
            "time": 1_772_355_600_250i64,
            "level": "info",
            "version": 3,
            "message": "hello",
        });
        assert_eq!(v, expected);
    }
}
