//! Test-only: a transform whose output is far too big. For every input it
//! returns config `output_bytes` (default 64 MiB) of output messages, in
//! values of up to 1 MiB of `x`; the engine's output limit must reject the
//! batch without running out of memory itself.
//!
//! The guest holds the outputs twice while it encodes them (the messages,
//! then the answer buffer), so it needs about twice `output_bytes` of
//! linear memory; lower `output_bytes` if the memory cap should not trip
//! first.

use sluice_guest::{Message, OutMessage, Outputs, Transform, config};

/// Output bytes per input by default.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 << 20;
/// The largest value of one output message.
pub const CHUNK: usize = 1 << 20;

/// Emits `output_bytes` per input.
#[derive(Debug)]
pub struct HugeOutput {
    output_bytes: usize,
}

impl Transform for HugeOutput {
    fn init() -> Result<Self, String> {
        let output_bytes = config::get_parsed("output_bytes")?.unwrap_or(DEFAULT_OUTPUT_BYTES);
        Ok(HugeOutput { output_bytes })
    }

    fn transform(&mut self, _msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
        let mut left = self.output_bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            out.emit(OutMessage::new(vec![b'x'; n]));
            left -= n;
        }
        Ok(())
    }
}

sluice_guest::export_transform!(HugeOutput);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, MessageBuilder, run_transform};

    #[test]
    fn emits_the_configured_size() {
        testing::set_config("output_bytes", (2 * CHUNK + 10).to_string());
        let results = run_transform::<HugeOutput>(&[MessageBuilder::new("x")]);
        let sizes: Vec<usize> = results[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|o| o.message.value.len())
            .collect();
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
    }

    #[test]
    fn defaults_to_64_mib() {
        assert_eq!(HugeOutput::init().unwrap().output_bytes, 64 << 20);
    }
}
