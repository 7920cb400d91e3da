//! The recovery point of a partition: how far its active segment is known to
//! be good, so that opening a partition scans only what was written since.
//!
//! The file `recovery-point` holds, big-endian: magic `SLCP`, version 1,
//! segment base offset u64, position u64, next offset u64, offset-index
//! entries u32, time-index entries u32, max timestamp i64, first timestamp
//! i64, and a CRC-32C of everything before it. It is written (temp file,
//! fsync, rename) only after the log bytes and index entries it vouches for
//! have been synced, so every byte before `position` is durable. A missing,
//! torn or stale file only makes recovery scan more, never less.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"SLCP";
const VERSION: u8 = 1;
const LEN: usize = 4 + 1 + 8 * 3 + 4 * 2 + 8 * 2 + 4;
pub(crate) const FILE_NAME: &str = "recovery-point";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
    pub index_entries: u32,
    pub time_entries: u32,
    pub max_timestamp: i64,
    /// Timestamp of the segment's first batch (drives roll by age).
    pub first_timestamp: i64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5..13].copy_from_slice(&self.segment_base.to_be_bytes());
        b[13..21].copy_from_slice(&self.position.to_be_bytes());
        b[21..29].copy_from_slice(&self.next_offset.to_be_bytes());
        b[29..33].copy_from_slice(&self.index_entries.to_be_bytes());
        b[33..37].copy_from_slice(&self.time_entries.to_be_bytes());
        b[37..45].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[45..53].copy_from_slice(&self.first_timestamp.to_be_bytes());
        let crc = crc32c::crc32c(&b[..LEN - 4]);
        b[LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN || &b[..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        let crc = u32::from_be_bytes(b[LEN - 4..].try_into().ok()?);
        if crc != crc32c::crc32c(&b[..LEN - 4]) {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Checkpoint {
            segment_base: u64_at(5),
            position: u64_at(13),
            next_offset: u64_at(21),
            index_entries: u32_at(29),
            time_entries: u32_at(33),
            max_timestamp: u64_at(37) as i64,
            first_timestamp: u64_at(45) as i64,
        })
    }

    /// Reads the partition's checkpoint; `None` if missing or damaged.
    pub fn load(dir: &Path) -> Option<Checkpoint> {
        let bytes = fs::read(dir.join(FILE_NAME)).ok()?;
        let cp = Checkpoint::decode(&bytes);
        if cp.is_none() {
            tracing::warn!(dir = %dir.display(), "recovery point damaged; scanning the active segment");
        }
        cp
    }

    /// Replaces the partition's checkpoint atomically.
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_data()?;
        fs::rename(&tmp, dir.join(FILE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint {
            segment_base: 10,
            position: 4096,
            next_offset: 77,
            index_entries: 3,
            time_entries: 3,
            max_timestamp: -5,
            first_timestamp: 1234,
        };
        cp.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()), Some(cp));
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(Checkpoint::load(dir.path()), None);
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(Checkpoint::load(dir.path()), None);
    }
}
