//! How a group's settings are stored: their own versioned encoding, written
//! field by field, so that a change of the wire format can never make
//! stored groups unreadable (and the other way round).
//!
//! Version 1: `u8 1`, topic (string), mode (`u8`: 0 clustering,
//! 1 broadcast), ordered (`u8`), tag filter (string), start (`i64`, an
//! offset spec), ack timeout ms (`u32`), max attempts (`u16`), retry ladder
//! (`u32` count, then a `u32` of ms each), max in flight (`u32`). Strings are a
//! `u16` length and UTF-8, integers big-endian.
//!
//! Earlier brokers stored the wire encoding of `GroupSettings` with no
//! version byte. It begins with the topic name's `u16` length, whose high
//! byte is 0 (topic names are at most 249 bytes), so a first byte of 0
//! marks it and it is still read.

use bytes::Bytes;
use sluice_protocol::codec::{DecodeError, Reader, Writer};
use sluice_protocol::ops::{GroupMode, GroupSettings, OffsetSpec};

const V1: u8 = 1;

/// Why stored settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error(
        "stored group settings have version {0}; this broker reads versions 0 and 1 (run a newer broker)"
    )]
    Version(u8),
    #[error("stored group settings are damaged: {0}")]
    Damaged(#[from] DecodeError),
}

pub(super) fn encode(s: &GroupSettings) -> Bytes {
    let mut w = Writer::with_capacity(64 + s.topic.len() + s.tag_filter.len());
    w.u8(V1)
        .string(&s.topic)
        .u8(match s.mode {
            GroupMode::Clustering => 0,
            GroupMode::Broadcast => 1,
        })
        .bool(s.ordered)
        .string(&s.tag_filter)
        .i64(s.start.to_i64())
        .u32(s.ack_timeout_ms)
        .u16(s.max_attempts)
        .count(s.retry_ladder_ms.len());
    for step in &s.retry_ladder_ms {
        w.u32(*step);
    }
    w.u32(s.max_in_flight);
    w.finish()
}

pub(super) fn decode(raw: &[u8]) -> Result<GroupSettings, StoredError> {
    let mut r = Reader::new(Bytes::copy_from_slice(raw));
    let settings = match raw.first() {
        Some(0) => GroupSettings::read(&mut r)?,
        Some(&V1) => {
            r.u8("version")?;
            read_v1(&mut r)?
        }
        Some(&v) => return Err(StoredError::Version(v)),
        None => {
            return Err(DecodeError::Truncated {
                what: "version",
                needed: 1,
            }
            .into());
        }
    };
    r.finish()?;
    Ok(settings)
}

fn read_v1(r: &mut Reader) -> Result<GroupSettings, DecodeError> {
    let topic = r.string("topic")?;
    let mode = match r.u8("mode")? {
        0 => GroupMode::Clustering,
        1 => GroupMode::Broadcast,
        m => {
            return Err(DecodeError::InvalidValue {
                what: "group mode",
                value: m.into(),
            });
        }
    };
    let ordered = r.bool("ordered")?;
    let tag_filter = r.string("tag filter")?;
    let start = OffsetSpec::from_i64(r.i64("start")?)?;
    let ack_timeout_ms = r.u32("ack timeout")?;
    let max_attempts = r.u16("max attempts")?;
    let retry_ladder_ms = r.array("retry ladder", 4, |r| r.u32("retry ladder step"))?;
    let max_in_flight = r.u32("max in flight")?;
    Ok(GroupSettings {
        topic,
        mode,
        ordered,
        tag_filter,
        start,
        ack_timeout_ms,
        max_attempts,
        retry_ladder_ms,
        max_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupSettings {
        GroupSettings {
            topic: "orders".into(),
            mode: GroupMode::Broadcast,
            ordered: true,
            tag_filter: "a AND NOT b".into(),
            start: OffsetSpec::Timestamp(1_700_000_000_000),
            ack_timeout_ms: 1234,
            max_attempts: 7,
            retry_ladder_ms: vec![10, 20, 30],
            max_in_flight: 99,
        }
    }

    #[test]
    fn settings_round_trip_through_version_1() {
        let bytes = encode(&sample());
        assert_eq!(bytes[0], V1);
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn settings_stored_by_earlier_brokers_still_read() {
        let mut w = Writer::new();
        sample().write(&mut w);
        let legacy = w.finish();
        assert_eq!(legacy[0], 0, "the topic length's high byte");
        assert_eq!(decode(&legacy).unwrap(), sample());
    }

    #[test]
    fn a_newer_version_or_a_torn_record_is_an_error_not_a_guess() {
        let mut bytes = encode(&sample()).to_vec();
        bytes[0] = 9;
        let e = decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("version"), "{e}");
        let bytes = encode(&sample());
        assert!(decode(&bytes[..bytes.len() - 2]).is_err());
    }
}
