//! The batch-shaped side of the exports: split the input buffer into
//! messages, call the author's method for each, encode the answer.
//!
//! The export macros and [`crate::testing`]'s `run_*` helpers share this
//! code, so native tests exercise exactly what the component runs.

use std::cell::RefCell;
use std::thread::LocalKey;

use sluice_protocol::batch::BatchIter;
use sluice_protocol::transform_output::OutputWriter;

use crate::bindings::{BatchContext, WitOutcome};
use crate::message::Source;
use crate::{Filter, Handler, Message, Outcome, Outputs, Transform};

/// Calls `f` with each message of `batch` (one or more concatenated record
/// batches), skipping control batches. CRCs are not checked: the broker did
/// that when the batches were produced.
///
/// # Panics
/// If the buffer does not parse: the broker only passes batches it
/// validated, so this is a broker bug, and a trap is the clearest report.
pub(crate) fn for_each_message<'a>(
    source: Source<'a>,
    batch: &'a [u8],
    mut f: impl FnMut(Message<'a>),
) {
    for view in BatchIter::new(batch) {
        let view = view.unwrap_or_else(|e| {
            panic!("sluice-guest: the input buffer is not a sequence of record batches: {e}")
        });
        let header = view.header();
        if header.is_control() {
            continue;
        }
        if header.compression() != 0 {
            panic!(
                "sluice-guest: the batch at offset {} is compressed (codec {}); functions read uncompressed batches",
                header.base_offset,
                header.compression()
            );
        }
        for record in view.records() {
            let record = record.unwrap_or_else(|e| {
                panic!(
                    "sluice-guest: a record in the batch at offset {} does not parse: {e}",
                    header.base_offset
                )
            });
            f(Message::new(source, record));
        }
    }
}

/// Answers a filter call: one byte per message, 1 keep, 0 skip.
pub(crate) fn filter_batch<T: Filter>(
    instance: &mut T,
    source: Source<'_>,
    batch: &[u8],
) -> Vec<u8> {
    let mut answer = Vec::with_capacity(estimate_messages(batch));
    for_each_message(source, batch, |msg| {
        answer.push(u8::from(instance.filter(&msg)))
    });
    answer
}

/// Answers a transform call: the transform output buffer.
pub(crate) fn transform_batch<T: Transform>(
    instance: &mut T,
    source: Source<'_>,
    batch: &[u8],
) -> Vec<u8> {
    let mut writer = OutputWriter::with_capacity(batch.len());
    let mut outputs = Outputs::new();
    let mut index: u32 = 0;
    for_each_message(source, batch, |msg| {
        outputs.clear();
        match instance.transform(&msg, &mut outputs) {
            Ok(()) => write_outputs(&mut writer, index, &outputs),
            Err(reason) => writer.failure(index, &reason),
        }
        index += 1;
    });
    writer.finish()
}

fn write_outputs(writer: &mut OutputWriter, input: u32, outputs: &Outputs) {
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    for output in outputs.as_slice() {
        let msg = &output.message;
        headers.clear();
        headers.extend(msg.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        writer.message(
            input,
            output.topic.as_deref().unwrap_or(""),
            msg.key.as_deref(),
            &msg.value,
            &headers,
        );
    }
}

/// Answers a handler call: one outcome per message.
pub(crate) fn handler_batch<T: Handler>(
    instance: &mut T,
    source: Source<'_>,
    batch: &[u8],
) -> Vec<Outcome> {
    let mut answer = Vec::with_capacity(estimate_messages(batch));
    for_each_message(source, batch, |msg| answer.push(instance.handle(&msg)));
    answer
}

/// The record count of the first batch: exact for the usual single-batch
/// call, a fair start otherwise.
fn estimate_messages(batch: &[u8]) -> usize {
    sluice_protocol::batch::BatchHeader::parse(batch)
        .map(|h| h.record_count as usize)
        .unwrap_or(0)
}

fn source(context: &BatchContext) -> Source<'_> {
    Source {
        topic: &context.topic,
        partition: context.partition,
        group: context.group.as_deref(),
    }
}

type Slot<T> = LocalKey<RefCell<Option<T>>>;

