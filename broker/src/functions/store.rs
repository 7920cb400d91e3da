//! Where deployments live: component files by content hash in the data
//! directory, and three metadata column families.
//!
//! | CF               | key                               | value                                   |
//! |------------------|-----------------------------------|-----------------------------------------|
//! | `functions`      | `a/` name                         | `1` u32 active version                  |
//! |                  | `v/` name `/` u32 BE version      | `1` [`VersionRecord`]                   |
//! | `function_kv`    | name `\0` key                     | the value                               |
//! | `function_state` | `t/` name `/` u32 BE partition    | `1` [`TaskState`] (transform progress)  |
//! |                  | `p/` name `/` u32 BE partition    | `1` pending output batches              |
//! |                  | `d/` name `/` guest delay id      | `1` u64 scheduler delay id              |
//!
//! Function names are `[A-Za-z0-9._-]`, so `/` and `\0` end them and one
//! function's keys never prefix another's. Values are written with the
//! protocol codec (the manifest travels in the same encoding).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::codec::{DecodeError, Reader, Writer};
use sluice_protocol::ops::Payload;
use sluice_protocol::ops::function::FunctionManifest;

use crate::store::Store;
use sluice_meta::{Batch, Keyspace, MetaError, Table, WriteMode, prefix_successor};

/// Function name and version → deployed version; name → active version.
pub const CF_FUNCTIONS: Keyspace = Keyspace::plain("functions");
/// Function name and key → a guest's kv value.
pub const CF_FUNCTION_KV: Keyspace = Keyspace::plain("function_kv");
/// Transform task state, pending outputs, guest delay ids.
pub const CF_FUNCTION_STATE: Keyspace = Keyspace::plain("function_state");

/// The function registry's column families, for the metadata store to open.
pub const KEYSPACES: &[Keyspace] = &[CF_FUNCTIONS, CF_FUNCTION_KV, CF_FUNCTION_STATE];

const V1: u8 = 1;

/// One deployed version of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub version: u32,
    pub manifest: FunctionManifest,
    /// SHA-256 of the component, hex: its file name.
    pub digest: String,
    pub size: u64,
    pub deployed_at_ms: i64,
}

/// A transform task's progress on one input partition: committed with
/// its outputs in one write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskState {
    /// The next input offset to transform.
    pub position: u64,
    /// The idempotent producer id its outputs carry.
    pub producer_id: i64,
    /// Next producer sequence per output (topic, partition).
    pub sequences: Vec<(String, u32, i32)>,
}

/// An output batch committed but perhaps not yet appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    pub topic: String,
    pub partition: u32,
    /// The partition's high watermark when the batch was committed: a
    /// search for it after a crash starts here.
    pub search_from: u64,
    pub batch: Bytes,
}

fn corrupt(what: &str, e: DecodeError) -> MetaError {
    MetaError::corrupt(CF_FUNCTIONS.name, format!("{what}: {e}"))
}

fn versioned(mut bytes: &[u8], what: &str) -> Result<Reader, MetaError> {
    match bytes.split_first() {
        Some((&V1, rest)) => {
            bytes = rest;
            Ok(Reader::new(Bytes::copy_from_slice(bytes)))
        }
        _ => Err(MetaError::corrupt(
            CF_FUNCTIONS.name,
            format!("{what}: unknown value version"),
        )),
    }
}

fn name_key(prefix: &str, name: &str) -> Vec<u8> {
    format!("{prefix}/{name}/").into_bytes()
}

