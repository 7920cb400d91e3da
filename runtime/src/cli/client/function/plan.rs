//! Turning `sluice fn deploy`'s flags and manifest into what is deployed:
//! the manifest's fields first, each flag given replacing its field (see
//! docs/cli.md). Pure (no broker, no files), so every rule is unit-tested
//! here.

use std::path::{Path, PathBuf};

use sluice_client::{Attach, FunctionKind, FunctionManifest, GroupSettings, OffsetSpec};

use super::args::{DeployArgs, TooLong, duration_ms};
use super::manifest::{AttachFile, ManifestFile};
use crate::cli::client::{BadPair, parse_pair};

/// Why the flags and manifest do not make a deployment; each says what to
/// add or take away.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("give the function a name: --name NAME (or name in the manifest)")]
    NoName,
    #[error(
        "give the component: sluice fn deploy COMPONENT.wasm ... (or component in the manifest)"
    )]
    NoComponent,
    #[error(
        "say where the function attaches: --filter-group GROUP, --transform-input TOPIC \
         or --handler-group GROUP (or [attach] in the manifest)"
    )]
    NoAttach,
    /// A field of another kind of function than the one deployed.
    #[error("{flag} (manifest attach.{key}) is for {for_kinds}, not for a {kind}")]
    Misplaced {
        flag: &'static str,
        key: &'static str,
        for_kinds: String,
        kind: FunctionKind,
    },
    #[error("a {kind} needs {flag} (or attach.{key} in the manifest)")]
    Missing {
        kind: FunctionKind,
        flag: &'static str,
        key: &'static str,
    },
    #[error("a transform needs at least one --output TOPIC (or attach.outputs)")]
    NoOutputs,
    #[error(transparent)]
    TooLong(#[from] TooLong),
    #[error(transparent)]
    Config(#[from] BadPair),
}

/// The attachment as far as the file and the flags say, before it is
/// checked: each field set or not.
#[derive(Debug, Default, Clone, PartialEq)]
struct AttachFields {
    kind: Option<FunctionKind>,
    group: Option<String>,
    input: Option<String>,
    outputs: Option<Vec<String>>,
    start: Option<OffsetSpec>,
    topic: Option<String>,
    concurrency: Option<u32>,
    max_attempts: Option<u16>,
    retry_ms: Option<Vec<u32>>,
    ordered: Option<bool>,
    tags: Option<String>,
    ack_timeout_ms: Option<u32>,
}

impl AttachFields {
    fn from_file(f: &AttachFile) -> Self {
        AttachFields {
            kind: Some(f.kind),
            group: f.group.clone(),
            input: f.input.clone(),
            outputs: f.outputs.clone(),
            start: f.start,
            topic: f.topic.clone(),
            concurrency: f.concurrency,
            max_attempts: f.max_attempts,
            retry_ms: f.retry_ms.clone(),
            ordered: f.ordered,
            tags: f.tags.clone(),
            ack_timeout_ms: f.ack_timeout_ms,
        }
    }

    fn from_flags(a: &DeployArgs) -> Result<Self, PlanError> {
        let (kind, group, input) = match (&a.filter_group, &a.transform_input, &a.handler_group) {
            (Some(g), _, _) => (Some(FunctionKind::Filter), Some(g.clone()), None),
            (_, Some(i), _) => (Some(FunctionKind::Transform), None, Some(i.clone())),
            (_, _, Some(g)) => (Some(FunctionKind::Handler), Some(g.clone()), None),
            _ => (None, None, None),
        };
        Ok(AttachFields {
            kind,
            group,
            input,
            outputs: (!a.outputs.is_empty()).then(|| a.outputs.clone()),
            start: a.start,
            topic: a.topic.clone(),
            concurrency: a.concurrency,
            max_attempts: a.max_attempts,
            retry_ms: a.retry.as_ref().map(|l| l.0.clone()),
            ordered: a.ordered,
            tags: a.tags.clone(),
            ack_timeout_ms: a
                .ack_timeout
                .map(|d| duration_ms(d, "--ack-timeout"))
                .transpose()?,
        })
    }

    /// `over`'s fields replace these; an `over` of another kind replaces
    /// them all (a filter's group is not a handler's).
    fn overlay(self, over: AttachFields) -> AttachFields {
        if over.kind.is_some() && over.kind != self.kind {
            return over;
        }
        AttachFields {
            kind: over.kind.or(self.kind),
            group: over.group.or(self.group),
            input: over.input.or(self.input),
            outputs: over.outputs.or(self.outputs),
            start: over.start.or(self.start),
            topic: over.topic.or(self.topic),
            concurrency: over.concurrency.or(self.concurrency),
            max_attempts: over.max_attempts.or(self.max_attempts),
            retry_ms: over.retry_ms.or(self.retry_ms),
            ordered: over.ordered.or(self.ordered),
            tags: over.tags.or(self.tags),
            ack_timeout_ms: over.ack_timeout_ms.or(self.ack_timeout_ms),
        }
    }

    /// The attachment, or what is missing or out of place.
    fn build(self) -> Result<Attach, PlanError> {
        let Some(kind) = self.kind else {
            return Err(PlanError::NoAttach);
        };
        use FunctionKind::{Handler as H, Transform as T};
        // (is set, flag, manifest key, the kinds it belongs to)
        let fields: [(bool, &'static str, &'static str, &[FunctionKind]); 10] = [
            (self.input.is_some(), "--transform-input", "input", &[T]),
            (self.outputs.is_some(), "--output", "outputs", &[T]),
            (self.start.is_some(), "--start", "start", &[T, H]),
            (self.topic.is_some(), "--topic", "topic", &[H]),
            (
                self.concurrency.is_some(),
                "--concurrency",
                "concurrency",
                &[H],
            ),
            (
                self.max_attempts.is_some(),
                "--max-attempts",
                "max_attempts",
                &[H],
            ),
            (self.retry_ms.is_some(), "--retry", "retry", &[H]),
            (self.ordered.is_some(), "--ordered", "ordered", &[H]),
            (self.tags.is_some(), "--tags", "tags", &[H]),
            (
                self.ack_timeout_ms.is_some(),
                "--ack-timeout",
                "ack_timeout",
                &[H],
            ),
        ];
        for (set, flag, key, kinds) in fields {
            if set && !kinds.contains(&kind) {
                let for_kinds: Vec<String> = kinds.iter().map(|k| format!("{k}s")).collect();
                return Err(PlanError::Misplaced {
                    flag,
                    key,
                    for_kinds: for_kinds.join(" and "),
                    kind,
                });
            }
        }
        let need = |v: Option<String>, flag: &'static str, key: &'static str| match v {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(PlanError::Missing { kind, flag, key }),
        };
        Ok(match kind {
            FunctionKind::Filter => Attach::Filter {
                group: need(self.group, "--filter-group GROUP", "group")?,
            },
            FunctionKind::Transform => {
                let input = need(self.input, "--transform-input TOPIC", "input")?;
                let outputs = self.outputs.unwrap_or_default();
                if outputs.is_empty() {
                    return Err(PlanError::NoOutputs);
                }
                Attach::Transform {
                    input,
                    outputs,
                    start: self.start.unwrap_or(OffsetSpec::Latest),
                }
            }
            FunctionKind::Handler => {
                let group = need(self.group, "--handler-group GROUP", "group")?;
                let defaults = GroupSettings::default();
                Attach::Handler {
                    group,
                    settings: GroupSettings {
                        topic: need(self.topic, "--topic TOPIC", "topic")?,
                        ordered: self.ordered.unwrap_or(defaults.ordered),
                        tag_filter: self.tags.unwrap_or_default(),
                        start: self.start.unwrap_or(defaults.start),
                        ack_timeout_ms: self.ack_timeout_ms.unwrap_or(defaults.ack_timeout_ms),
                        max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
                        retry_ladder_ms: self.retry_ms.unwrap_or_default(),
                        ..defaults
                    },
                    concurrency: self.concurrency.unwrap_or(0),
                }
            }
        })
    }
}

/// What a deploy sends: the manifest, and where the component is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    pub manifest: FunctionManifest,
    pub component: PathBuf,
}

