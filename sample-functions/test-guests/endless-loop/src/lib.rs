//! Test-only: a filter that never returns. The engine's per-call deadline
//! (epoch interruption) must stop it and fail only this batch.

use sluice_guest::{Filter, Message};

/// Spins forever on every message.
#[derive(Debug)]
pub struct EndlessLoop;

impl Filter for EndlessLoop {
    fn init() -> Result<Self, String> {
        Ok(EndlessLoop)
    }

    fn filter(&mut self, _msg: &Message<'_>) -> bool {
        let mut spins = 0u64;
        loop {
            // black_box keeps the optimiser from reasoning about the loop.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

sluice_guest::export_filter!(EndlessLoop);
