//! Building the batch buffer a function is called with: the stored record
//! batches as they are when every record in them is meant for the call,
//! and rebuilt batches (same offsets, keys, values, headers, timestamps)
//! holding only the wanted records otherwise — a group delivery may cover
//! part of a stored batch, and a failed call is retried one message at a
//! time.

use sluice_protocol::batch::{BatchBuilder, BatchIter, Record, set_base_offset};

/// A call's input: the buffer and the offset of each message in it.
#[derive(Debug, Default, Clone)]
pub struct Input {
    pub buf: Vec<u8>,
    pub offsets: Vec<u64>,
}

impl Input {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Adds the records of `chunk` (stored batches) that `wanted` accepts.
    /// Control batches are skipped.
    pub fn extend(&mut self, chunk: &[u8], mut wanted: impl FnMut(u64) -> bool) {
        for batch in BatchIter::new(chunk).flatten() {
            if batch.header().is_control() {
                continue;
            }
            let records: Vec<Record<'_>> = batch.records().flatten().collect();
            let keep: Vec<bool> = records.iter().map(|r| wanted(r.offset)).collect();
            if keep.iter().all(|k| *k) {
                self.buf.extend_from_slice(batch.as_bytes());
                self.offsets.extend(records.iter().map(|r| r.offset));
                continue;
            }
            // Runs of consecutive wanted records become batches of their own.
            let mut run: Vec<&Record<'_>> = Vec::new();
            for (r, k) in records.iter().zip(&keep) {
                let continues = run.last().is_some_and(|l| l.offset + 1 == r.offset);
                if !*k || !continues {
                    self.flush_run(&mut run);
                }
                if *k {
                    run.push(r);
                }
            }
            self.flush_run(&mut run);
        }
    }

    fn flush_run(&mut self, run: &mut Vec<&Record<'_>>) {
        let Some(first) = run.first() else { return };
        let mut b = BatchBuilder::new(first.timestamp);
        for r in run.iter() {
            let headers: Vec<(&str, Option<&[u8]>)> = r.headers().flatten().collect();
            b.push(r.timestamp, r.key, r.value, &headers);
            self.offsets.push(r.offset);
        }
        let mut bytes = b.finish().to_vec();
        set_base_offset(&mut bytes, first.offset);
        self.buf.extend_from_slice(&bytes);
        run.clear();
    }

    /// One input per message, for retrying a failed call message by
    /// message.
    pub fn split(&self) -> Vec<Input> {
        self.offsets
            .iter()
            .map(|o| {
                let mut one = Input::default();
                one.extend(&self.buf, |x| x == *o);
                one
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::BatchBuilder;

    fn stored(base: u64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for v in values {
            b.push(1_000, Some(b"k"), Some(v.as_bytes()), &[("h", Some(b"x"))]);
        }
        let mut bytes = b.finish().to_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    fn values(input: &Input) -> Vec<(u64, String)> {
        BatchIter::new(&input.buf)
            .flatten()
            .flat_map(|b| b.records().flatten().collect::<Vec<_>>())
            .map(|r| {
                assert_eq!(r.header("h"), Some(&b"x"[..]));
                (
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn whole_batches_pass_unchanged_and_parts_keep_their_offsets() {
        let mut chunk = stored(10, &["a", "b", "c", "d"]);
        chunk.extend(stored(14, &["e", "f"]));
        let mut all = Input::default();
        all.extend(&chunk, |_| true);
        assert_eq!(all.buf, chunk);
        assert_eq!(all.offsets, vec![10, 11, 12, 13, 14, 15]);

        let mut some = Input::default();
        some.extend(&chunk, |o| o != 12);
        assert_eq!(some.offsets, vec![10, 11, 13, 14, 15]);
        assert_eq!(
            values(&some),
            vec![
                (10, "a".into()),
                (11, "b".into()),
                (13, "d".into()),
                (14, "e".into()),
                (15, "f".into())
            ]
        );
        for b in BatchIter::new(&some.buf) {
            b.unwrap().verify_crc().unwrap();
        }
        let split = some.split();
        assert_eq!(split.len(), 5);
        assert_eq!(values(&split[2]), vec![(13, "d".into())]);
    }
}
