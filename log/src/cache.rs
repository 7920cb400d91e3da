//! A bounded in-memory copy of a partition's newest batches, so consumers
//! that keep up are served from memory and never touch the disk.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;

#[derive(Debug)]
struct Cached {
    base_offset: u64,
    next_offset: u64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    batches: VecDeque<Cached>,
    bytes: usize,
}

/// Newest batches of one partition, at most `max_bytes` of them (the newest
/// batch is kept even if larger, so a reader right behind the writer hits).
#[derive(Debug)]
pub(crate) struct TailCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl TailCache {
    pub fn new(max_bytes: usize) -> Self {
        TailCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Adds the batch just appended; batches must arrive in offset order.
    pub fn push(&self, base_offset: u64, next_offset: u64, bytes: Bytes) {
        if self.max_bytes == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner
            .batches
            .back()
            .is_some_and(|b| b.next_offset != base_offset)
        {
            inner.batches.clear();
            inner.bytes = 0;
        }
        inner.bytes += bytes.len();
        inner.batches.push_back(Cached {
            base_offset,
            next_offset,
            bytes,
        });
        while inner.bytes > self.max_bytes && inner.batches.len() > 1 {
            let evicted = inner.batches.pop_front().expect("len > 1");
            inner.bytes -= evicted.bytes.len();
        }
    }

    /// Whole batches from the one containing `offset`, below `high_watermark`,
    /// about `max_bytes` (at least one). `None` when `offset` is older than
    /// the cache.
    pub fn read(&self, offset: u64, high_watermark: u64, max_bytes: usize) -> Option<Vec<Bytes>> {
        let inner = self.inner.lock();
        let first = inner.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = inner.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0;
        for b in inner.batches.range(start..) {
            if b.base_offset >= high_watermark
                || (!out.is_empty() && total + b.bytes.len() > max_bytes)
            {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn serves_from_the_batch_containing_the_offset() {
        let c = TailCache::new(1000);
        c.push(0, 10, batch(100));
        c.push(10, 20, batch(100));
        c.push(20, 30, batch(100));
        assert_eq!(c.read(15, 30, 1000).unwrap().len(), 2);
        assert_eq!(c.read(0, 30, 150).unwrap().len(), 1);
        assert_eq!(
            c.read(0, 20, 1000).unwrap().len(),
            2,
            "stops at the high watermark"
        );
    }

    #[test]
    fn evicts_oldest_and_misses_below() {
        let c = TailCache::new(250);
        for i in 0..5u64 {
            c.push(i * 10, i * 10 + 10, batch(100));
        }
        assert!(c.read(5, 50, 1000).is_none());
        assert_eq!(c.read(30, 50, 1000).unwrap().len(), 2);
    }

    #[test]
    fn a_gap_resets_the_cache_and_zero_disables_it() {
        let c = TailCache::new(1000);
        c.push(0, 10, batch(10));
        c.push(50, 60, batch(10));
        assert!(c.read(0, 60, 100).is_none());
        let off = TailCache::new(0);
        off.push(0, 1, batch(1));
        assert!(off.read(0, 1, 10).is_none());
    }
}
