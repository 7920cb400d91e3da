//! The manifest file of `sluice fn deploy --manifest FILE.toml` (see
//! docs/cli.md): deserialized straight into typed fields, so a bad duration,
//! size, start or kind is refused while the file is read, naming the key
//! and the line, before anything is merged with the flags.
//!
//! Durations (`"500ms"`, or an integer of milliseconds), sizes (`"64MiB"`,
//! or an integer of bytes) and starts are read with the parsers the flags
//! use, so a manifest takes what the command line takes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sluice_client::{FunctionKind, OffsetSpec};

use super::args::{duration_ms, parse_ladder, parse_size, parse_start};
use crate::cli::client::delay::parse_duration;

/// A manifest file as written: every field optional, so flags can supply
/// what the file leaves out. Unknown keys are refused (a misspelt limit
/// would otherwise be silently the broker's default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub name: Option<String>,
    /// The component, relative to the manifest's directory.
    pub component: Option<PathBuf>,
    pub attach: Option<AttachFile>,
    /// `[config]`, each value as the function reads it: strings, numbers,
    /// booleans (and dates) are taken as their text; sorted by key.
    #[serde(default, deserialize_with = "config")]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: LimitsFile,
    pub allowed_topics: Option<Vec<String>>,
}

/// `[attach]`: `kind` and the fields of that kind (which fields go with
/// which kind is checked when the plan is made, as flags can change the
/// kind).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachFile {
    #[serde(deserialize_with = "attach_kind")]
    pub kind: FunctionKind,
    pub group: Option<String>,
    pub input: Option<String>,
    pub outputs: Option<Vec<String>>,
    #[serde(default, deserialize_with = "attach_start")]
    pub start: Option<OffsetSpec>,
    pub topic: Option<String>,
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u16>,
    /// `retry`: `["1s", "5s"]` (or milliseconds) or `"1s,5s"`.
    #[serde(default, rename = "retry", deserialize_with = "attach_retry")]
    pub retry_ms: Option<Vec<u32>>,
    pub ordered: Option<bool>,
    pub tags: Option<String>,
    /// `ack_timeout`: a duration, or an integer of milliseconds.
    #[serde(
        default,
        rename = "ack_timeout",
        deserialize_with = "attach_ack_timeout"
    )]
    pub ack_timeout_ms: Option<u32>,
}

/// `[limits]`; absent ones take the broker's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// A duration, or an integer of milliseconds.
    #[serde(default, deserialize_with = "limits_timeout")]
    pub timeout: Option<Duration>,
    /// A size (`"64MiB"`), or an integer of bytes.
    #[serde(default, deserialize_with = "limits_memory")]
    pub memory: Option<u64>,
    pub fuel: Option<u64>,
    pub max_batch: Option<u32>,
    pub log_rate: Option<u32>,
}

/// What is wrong in a manifest's text, on one line: toml's own rendering
/// spreads over several (a snippet with a caret), which does not fit the
/// CLI's one `error:` line, so the message and position are kept instead of
/// the toml error.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", at.map(|(line, column)| format!("line {line}, column {column}: ")).unwrap_or_default())]
pub struct ManifestSyntax {
    /// Line and column (from 1) of what is wrong, when toml knows.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Why a manifest file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid manifest {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ManifestSyntax,
    },
}

/// Parses a manifest's text.
pub fn parse_manifest(text: &str) -> Result<ManifestFile, ManifestSyntax> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|span| line_column(text, span.start));
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ManifestSyntax { at, message }
    })
}

/// Reads and parses the manifest at `path`.
pub fn read_manifest(path: &Path) -> Result<ManifestFile, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_manifest(&text).map_err(|source| ManifestError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Line and column (from 1, in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

// ------------------------------------------------------------ typed fields
//
// One small function per key, so each message names the key it is about
// (serde does not tell a field's deserializer its name).

fn limits_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    DurationField("limits.timeout").deserialize(d).map(Some)
}

fn limits_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(SizeField("limits.memory")).map(Some)
}

fn attach_ack_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    const KEY: &str = "attach.ack_timeout";
    let t = DurationField(KEY).deserialize(d)?;
    duration_ms(t, KEY).map(Some).map_err(de::Error::custom)
}

fn attach_retry<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    d.deserialize_any(LadderField("attach.retry")).map(Some)
}

