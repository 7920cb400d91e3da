//! Test-only: the cheapest possible filter, keeping every message. The
//! engine's per-message-cost benchmark uses it: what it measures is the
//! call, the batch parsing and the answer, not the function.

use sluice_guest::{Filter, Message};

/// Keeps every message.
#[derive(Debug)]
pub struct KeepAll;

impl Filter for KeepAll {
    fn init() -> Result<Self, String> {
        Ok(KeepAll)
    }

    fn filter(&mut self, _msg: &Message<'_>) -> bool {
        true
    }
}

sluice_guest::export_filter!(KeepAll);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{MessageBuilder, run_filter};

    #[test]
    fn keeps_everything() {
        let msgs: Vec<_> = (0..5).map(|i| MessageBuilder::new(vec![i])).collect();
        assert_eq!(run_filter::<KeepAll>(&msgs), [true; 5]);
    }
}
