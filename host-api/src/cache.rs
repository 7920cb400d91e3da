//! Precompiled components on disk, by content hash.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled one takes about a millisecond. Entries are
//! named by the SHA-256 of the component bytes and the engine's
//! compatibility hash (wasmtime version and settings), so an upgrade or a
//! settings change simply misses. Each entry carries the SHA-256 of its own
//! body, checked before use: the body is native code, so a corrupt file is
//! recompiled instead of being trusted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"SLUICEC1";

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
}

impl CompiledCache {
    /// Opens (creating, owner-only) the cache directory. Its files are
    /// native code the engine will run: the directory must be as trusted
    /// as the broker's binary.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn path(&self, digest: &str, engine_hash: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{engine_hash}.cwasm"))
    }

    /// The compiled body stored for this key, if present and intact.
    pub(crate) fn get(&self, digest: &str, engine_hash: &str) -> Option<Vec<u8>> {
        let path = self.path(digest, engine_hash);
        let file = fs::read(&path).ok()?;
        match verify(&file) {
            Some(body) => Some(body.to_vec()),
            None => {
                tracing::warn!(path = %path.display(), "corrupt compiled component in the cache; recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled body (write to a temporary file, fsync, rename).
    pub(crate) fn put(&self, digest: &str, engine_hash: &str, body: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest, engine_hash);
        // Unique per writer: threads of one process may store the same entry.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&Sha256::digest(body))?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    }
}

fn verify(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC)?;
    let (sum, body) = rest.split_at_checked(32)?;
    (Sha256::digest(body).as_slice() == sum).then_some(body)
}

/// SHA-256 of `bytes`, lowercase hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        assert_eq!(cache.get("d", "e"), None);
        cache.put("d", "e", b"native code").unwrap();
        assert_eq!(cache.get("d", "e").as_deref(), Some(&b"native code"[..]));
        let path = cache.path("d", "e");
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(cache.get("d", "e"), None, "a flipped bit is caught");
        assert!(!path.exists(), "the corrupt entry is removed");
        fs::write(&path, b"short").unwrap();
        assert_eq!(cache.get("d", "e"), None);
    }
}
