//! The store opened directly, below the network: for the tests of the
//! store, the scheduler and `sluice dev --check`.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_broker::clock::Clock;
use sluice_broker::log::LogOptions;
use sluice_broker::store::Store;
use sluice_protocol::batch::BatchBuilder;

/// The store in `dir` with default options, reading time from `clock`.
pub fn open_store(dir: &Path, clock: Arc<dyn Clock>) -> Store {
    Store::open(
        dir,
        LogOptions::default(),
        clock,
        &sluice_broker::keyspaces(),
    )
    .unwrap()
}

/// A batch of records with these values (no keys, no headers).
pub fn batch(values: &[&[u8]]) -> BytesMut {
    let mut b = BatchBuilder::new(0);
    for v in values {
        b.push(0, None, Some(v), &[]);
    }
    BytesMut::from(&b.finish()[..])
}