fn attach_start<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetSpec>, D::Error> {
    d.deserialize_any(StartField("attach.start")).map(Some)
}

fn attach_kind<'de, D: Deserializer<'de>>(d: D) -> Result<FunctionKind, D::Error> {
    d.deserialize_any(KindField("attach.kind"))
}

fn config<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    d.deserialize_map(ConfigTable)
}

/// A duration: a string as `--timeout` takes it, or milliseconds.
#[derive(Clone, Copy)]
struct DurationField(&'static str);

impl<'de> DeserializeSeed<'de> for DurationField {
    type Value = Duration;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DurationField {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to be a duration like \"500ms\" or \"2s\" (or milliseconds)",
            self.0
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        parse_duration(s).map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
        u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
            E::custom(format!(
                "{} must be a duration like \"500ms\" or \"2s\" (or milliseconds), not {ms}",
                self.0
            ))
        })
    }
}

/// A size: a string as `--memory` takes it, or bytes.
struct SizeField(&'static str);

impl<'de> Visitor<'de> for SizeField {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to be a size like \"64MiB\" (or bytes)", self.0)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        parse_size(s).map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        Ok(n)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        u64::try_from(n).map_err(|_| {
            E::custom(format!(
                "{} must be a size like \"64MiB\" (or bytes), not {n}",
                self.0
            ))
        })
    }
}