/// Runs `f` on the component's instance, creating it on first use.
fn with_instance<T, R>(
    slot: &'static Slot<T>,
    init: fn() -> Result<T, String>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        let instance = guard.get_or_insert_with(|| init_or_panic(init));
        f(instance)
    })
}

pub(crate) fn init_or_panic<T>(init: fn() -> Result<T, String>) -> T {
    init().unwrap_or_else(|reason| {
        panic!(
            "sluice function init failed ({}): {reason}",
            std::any::type_name::<T>()
        )
    })
}

/// The `filter` export of [`export_filter!`](crate::export_filter).
pub fn filter_export<T: Filter>(
    slot: &'static Slot<T>,
    context: &BatchContext,
    batch: &[u8],
) -> Vec<u8> {
    with_instance(slot, T::init, |f| filter_batch(f, source(context), batch))
}

/// The `transform` export of [`export_transform!`](crate::export_transform).
pub fn transform_export<T: Transform>(
    slot: &'static Slot<T>,
    context: &BatchContext,
    batch: &[u8],
) -> Vec<u8> {
    with_instance(slot, T::init, |t| {
        transform_batch(t, source(context), batch)
    })
}

/// The `handle` export of [`export_handler!`](crate::export_handler).
pub fn handler_export<T: Handler>(
    slot: &'static Slot<T>,
    context: &BatchContext,
    batch: &[u8],
) -> Vec<WitOutcome> {
    with_instance(slot, T::init, |h| {
        handler_batch(h, source(context), batch)
            .into_iter()
            .map(to_wit)
            .collect()
    })
}