/// Merges the manifest file (if any; `manifest_path` resolves its relative
/// component path) with the flags, the flags winning.
pub fn plan_deploy(
    args: &DeployArgs,
    file: Option<&ManifestFile>,
    manifest_path: Option<&Path>,
) -> Result<DeployPlan, PlanError> {
    let empty = ManifestFile::default();
    let file = file.unwrap_or(&empty);
    let name = match args.name.as_ref().or(file.name.as_ref()) {
        Some(n) if !n.is_empty() => n.clone(),
        _ => return Err(PlanError::NoName),
    };
    let component = match (&args.component, &file.component) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => match manifest_path.and_then(Path::parent) {
            Some(dir) if c.is_relative() => dir.join(c),
            _ => c.clone(),
        },
        (None, None) => return Err(PlanError::NoComponent),
    };
    let from_file = file
        .attach
        .as_ref()
        .map(AttachFields::from_file)
        .unwrap_or_default();
    let attach = from_file.overlay(AttachFields::from_flags(args)?).build()?;
    let mut manifest = FunctionManifest::new(name, attach);

    // The file's keys in order (a BTreeMap), then the flags'.
    for (k, v) in &file.config {
        manifest = manifest.config(k.clone(), v.clone());
    }
    for pair in &args.config {
        let (k, v) = parse_pair(pair, "--config")?;
        manifest = manifest.config(k, v);
    }

    manifest.allowed_topics = if !args.allowed_topics.is_empty() {
        args.allowed_topics.clone()
    } else {
        file.allowed_topics.clone().unwrap_or_default()
    };

    let l = &file.limits;
    if let Some(t) = args.timeout.or(l.timeout) {
        manifest = manifest.timeout(t);
    }
    manifest.limits.memory_bytes = args.memory.or(l.memory).unwrap_or(0);
    manifest.limits.fuel_per_call = args.fuel.or(l.fuel).unwrap_or(0);
    manifest.limits.max_batch_messages = args.max_batch.or(l.max_batch).unwrap_or(0);
    manifest.limits.log_lines_per_sec = args.log_rate.or(l.log_rate).unwrap_or(0);
    Ok(DeployPlan {
        manifest,
        component,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_client::FunctionLimitsSpec;

    use super::super::args::FnCommand;
    use super::super::args::tests::parse;
    use super::super::manifest::parse_manifest;
    use super::*;

    /// Plans `sluice fn deploy <line>`, with a manifest's text as if read
    /// from /etc/fns/m.toml.
    fn plan(line: &str, toml: Option<&str>) -> anyhow::Result<DeployPlan> {
        let FnCommand::Deploy(args) = parse(&format!("deploy {line}")).unwrap() else {
            panic!("not a deploy");
        };
        let file = toml.map(parse_manifest).transpose()?;
        Ok(plan_deploy(
            &args,
            file.as_ref(),
            Some(Path::new("/etc/fns/m.toml")),
        )?)
    }

    fn err(line: &str, toml: Option<&str>) -> String {
        format!("{:#}", plan(line, toml).unwrap_err())
    }

    #[test]
    fn flags_alone_describe_each_kind() {
        let p = plan(
            "vip.wasm --name vip --filter-group billing -c tag=vip --timeout 250ms --memory 32MiB",
            None,
        )
        .unwrap();
        assert_eq!(p.component, PathBuf::from("vip.wasm"));
        assert_eq!(
            p.manifest,
            FunctionManifest::filter("vip", "billing")
                .config("tag", "vip")
                .timeout(Duration::from_millis(250))
                .memory_bytes(32 << 20)
        );

        let p = plan(
            "r.wasm --name redact --transform-input raw --output clean --output rejects \
             --start earliest --allow-topic audit --fuel 1000 --max-batch 64 --log-rate 10",
            None,
        )
        .unwrap();
        assert_eq!(
            p.manifest,
            FunctionManifest::transform("redact", "raw", ["clean", "rejects"])
                .start(OffsetSpec::Earliest)
                .allow_topic("audit")
                .fuel_per_call(1000)
                .max_batch_messages(64)
                .log_lines_per_sec(10)
        );

        let p = plan(
            "m.wasm --name mailer --handler-group mail --topic orders --concurrency 4 \
             --max-attempts 5 --retry 1s,5s,1m --ordered --tags vip --ack-timeout 10s",
            None,
        )
        .unwrap();
        let settings = GroupSettings {
            topic: "orders".into(),
            ordered: true,
            tag_filter: "vip".into(),
            ack_timeout_ms: 10_000,
            max_attempts: 5,
            retry_ladder_ms: vec![1000, 5000, 60_000],
            ..GroupSettings::default()
        };
        assert_eq!(
            p.manifest,
            FunctionManifest::handler("mailer", "mail", settings).concurrency(4)
        );
    }

    const MANIFEST: &str = r#"
name = "redact"
component = "build/pii_redact.wasm"
allowed_topics = ["audit", "alerts"]

[attach]
kind = "transform"
input = "raw"
outputs = ["clean", "rejects"]
start = "earliest"

[config]
fields = "email,phone"
max_len = 64
strict = true

[limits]
timeout = "500ms"
memory = "64MiB"
fuel = 10000000
max_batch = 100
log_rate = 50
"#;

    #[test]
    fn a_manifest_file_describes_a_deploy() {
        let p = plan("", Some(MANIFEST)).unwrap();
        assert_eq!(p.component, PathBuf::from("/etc/fns/build/pii_redact.wasm"));
        assert_eq!(
            p.manifest,
            FunctionManifest {
                name: "redact".into(),
                attach: Attach::Transform {
                    input: "raw".into(),
                    outputs: vec!["clean".into(), "rejects".into()],
                    start: OffsetSpec::Earliest,
                },
                config: vec![
                    ("fields".into(), "email,phone".into()),
                    ("max_len".into(), "64".into()),
                    ("strict".into(), "true".into()),
                ],
                limits: FunctionLimitsSpec {
                    timeout_ms: 500,
                    memory_bytes: 64 << 20,
                    fuel_per_call: 10_000_000,
                    max_batch_messages: 100,
                    log_lines_per_sec: 50,
                },
                allowed_topics: vec!["audit".into(), "alerts".into()],
            }
        );
        // Absolute component paths stay as they are; integers are ms and bytes.
        let handler = r#"
name = "h"
component = "/opt/h.wasm"
[attach]
kind = "handler"
group = "g"
topic = "orders"
retry = ["1s", 5000]
ack_timeout = 2500
concurrency = 2
[limits]
timeout = 1500
memory = 1048576
"#;
        let p = plan("", Some(handler)).unwrap();
        assert_eq!(p.component, PathBuf::from("/opt/h.wasm"));
        assert_eq!(p.manifest.limits.timeout_ms, 1500);
        assert_eq!(p.manifest.limits.memory_bytes, 1 << 20);
        let Attach::Handler {
            settings,
            concurrency,
            ..
        } = &p.manifest.attach
        else {
            panic!("not a handler: {:?}", p.manifest.attach);
        };
        assert_eq!(settings.retry_ladder_ms, [1000, 5000]);
        assert_eq!(settings.ack_timeout_ms, 2500);
        assert_eq!(*concurrency, 2);
        // A ladder may also be one string.
        let p = plan("", Some(&handler.replace("[\"1s\", 5000]", "\"2s,3s\""))).unwrap();
        let Attach::Handler { settings, .. } = p.manifest.attach else {
            panic!("not a handler");
        };
        assert_eq!(settings.retry_ladder_ms, [2000, 3000]);
    }

    #[test]
    fn the_documented_manifests_parse() {
        let doc = include_str!("../../../../../docs/cli.md");
        let section = &doc[doc.find("## `sluice fn`").expect("the fn section")..];
        let blocks: Vec<&str> = section
            .split("```toml\n")
            .skip(1)
            .map(|b| &b[..b.find("```").expect("a closed block")])
            .collect();
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            let p = plan("", Some(block)).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
            assert!(!p.manifest.name.is_empty());
        }
    }

    #[test]
    fn flags_override_the_manifest() {
        let p = plan(
            "other.wasm --name redact-v2 --output cleaner --config fields=email --config extra=1 \
             --allow-topic x --timeout 2s --fuel 5",
            Some(MANIFEST),
        )
        .unwrap();
        // Relative to the working directory, not the manifest.
        assert_eq!(p.component, PathBuf::from("other.wasm"));
        let m = p.manifest;
        assert_eq!(m.name, "redact-v2");
        // Same kind: fields merge, lists are replaced.
        assert_eq!(
            m.attach,
            Attach::Transform {
                input: "raw".into(),
                outputs: vec!["cleaner".into()],
                start: OffsetSpec::Earliest,
            }
        );
        // Config merges per key.
        assert_eq!(
            m.config,
            [
                ("fields".into(), "email".into()),
                ("max_len".into(), "64".into()),
                ("strict".into(), "true".into()),
                ("extra".into(), "1".into()),
            ]
        );
        assert_eq!(m.allowed_topics, ["x"]);
        assert_eq!(m.limits.timeout_ms, 2000);
        assert_eq!(m.limits.fuel_per_call, 5);
        assert_eq!(m.limits.memory_bytes, 64 << 20, "kept from the manifest");

        // An attach flag of another kind replaces [attach] entirely...
        let p = plan("--filter-group billing", Some(MANIFEST)).unwrap();
        let billing = Attach::Filter {
            group: "billing".into(),
        };
        assert_eq!(p.manifest.attach, billing);
        // ...and the manifest's transform fields do not leak into it.
        let e = err("--filter-group billing --output o", Some(MANIFEST));
        assert!(e.contains("--output"), "{e}");

        // The same kind's flag merges: a new input, the manifest's outputs.
        let p = plan("--transform-input raw2", Some(MANIFEST)).unwrap();
        assert!(matches!(
            &p.manifest.attach,
            Attach::Transform { input, outputs, .. } if input == "raw2" && outputs.len() == 2
        ));

        // --ordered=false turns off a manifest's ordered.
        let handler = "name = \"h\"\ncomponent = \"h.wasm\"\n[attach]\nkind = \"handler\"\n\
                       group = \"g\"\ntopic = \"t\"\nordered = true\n";
        let ordered = |line: &str| match plan(line, Some(handler)).unwrap().manifest.attach {
            Attach::Handler { settings, .. } => settings.ordered,
            other => panic!("not a handler: {other:?}"),
        };
        assert!(ordered(""));
        assert!(!ordered("--ordered=false"));
        assert!(ordered("--ordered"));
    }

    #[test]
    fn what_is_missing_or_misplaced_is_named() {
        let e = err("f.wasm --name f", None);
        assert!(e.contains("say where the function attaches"), "{e}");
        let e = err("f.wasm --filter-group g", None);
        assert!(e.contains("--name NAME"), "{e}");
        let e = err("--name f --filter-group g", None);
        assert!(e.contains("give the component"), "{e}");
        let e = err("f.wasm --name f --transform-input raw", None);
        assert!(e.contains("at least one --output"), "{e}");
        let e = err("f.wasm --name f --handler-group g", None);
        assert!(e.contains("a handler needs --topic TOPIC"), "{e}");
        let e = err("f.wasm --name f --filter-group g --topic t", None);
        assert_eq!(
            e,
            "--topic (manifest attach.topic) is for handlers, not for a filter"
        );
        let e = err("f.wasm --name f --filter-group g --start latest", None);
        assert!(e.contains("is for transforms and handlers"), "{e}");
        let e = err("f.wasm --name f --filter-group g -c novalue", None);
        assert!(e.contains("--config takes name=value"), "{e}");

        // Mistakes in the manifest's values are the manifest's (manifest.rs);
        // they come through the plan as they are.
        let head = "name = \"f\"\ncomponent = \"f.wasm\"\n[attach]\n";
        let e = err("", Some(&format!("{head}kind = \"map\"\n")));
        assert!(
            e.contains("attach.kind") && e.contains("filter, transform or handler"),
            "{e}"
        );
    }
}
