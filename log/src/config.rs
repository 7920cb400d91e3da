//! Per-topic storage settings: partitions, durability, segments, retention.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When an append is acknowledged relative to reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledge after `fdatasync`. Concurrent appenders to a partition share
    /// one sync (group commit). An acknowledged batch survives kill -9 and
    /// power loss.
    #[default]
    Sync,
    /// Acknowledge after the write to the page cache; a background flusher
    /// syncs every so many milliseconds. Survives kill -9; power loss may lose
    /// up to one interval.
    Interval(u64),
    /// Acknowledge after the write to the page cache and never sync
    /// explicitly. Survives kill -9, not power loss.
    None,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Interval(ms) => write!(f, "interval:{ms}"),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Why a durability setting did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityParseError {
    #[error("bad interval in durability {0:?}: want interval:<ms> with ms > 0")]
    BadInterval(String),
    #[error("unknown durability {0:?}: want sync, none or interval:<ms>")]
    Unknown(String),
}

impl FromStr for Durability {
    type Err = DurabilityParseError;

    /// Parses `sync`, `none`, or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            _ => match s.strip_prefix("interval:") {
                Some(ms) => ms
                    .trim_end_matches("ms")
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Durability::Interval)
                    .ok_or_else(|| DurabilityParseError::BadInterval(s.to_owned())),
                None => Err(DurabilityParseError::Unknown(s.to_owned())),
            },
        }
    }
}

/// Which timestamp the log keeps for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestampPolicy {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Stamp each batch with the broker's clock when it is appended.
    LogAppendTime,
}

/// Storage settings of one topic. Missing fields take their defaults, so
/// stored configurations stay readable when fields are added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    pub durability: Durability,
    /// Roll to a new segment when the active one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this.
    pub segment_ms: u64,
    /// Delete closed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    pub timestamp: TimestampPolicy,
    /// Largest batch an append accepts.
    pub max_batch_bytes: u32,
    /// Add an offset-index entry every this many bytes of log.
    pub index_interval_bytes: u32,
}

/// Segments are addressed with 32-bit positions in the index.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// The smallest segment size a topic may have.
const MIN_SEGMENT_BYTES: u64 = 1024;
/// The most partitions a topic may have.
const MAX_PARTITIONS: u32 = 100_000;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            durability: Durability::Sync,
            segment_bytes: 1 << 30,
            segment_ms: Duration::from_secs(7 * 24 * 3600).as_millis() as u64,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600).as_millis() as u64),
            retention_bytes: None,
            timestamp: TimestampPolicy::CreateTime,
            max_batch_bytes: 8 << 20,
            index_interval_bytes: 4096,
        }
    }
}

/// Names of the settings [`TopicConfig::set`] accepts, as the protocol and
/// the CLI spell them.
pub const SETTING_NAMES: &[&str] = &[
    "durability",
    "segment_bytes",
    "segment_ms",
    "retention_ms",
    "retention_bytes",
    "timestamp",
    "max_batch_bytes",
    "index_interval_bytes",
];

impl TopicConfig {
    /// Sets one setting from its string form (`retention_ms = none` clears
    /// an optional limit). Partitions are not a setting: they are given
    /// separately at creation.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        fn num<T: FromStr>(key: &str, value: &str) -> Result<T, SetError> {
            value.parse().map_err(|_| SetError::NotANumber {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        }
        fn optional(key: &str, value: &str) -> Result<Option<u64>, SetError> {
            if value == "none" {
                Ok(None)
            } else {
                num(key, value).map(Some)
            }
        }
        match key {
            "durability" => self.durability = value.parse()?,
            "segment_bytes" => self.segment_bytes = num(key, value)?,
            "segment_ms" => self.segment_ms = num(key, value)?,
            "retention_ms" => self.retention_ms = optional(key, value)?,
            "retention_bytes" => self.retention_bytes = optional(key, value)?,
            "timestamp" => {
                self.timestamp = match value {
                    "create_time" => TimestampPolicy::CreateTime,
                    "log_append_time" => TimestampPolicy::LogAppendTime,
                    _ => return Err(SetError::Timestamp(value.to_owned())),
                }
            }
            "max_batch_bytes" => self.max_batch_bytes = num(key, value)?,
            "index_interval_bytes" => self.index_interval_bytes = num(key, value)?,
            _ => return Err(SetError::UnknownSetting(key.to_owned())),
        }
        Ok(())
    }

