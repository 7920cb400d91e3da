//! Test-only: a handler that panics on every message whose value is `boom`
//! with a recognisable message, `boom: deliberate panic`, and acks the rest
//! (so tests can show the next batch succeeds on a fresh instance). In a component the panic is a trap;
//! the engine must report it (with that text in the guest's stderr) and
//! fail only this batch.

use sluice_guest::{Handler, Message, Outcome};

/// The text of the panic.
pub const PANIC_MESSAGE: &str = "boom: deliberate panic";

/// Panics on `boom`, acks anything else.
#[derive(Debug)]
pub struct Trap;

impl Handler for Trap {
    fn init() -> Result<Self, String> {
        Ok(Trap)
    }

    fn handle(&mut self, msg: &Message<'_>) -> Outcome {
        if msg.value() == b"boom" {
            panic!("{PANIC_MESSAGE}");
        }
        Outcome::Ack
    }
}

sluice_guest::export_handler!(Trap);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{MessageBuilder, run_handler};

    #[test]
    #[should_panic(expected = "boom: deliberate panic")]
    fn panics_with_the_message() {
        run_handler::<Trap>(&[MessageBuilder::new("boom")]);
    }

    #[test]
    fn acks_anything_else() {
        assert_eq!(
            run_handler::<Trap>(&[MessageBuilder::new("x")]),
            [Outcome::Ack]
        );
    }
}