fn partition_key(prefix: &str, name: &str, partition: u32) -> Vec<u8> {
    let mut k = name_key(prefix, name);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The deployments' persistent side.
#[derive(Debug, Clone)]
pub struct FunctionStore {
    store: Arc<Store>,
    components: PathBuf,
}

impl FunctionStore {
    pub fn new(store: Arc<Store>) -> FunctionStore {
        let components = store.dir().join("functions").join("components");
        FunctionStore { store, components }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Where compiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.store.dir().join("functions").join("compiled")
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.components.join(format!("{digest}.wasm"))
    }

    /// Stores a component under its digest (durably: written to a temp
    /// file, synced, renamed). Returns whether the file is new.
    pub fn put_component(&self, digest: &str, bytes: &[u8]) -> std::io::Result<bool> {
        use std::io::Write;
        let path = self.component_path(digest);
        if path.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.components)?;
        let tmp = self.components.join(format!(".{digest}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.components)?;
        Ok(true)
    }

    pub fn component(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.component_path(digest))
    }

    pub fn remove_component(&self, digest: &str) {
        let _ = std::fs::remove_file(self.component_path(digest));
    }

    // ------------------------------------------------------------ registry

    /// Writes a version and makes it the active one, in one synced write.
    pub fn put_version(&self, name: &str, record: &VersionRecord) -> Result<(), MetaError> {
        let meta = self.store.meta();
        let cf = meta.table(&CF_FUNCTIONS)?;
        let mut batch = Batch::default();
        let mut w = Writer::new();
        w.u32(record.version)
            .string(&record.digest)
            .u64(record.size)
            .i64(record.deployed_at_ms);
        let mut value = vec![V1];
        value.extend_from_slice(&w.finish());
        value.extend_from_slice(&record.manifest.encode());
        batch.put(&cf, version_key(name, record.version), value);
        batch.put(&cf, active_key(name), active_value(record.version));
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }

    /// Makes an existing version the active one.
    pub fn set_active(&self, name: &str, version: u32) -> Result<(), MetaError> {
        let meta = self.store.meta();
        let cf = meta.table(&CF_FUNCTIONS)?;
        let mut batch = Batch::default();
        batch.put(&cf, active_key(name), active_value(version));
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }

    /// Every function with its active version number.
    pub fn list_active(&self) -> Result<Vec<(String, u32)>, MetaError> {
        let meta = self.store.meta();
        let cf = meta.table(&CF_FUNCTIONS)?;
        let mut out = Vec::new();
        for item in cf.scan_from(b"a/") {
            let (k, v) = item?;
            let Some(name) = k.strip_prefix(b"a/") else {
                break;
            };
            let name =
                std::str::from_utf8(name).map_err(|_| cf.corrupt("function name is not UTF-8"))?;
            let mut r = versioned(&v, "active function version")?;
            let version = r.u32("version").map_err(|e| corrupt("active version", e))?;
            out.push((name.to_owned(), version));
        }
        Ok(out)
    }

    /// One stored version of `name`.
    pub fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>, MetaError> {
        let meta = self.store.meta();
        meta.table(&CF_FUNCTIONS)?
            .get(version_key(name, version))?
            .map(|v| decode_version(&v))
            .transpose()
    }

    /// Every stored version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, MetaError> {
        let meta = self.store.meta();
        let cf = meta.table(&CF_FUNCTIONS)?;
        let prefix = name_key("v", name);
        let mut out = Vec::new();
        for item in cf.scan_from(&prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode_version(&v)?);
        }
        Ok(out)
    }

    /// Removes every trace of `name`: versions, kv, transform state. Its
    /// component files go when no other function's version uses them.
    pub fn delete(&self, name: &str) -> Result<(), MetaError> {
        let digests: Vec<String> = self.versions(name)?.into_iter().map(|v| v.digest).collect();
        let meta = self.store.meta();
        let mut batch = Batch::default();
        let functions = meta.table(&CF_FUNCTIONS)?;
        batch.delete(&functions, active_key(name));
        delete_prefix(&mut batch, &functions, &name_key("v", name));
        let state = meta.table(&CF_FUNCTION_STATE)?;
        for p in ["t", "p", "d"] {
            delete_prefix(&mut batch, &state, &name_key(p, name));
        }
        delete_prefix(&mut batch, &meta.table(&CF_FUNCTION_KV)?, &kv_prefix(name));
        meta.write(batch, WriteMode::Synced)?;
        let still_used: std::collections::HashSet<String> = self
            .list_active()?
            .into_iter()
            .flat_map(|(n, _)| self.versions(&n).unwrap_or_default())
            .map(|v| v.digest)
            .collect();
        for d in digests.iter().filter(|d| !still_used.contains(*d)) {
            self.remove_component(d);
        }
        Ok(())
    }

    // ------------------------------------------------------------ kv

    pub fn kv_get(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, MetaError> {
        let meta = self.store.meta();
        Ok(meta
            .table(&CF_FUNCTION_KV)?
            .get(kv_key(name, key))?
            .map(|v| v.to_vec()))
    }

    /// Adds a call's kv writes to `batch`.
    pub fn kv_write(
        &self,
        batch: &mut Batch,
        name: &str,
        writes: &std::collections::BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<(), MetaError> {
        let cf = self.store.meta().table(&CF_FUNCTION_KV)?;
        for (k, v) in writes {
            match v {
                Some(v) => batch.put(&cf, kv_key(name, k), v),
                None => batch.delete(&cf, kv_key(name, k)),
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ delays

    /// Records which scheduler delay a guest's delay id names.
    pub fn put_delay(
        &self,
        batch: &mut Batch,
        name: &str,
        guest_id: &str,
        delay_id: u64,
    ) -> Result<(), MetaError> {
        let cf = self.store.meta().table(&CF_FUNCTION_STATE)?;
        let mut v = vec![V1];
        v.extend_from_slice(&delay_id.to_be_bytes());
        batch.put(&cf, delay_key(name, guest_id), v);
        Ok(())
    }

    pub fn delay(&self, name: &str, guest_id: &str) -> Result<Option<u64>, MetaError> {
        let meta = self.store.meta();
        let v = meta
            .table(&CF_FUNCTION_STATE)?
            .get(delay_key(name, guest_id))?;
        Ok(v.and_then(|v| Some(u64::from_be_bytes(v.get(1..9)?.try_into().ok()?))))
    }

    pub fn forget_delay(&self, name: &str, guest_id: &str) -> Result<(), MetaError> {
        let meta = self.store.meta();
        let mut batch = Batch::default();
        batch.delete(&meta.table(&CF_FUNCTION_STATE)?, delay_key(name, guest_id));
        meta.write(batch, WriteMode::Unsynced)
    }

    // ------------------------------------------------------------ transforms

    pub fn task_state(&self, name: &str, partition: u32) -> Result<Option<TaskState>, MetaError> {
        let meta = self.store.meta();
        let Some(v) = meta
            .table(&CF_FUNCTION_STATE)?
            .get(partition_key("t", name, partition))?
        else {
            return Ok(None);
        };
        let mut r = versioned(&v, "transform state")?;
        let read = |r: &mut Reader| -> Result<TaskState, DecodeError> {
            Ok(TaskState {
                position: r.u64("position")?,
                producer_id: r.i64("producer id")?,
                sequences: r.array("sequences", 10, |r| {
                    Ok((
                        r.string("topic")?,
                        r.u32("partition")?,
                        r.u32("sequence")? as i32,
                    ))
                })?,
            })
        };
        read(&mut r)
            .map(Some)
            .map_err(|e| corrupt("transform state", e))
    }

    /// Adds a task's state and its pending outputs to `batch`.
    pub fn put_task(
        &self,
        batch: &mut Batch,
        name: &str,
        partition: u32,
        state: &TaskState,
        pending: &[PendingBatch],
    ) -> Result<(), MetaError> {
        let cf = self.store.meta().table(&CF_FUNCTION_STATE)?;
        let mut w = Writer::new();
        w.u64(state.position)
            .i64(state.producer_id)
            .count(state.sequences.len());
        for (t, p, s) in &state.sequences {
            w.string(t).u32(*p).u32(*s as u32);
        }
        batch.put(&cf, partition_key("t", name, partition), with_version(w));
        if !pending.is_empty() {
            let mut w = Writer::new();
            w.count(pending.len());
            for b in pending {
                w.string(&b.topic)
                    .u32(b.partition)
                    .u64(b.search_from)
                    .bytes(&b.batch);
            }
            batch.put(&cf, partition_key("p", name, partition), with_version(w));
        }
        Ok(())
    }

    pub fn pending(&self, name: &str, partition: u32) -> Result<Vec<PendingBatch>, MetaError> {
        let meta = self.store.meta();
        let Some(v) = meta
            .table(&CF_FUNCTION_STATE)?
            .get(partition_key("p", name, partition))?
        else {
            return Ok(Vec::new());
        };
        let mut r = versioned(&v, "pending outputs")?;
        r.array("pending", 20, |r| {
            Ok(PendingBatch {
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                search_from: r.u64("search from")?,
                batch: r.bytes("batch")?,
            })
        })
        .map_err(|e| corrupt("pending outputs", e))
    }

    /// Forgets pending outputs once they are in the log. Not synced: if
    /// the deletion is lost, the next start finds them in the log.
    pub fn clear_pending(&self, name: &str, partition: u32) -> Result<(), MetaError> {
        let meta = self.store.meta();
        let mut batch = Batch::default();
        batch.delete(
            &meta.table(&CF_FUNCTION_STATE)?,
            partition_key("p", name, partition),
        );
        meta.write(batch, WriteMode::Unsynced)
    }

    /// Writes `batch` synced.
    pub fn commit(&self, batch: Batch) -> Result<(), MetaError> {
        let meta = self.store.meta();
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }
}

fn with_version(w: Writer) -> Vec<u8> {
    let mut v = vec![V1];
    v.extend_from_slice(&w.finish());
    v
}

fn active_key(name: &str) -> Vec<u8> {
    format!("a/{name}").into_bytes()
}

fn active_value(version: u32) -> Vec<u8> {
    let mut v = vec![V1];
    v.extend_from_slice(&version.to_be_bytes());
    v
}

fn version_key(name: &str, version: u32) -> Vec<u8> {
    let mut k = name_key("v", name);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn decode_version(v: &[u8]) -> Result<VersionRecord, MetaError> {
    let mut r = versioned(v, "function version")?;
    let read = |r: &mut Reader| -> Result<VersionRecord, DecodeError> {
        Ok(VersionRecord {
            version: r.u32("version")?,
            digest: r.string("digest")?,
            size: r.u64("size")?,
            deployed_at_ms: r.i64("deployed at")?,
            manifest: FunctionManifest::read(r)?,
        })
    };
    let record = read(&mut r).map_err(|e| corrupt("function version", e))?;
    r.finish().map_err(|e| corrupt("function version", e))?;
    Ok(record)
}

fn kv_prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn kv_key(name: &str, key: &str) -> Vec<u8> {
    let mut k = kv_prefix(name);
    k.extend_from_slice(key.as_bytes());
    k
}

fn delay_key(name: &str, guest_id: &str) -> Vec<u8> {
    let mut k = name_key("d", name);
    k.extend_from_slice(guest_id.as_bytes());
    k
}

fn delete_prefix(batch: &mut Batch, table: &Table<'_>, prefix: &[u8]) {
    // Names end in `/` or `\0`, never 0xFF, so the prefix has a successor.
    if let Some(end) = prefix_successor(prefix) {
        batch.delete_range(table, prefix, &end);
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
