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

impl FromStr for Durability {
    type Err = String;

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
                    .ok_or_else(|| {
                        format!("bad interval in durability {s:?}: want interval:<ms> with ms > 0")
                    }),
                None => Err(format!(
                    "unknown durability {s:?}: want sync, none or interval:<ms>"
                )),
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

impl TopicConfig {
    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.partitions > 100_000 {
            return Err(format!(
                "partitions must be 1..=100000, got {}",
                self.partitions
            ));
        }
        if self.segment_bytes < 1024 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(format!(
                "segment_bytes must be 1024..={MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes as u64 > self.segment_bytes {
            return Err("max_batch_bytes must not exceed segment_bytes".into());
        }
        if self.segment_ms == 0 {
            return Err("segment_ms must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if let Durability::Interval(0) = self.durability {
            return Err("durability interval must be positive".into());
        }
        Ok(())
    }
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