/// A retry ladder: a list of durations, or one string as `--retry` takes.
struct LadderField(&'static str);

impl<'de> Visitor<'de> for LadderField {
    type Value = Vec<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to be a list of durations like [\"1s\", \"5s\"] (or \"1s,5s\")",
            self.0
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u32>, E> {
        parse_ladder(s)
            .map(|l| l.0)
            .map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
        let mut ladder = Vec::new();
        while let Some(d) = seq.next_element_seed(DurationField(self.0))? {
            ladder.push(duration_ms(d, "a retry delay").map_err(de::Error::custom)?);
        }
        Ok(ladder)
    }
}

/// Where a transform or handler starts, as `--start` takes it.
struct StartField(&'static str);

impl<'de> Visitor<'de> for StartField {
    type Value = OffsetSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to be earliest, latest, time:<ms> or ago:<N><U>",
            self.0
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<OffsetSpec, E> {
        parse_start(s).map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }
}

/// `filter`, `transform` or `handler`.
struct KindField(&'static str);

impl<'de> Visitor<'de> for KindField {
    type Value = FunctionKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to be \"filter\", \"transform\" or \"handler\"",
            self.0
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<FunctionKind, E> {
        s.parse().map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }
}

/// `[config]`: each value through [`ConfigValue`], which knows its key.
struct ConfigTable;

impl<'de> Visitor<'de> for ConfigTable {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[config] to be a table of names and values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut config = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ConfigValue(&key))?;
            config.insert(key, value);
        }
        Ok(config)
    }
}

/// One `[config]` value, as the text the function reads.
struct ConfigValue<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for ConfigValue<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        // Through toml's own value, which also reads dates (a date is a
        // table to serde).
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => Err(de::Error::custom(format!(
                "config.{} must be a string, number or boolean",
                self.0
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-line error of a manifest's text.
    fn bad(text: &str) -> String {
        format!("{:#}", parse_manifest(text).unwrap_err())
    }

    const HEAD: &str = "name = \"f\"\ncomponent = \"f.wasm\"\n[attach]\n";

    fn filter() -> String {
        format!("{HEAD}kind = \"filter\"\ngroup = \"g\"\n")
    }

    #[test]
    fn a_good_manifest_reads_into_typed_fields() {
        let m = parse_manifest(
            r#"
name = "mailer"
component = "mailer.wasm"
allowed_topics = ["audit"]

[attach]
kind = "Handler"
group = "mail"
topic = "orders"
start = "time:1700000000000"
retry = ["1s", 2500, "1m"]
ack_timeout = "10s"
ordered = true

[config]
b = true
a = "x"
n = 64
f = 1.5
when = 2026-03-01T09:00:00Z

[limits]
timeout = "1m30s"
memory = "64 MiB"
fuel = 5
"#,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("mailer"));
        assert_eq!(m.component, Some(PathBuf::from("mailer.wasm")));
        assert_eq!(m.allowed_topics, Some(vec!["audit".to_owned()]));
        let a = m.attach.unwrap();
        assert_eq!(a.kind, FunctionKind::Handler);
        assert_eq!(a.start, Some(OffsetSpec::Timestamp(1_700_000_000_000)));
        assert_eq!(a.retry_ms, Some(vec![1000, 2500, 60_000]));
        assert_eq!(a.ack_timeout_ms, Some(10_000));
        assert_eq!(a.ordered, Some(true));
        assert_eq!(a.outputs, None);
        let config: Vec<(&str, &str)> = m
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            config,
            [
                ("a", "x"),
                ("b", "true"),
                ("f", "1.5"),
                ("n", "64"),
                ("when", "2026-03-01T09:00:00Z"),
            ]
        );
        assert_eq!(m.limits.timeout, Some(Duration::from_secs(90)));
        assert_eq!(m.limits.memory, Some(64 << 20));
        assert_eq!(m.limits.fuel, Some(5));
        assert_eq!(m.limits.max_batch, None);

        // Integers are milliseconds and bytes; an empty file is all unset.
        let m = parse_manifest("[limits]\ntimeout = 1500\nmemory = 1048576\n").unwrap();
        assert_eq!(m.limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(m.limits.memory, Some(1 << 20));
        let m = parse_manifest("").unwrap();
        assert!(m.name.is_none() && m.attach.is_none() && m.config.is_empty());
    }

    #[test]
    fn a_bad_duration_is_refused_with_its_key() {
        let e = bad(&format!("{}[limits]\ntimeout = -5\n", filter()));
        assert!(e.contains("limits.timeout must be a duration"), "{e}");
        let e = bad(&format!("{}[limits]\ntimeout = \"soon\"\n", filter()));
        assert!(
            e.starts_with("line 7, column 11: limits.timeout: expected a duration like 250ms"),
            "{e}"
        );
        let e = bad(&format!("{}[limits]\ntimeout = true\n", filter()));
        assert!(
            e.contains("expected limits.timeout to be a duration"),
            "{e}"
        );
        let e = bad(&format!("{}ack_timeout = \"100d\"\n", filter()));
        assert!(
            e.contains("attach.ack_timeout of 3months") && e.ends_with("is too long"),
            "{e}"
        );
        let e = bad(&format!("{}retry = [\"1s\", \"later\"]\n", filter()));
        assert!(e.contains("attach.retry: expected a duration"), "{e}");
        let e = bad(&format!("{}retry = \"1s,\"\n", filter()));
        assert!(e.contains("attach.retry: expected a duration"), "{e}");
        let e = bad(&format!("{}retry = 5\n", filter()));
        assert!(e.contains("attach.retry to be a list of durations"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn a_bad_size_is_refused_with_its_key() {
        let e = bad(&format!("{}[limits]\nmemory = \"64MB\"\n", filter()));
        assert!(
            e.contains("limits.memory") && e.contains("KiB, MiB or GiB"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = bad(&format!("{}[limits]\nmemory = -1\n", filter()));
        assert!(e.contains("limits.memory must be a size"), "{e}");
        let e = bad(&format!("{}[limits]\nmemory = \"lots\"\n", filter()));
        assert!(e.contains("expected a size like 65536"), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_values_are_named() {
        let e = bad("name = \"f\"\ncomponet = \"x.wasm\"\n");
        assert!(e.contains("unknown field `componet`"), "{e}");
        assert!(e.starts_with("line 2, column 1: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = bad("[limits]\nmemroy = 5\n");
        assert!(e.contains("memroy"), "{e}");
        let e = bad(&format!("{}colour = \"red\"\n", filter()));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = bad("[attach]\ngroup = \"g\"\n");
        assert!(e.contains("kind"), "{e}");
        let e = bad(&format!("{HEAD}kind = \"map\"\n"));
        assert!(
            e.contains("attach.kind") && e.contains("filter, transform or handler"),
            "{e}"
        );
        let e = bad(&format!("{}[config]\nlist = [1]\n", filter()));
        assert!(e.contains("config.list must be a string"), "{e}");
        let e = bad(&format!(
            "{HEAD}kind = \"transform\"\ninput = \"i\"\noutputs = [\"o\"]\nstart = \"offset:5\"\n"
        ));
        assert!(
            e.contains("attach.start") && e.contains("not at an offset"),
            "{e}"
        );
        // Plain syntax errors are one line too.
        let e = bad("name = \n");
        assert!(e.starts_with("line 1, column "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("µ\nµx", 5), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