    /// Every setting in the string form [`set`](Self::set) reads back.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let opt = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
        let timestamp = match self.timestamp {
            TimestampPolicy::CreateTime => "create_time",
            TimestampPolicy::LogAppendTime => "log_append_time",
        };
        [
            ("durability", self.durability.to_string()),
            ("segment_bytes", self.segment_bytes.to_string()),
            ("segment_ms", self.segment_ms.to_string()),
            ("retention_ms", opt(self.retention_ms)),
            ("retention_bytes", opt(self.retention_bytes)),
            ("timestamp", timestamp.to_owned()),
            ("max_batch_bytes", self.max_batch_bytes.to_string()),
            (
                "index_interval_bytes",
                self.index_interval_bytes.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(ConfigError::SegmentBytes(self.segment_bytes));
        }
        if self.max_batch_bytes as u64 > self.segment_bytes {
            return Err(ConfigError::BatchOverSegment);
        }
        if self.segment_ms == 0 {
            return Err(ConfigError::SegmentMs);
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError::IndexInterval);
        }
        if let Durability::Interval(0) = self.durability {
            return Err(ConfigError::DurabilityInterval);
        }
        Ok(())
    }
}

/// Why [`TopicConfig::set`] refused a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("{key} must be a non-negative integer, got {value:?}")]
    NotANumber { key: String, value: String },
    #[error(transparent)]
    Durability(#[from] DurabilityParseError),
    #[error("timestamp must be create_time or log_append_time, got {0:?}")]
    Timestamp(String),
    #[error("unknown topic setting {0:?}; known: {names}", names = SETTING_NAMES.join(", "))]
    UnknownSetting(String),
}

/// Why [`TopicConfig::validate`] refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("partitions must be 1..={MAX_PARTITIONS}, got {0}")]
    Partitions(u32),
    #[error("segment_bytes must be {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {0}")]
    SegmentBytes(u64),
    #[error("max_batch_bytes must not exceed segment_bytes")]
    BatchOverSegment,
    #[error("segment_ms must be positive")]
    SegmentMs,
    #[error("index_interval_bytes must be positive")]
    IndexInterval,
    #[error("durability interval must be positive")]
    DurabilityInterval,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_prints() {
        for s in ["sync", "none", "interval:5"] {
            assert_eq!(s.parse::<Durability>().unwrap().to_string(), s);
        }
        assert_eq!(
            "interval:5ms".parse::<Durability>().unwrap(),
            Durability::Interval(5)
        );
        assert!("interval:0".parse::<Durability>().is_err());
        assert!("fsync".parse::<Durability>().is_err());
    }

    #[test]
    fn settings_round_trip_through_strings() {
        let mut cfg = TopicConfig {
            durability: Durability::Interval(9),
            retention_ms: None,
            retention_bytes: Some(77),
            timestamp: TimestampPolicy::LogAppendTime,
            ..TopicConfig::default()
        };
        let mut back = TopicConfig::default();
        for (k, v) in cfg.to_pairs() {
            back.set(&k, &v).unwrap();
        }
        assert_eq!(back, cfg);
        assert!(
            cfg.set("segment_bytes", "-1")
                .unwrap_err()
                .to_string()
                .contains("segment_bytes")
        );
        assert!(
            cfg.set("colour", "red")
                .unwrap_err()
                .to_string()
                .contains("unknown topic setting")
        );
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let cfg: TopicConfig = serde_json::from_str(r#"{"partitions":3}"#).unwrap();
        assert_eq!(cfg.partitions, 3);
        assert_eq!(cfg.durability, Durability::Sync);
        cfg.validate().unwrap();
        let json = serde_json::to_string(&TopicConfig {
            durability: Durability::Interval(7),
            ..cfg
        })
        .unwrap();
        assert!(json.contains(r#""interval":7"#), "{json}");
    }
}