fn to_wit(outcome: Outcome) -> WitOutcome {
    match outcome {
        Outcome::Ack => WitOutcome::Ack,
        Outcome::Retry { after } => {
            WitOutcome::Retry(after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        }
        Outcome::DeadLetter(reason) => WitOutcome::DeadLetter(reason),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use sluice_protocol::batch::{BatchBuilder, set_base_offset};
    use sluice_protocol::transform_output::{OutputEntry, OutputReader};

    use super::*;
    use crate::OutMessage;

    const SOURCE: Source<'static> = Source {
        topic: "t",
        partition: 1,
        group: Some("g"),
    };

    /// One batch at `base` with one record per value.
    fn batch(base: u64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for v in values {
            b.push(
                1_000,
                None,
                Some(v.as_bytes()),
                &[("sluice.tag", Some(b"x"))],
            );
        }
        let mut bytes = b.finish().to_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    fn control_batch(base: u64) -> Vec<u8> {
        let mut bytes = batch(base, &["commit marker"]);
        bytes[22] |= 0x20; // attributes: control bit (CRCs are not checked)
        bytes
    }

    /// Three batches: two records, a control batch, one record.
    fn input() -> Vec<u8> {
        let mut all = batch(10, &["a", "bb"]);
        all.extend(control_batch(12));
        all.extend(batch(13, &["ccc"]));
        all
    }

    struct Long;
    impl Filter for Long {
        fn init() -> Result<Self, String> {
            Ok(Long)
        }
        fn filter(&mut self, msg: &Message<'_>) -> bool {
            msg.value().len() > 1
        }
    }

    #[test]
    fn reads_concatenated_batches_and_skips_control_batches() {
        let mut seen = Vec::new();
        for_each_message(SOURCE, &input(), |m| {
            seen.push((
                m.offset(),
                m.value_str().unwrap().to_owned(),
                m.has_tag("x"),
            ))
        });
        assert_eq!(
            seen,
            [
                (10, "a".to_owned(), true),
                (11, "bb".to_owned(), true),
                (13, "ccc".to_owned(), true)
            ]
        );
        assert_eq!(filter_batch(&mut Long, SOURCE, &input()), [0, 1, 1]);
        assert!(filter_batch(&mut Long, SOURCE, &[]).is_empty());
    }

    struct FailOnB;
    impl Transform for FailOnB {
        fn init() -> Result<Self, String> {
            Ok(FailOnB)
        }
        fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
            out.emit(OutMessage::from_input(msg));
            out.emit_to("copies", OutMessage::new(msg.value()).key("k"));
            if msg.value() == b"bb" {
                return Err(format!("bad value at {}", msg.offset()));
            }
            Ok(())
        }
    }

    #[test]
    fn transform_failures_discard_that_inputs_outputs() {
        let answer = transform_batch(&mut FailOnB, SOURCE, &input());
        let entries: Vec<_> = OutputReader::new(&answer)
            .collect::<Result<_, _>>()
            .unwrap();
        let summary: Vec<String> = entries
            .iter()
            .map(|e| match e {
                OutputEntry::Message {
                    input,
                    topic,
                    value,
                    headers,
                    ..
                } => format!(
                    "{input} msg {topic:?} {} {}",
                    String::from_utf8_lossy(value),
                    headers.len()
                ),
                OutputEntry::Failure { input, reason } => format!("{input} failed {reason}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "0 msg \"\" a 1",
                "0 msg \"copies\" a 0",
                "1 failed bad value at 11",
                "2 msg \"\" ccc 1",
                "2 msg \"copies\" ccc 0",
            ]
        );
    }

    struct Mixed;
    impl Handler for Mixed {
        fn init() -> Result<Self, String> {
            Ok(Mixed)
        }
        fn handle(&mut self, msg: &Message<'_>) -> Outcome {
            match msg.value().len() {
                1 => Outcome::Ack,
                2 => Outcome::retry_after(Duration::from_micros(1_500_900)),
                _ => Outcome::dead_letter("too long"),
            }
        }
    }

    #[test]
    fn handler_outcomes_map_to_wit() {
        let outcomes: Vec<WitOutcome> = handler_batch(&mut Mixed, SOURCE, &input())
            .into_iter()
            .chain([Outcome::retry()])
            .map(to_wit)
            .collect();
        assert!(matches!(outcomes[0], WitOutcome::Ack));
        assert!(matches!(outcomes[1], WitOutcome::Retry(Some(1500))));
        assert!(matches!(&outcomes[2], WitOutcome::DeadLetter(r) if r == "too long"));
        assert!(matches!(outcomes[3], WitOutcome::Retry(None)));
    }

    thread_local! {
        static INITS: Cell<u32> = const { Cell::new(0) };
        static COUNTED: RefCell<Option<Counted>> = const { RefCell::new(None) };
        static BROKEN: RefCell<Option<Broken>> = const { RefCell::new(None) };
    }

    struct Counted;
    impl Filter for Counted {
        fn init() -> Result<Self, String> {
            INITS.with(|n| n.set(n.get() + 1));
            Ok(Counted)
        }
        fn filter(&mut self, _: &Message<'_>) -> bool {
            true
        }
    }

    fn context() -> BatchContext {
        BatchContext {
            topic: "t".into(),
            partition: 0,
            group: None,
        }
    }

    #[test]
    fn the_instance_is_created_once_and_reused() {
        assert_eq!(filter_export(&COUNTED, &context(), &input()), [1, 1, 1]);
        assert_eq!(filter_export(&COUNTED, &context(), &batch(0, &["z"])), [1]);
        assert_eq!(INITS.with(Cell::get), 1);
    }

    struct Broken;
    impl Filter for Broken {
        fn init() -> Result<Self, String> {
            Err("missing config parameter `tags`".into())
        }
        fn filter(&mut self, _: &Message<'_>) -> bool {
            true
        }
    }

    #[test]
    #[should_panic(expected = "sluice function init failed")]
    fn a_failing_init_panics_with_its_reason() {
        filter_export(&BROKEN, &context(), &input());
    }

    #[test]
    #[should_panic(expected = "the input buffer is not a sequence of record batches")]
    fn a_truncated_buffer_panics() {
        let bytes = input();
        filter_batch(&mut Long, SOURCE, &bytes[..bytes.len() - 2]);
    }

    #[test]
    #[should_panic(expected = "is compressed")]
    fn a_compressed_batch_panics() {
        let mut bytes = batch(0, &["a"]);
        bytes[22] |= 1;
        filter_batch(&mut Long, SOURCE, &bytes);
    }
}
