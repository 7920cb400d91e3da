//! Copies of failed messages: the retry copy (scheduled into the group's
//! retry topic), the dead letter, and the re-driven dead letter.
//!
//! A copy keeps the message's key, value, timestamp, id, tags and
//! properties, and says where it came from (`sluice.origin-*`, set once,
//! on the first copy, so a retry of a retry still names the original) and
//! how many deliveries failed (`sluice.attempt`).

use bytes::Bytes;
use sluice_protocol::batch::{BatchIter, Record};
use sluice_protocol::headers;
use sluice_protocol::ops::DelayedRecord;

use crate::log::{LogError, Partition};

/// Where a message was first consumed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// Headers a copy sets itself; those on the source are dropped.
fn set_by_copy(name: &str) -> bool {
    matches!(
        name,
        headers::ATTEMPT
            | headers::DEAD_REASON
            | headers::DELAY_ID
            | headers::DUE_AT
            | headers::LOOP_ITERATION
    )
}

fn is_origin(name: &str) -> bool {
    matches!(
        name,
        headers::ORIGIN_TOPIC | headers::ORIGIN_PARTITION | headers::ORIGIN_OFFSET
    )
}

/// Reads the record at `offset` as a record to copy.
pub fn read_record(partition: &Partition, offset: u64) -> Result<DelayedRecord, LogError> {
    let read = partition.read(offset, 1)?;
    for chunk in &read.chunks {
        for batch in BatchIter::new(chunk).flatten() {
            for r in batch.records().flatten() {
                if r.offset == offset {
                    return Ok(owned(&r));
                }
            }
        }
    }
    Err(LogError::OffsetOutOfRange {
        offset,
        start: read.log_start_offset,
        end: read.high_watermark,
    })
}

/// A record copied out of the buffer it was read from.
pub fn owned(r: &Record<'_>) -> DelayedRecord {
    DelayedRecord {
        key: r.key.map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(r.value.unwrap_or_default()),
        headers: r
            .headers()
            .flatten()
            .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v.unwrap_or_default())))
            .collect(),
        timestamp: r.timestamp,
    }
}

/// The copy to retry or dead-letter: origin headers kept if the source is
/// itself a copy, set from `origin` otherwise; `attempts` failed so far.
pub fn failed_copy(
    source: DelayedRecord,
    origin: &Origin,
    attempts: u16,
    dead_reason: Option<&str>,
) -> DelayedRecord {
    let has_origin = source.headers.iter().any(|(k, _)| is_origin(k));
    let mut out: Vec<(String, Bytes)> = source
        .headers
        .into_iter()
        .filter(|(k, _)| !set_by_copy(k))
        .collect();
    if !has_origin {
        out.push((
            headers::ORIGIN_TOPIC.into(),
            Bytes::copy_from_slice(origin.topic.as_bytes()),
        ));
        out.push((
            headers::ORIGIN_PARTITION.into(),
            Bytes::copy_from_slice(&origin.partition.to_be_bytes()),
        ));
        out.push((
            headers::ORIGIN_OFFSET.into(),
            Bytes::copy_from_slice(&origin.offset.to_be_bytes()),
        ));
    }
    out.push((
        headers::ATTEMPT.into(),
        Bytes::copy_from_slice(&u32::from(attempts).to_be_bytes()),
    ));
    if let Some(reason) = dead_reason {
        out.push((
            headers::DEAD_REASON.into(),
            Bytes::copy_from_slice(reason.as_bytes()),
        ));
    }
    DelayedRecord {
        headers: out,
        ..source
    }
}

/// A dead letter made deliverable again: attempts and reason dropped,
/// origin kept.
pub fn redriven_copy(source: DelayedRecord) -> DelayedRecord {
    DelayedRecord {
        headers: source
            .headers
            .into_iter()
            .filter(|(k, _)| !set_by_copy(k))
            .collect(),
        ..source
    }
}

/// Failed deliveries recorded on a copy (0 for an original).
pub fn attempts_of(attempt_header: Option<&[u8]>) -> u16 {
    attempt_header
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map_or(0, |b| u32::from_be_bytes(b).min(u16::MAX as u32) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(headers: Vec<(&str, &[u8])>) -> DelayedRecord {
        DelayedRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v)))
                .collect(),
            timestamp: 5,
        }
    }

    fn get<'a>(r: &'a DelayedRecord, name: &str) -> Vec<&'a [u8]> {
        r.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
            .collect()
    }

    #[test]
    fn a_copy_of_a_copy_keeps_the_first_origin_and_one_attempt_count() {
        let origin = Origin {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
        };
        let first = failed_copy(
            rec(vec![(headers::TAG, b"vip"), ("p", b"1")]),
            &origin,
            1,
            None,
        );
        let elsewhere = Origin {
            topic: "sluice.retry.g".into(),
            partition: 0,
            offset: 7,
        };
        let second = failed_copy(first, &elsewhere, 2, Some("boom"));
        assert_eq!(get(&second, headers::ORIGIN_TOPIC), vec![&b"orders"[..]]);
        assert_eq!(
            get(&second, headers::ORIGIN_OFFSET),
            vec![&42u64.to_be_bytes()[..]]
        );
        assert_eq!(
            get(&second, headers::ATTEMPT),
            vec![&2u32.to_be_bytes()[..]]
        );
        assert_eq!(get(&second, headers::DEAD_REASON), vec![&b"boom"[..]]);
        assert_eq!(get(&second, headers::TAG), vec![&b"vip"[..]]);
        assert_eq!(get(&second, "p"), vec![&b"1"[..]]);
        assert_eq!(
            attempts_of(get(&second, headers::ATTEMPT).first().copied()),
            2
        );

        let again = redriven_copy(second);
        assert!(get(&again, headers::ATTEMPT).is_empty());
        assert!(get(&again, headers::DEAD_REASON).is_empty());
        assert_eq!(get(&again, headers::ORIGIN_TOPIC), vec![&b"orders"[..]]);
    }

    #[test]
    fn attempts_of_tolerates_garbage() {
        assert_eq!(attempts_of(None), 0);
        assert_eq!(attempts_of(Some(b"xy")), 0);
        assert_eq!(attempts_of(Some(&u32::MAX.to_be_bytes())), u16::MAX);
    }
}
