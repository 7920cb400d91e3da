//! Test-only: a filter that allocates until its memory runs out. The
//! engine's memory cap must stop it (the failed allocation aborts, which
//! traps) and fail only this batch.

use sluice_guest::{Filter, Message};

/// Keeps every MiB it allocates.
#[derive(Debug, Default)]
pub struct MemoryBomb {
    hoard: Vec<Vec<u8>>,
}

/// Bytes per allocation.
const CHUNK: usize = 1 << 20;

impl Filter for MemoryBomb {
    fn init() -> Result<Self, String> {
        Ok(MemoryBomb::default())
    }

    fn filter(&mut self, _msg: &Message<'_>) -> bool {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            // Touch every page so the memory is really used on any host.
            for page in chunk.chunks_mut(4096) {
                page[0] = 1;
            }
            self.hoard.push(std::hint::black_box(chunk));
        }
    }
}

sluice_guest::export_filter!(MemoryBomb);
