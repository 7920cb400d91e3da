//! The metadata store's error type.

/// Everything that can go wrong in the metadata store.
///
/// Callers mostly need to tell three situations apart: the request was bad
/// ([`MetaError::InvalidName`]), the stored data is damaged
/// ([`MetaError::Corrupt`], which needs an operator rather than a retry), or
/// the storage itself failed ([`MetaError::Rocks`]). [`MetaError::code`] gives
/// a stable identifier to put in logs and replies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// RocksDB reported an error (I/O failure, lock held by another process,
    /// options incompatible with the files on disk, ...).
    #[error("metadata store: {0}")]
    Rocks(#[from] rocksdb::Error),

    /// A stored key or value does not decode. Reported instead of panicking
    /// so that one damaged entry does not take the whole broker down.
    #[error("metadata store: corrupt entry in column family {cf:?}: {reason}")]
    Corrupt {
        /// The column family holding the damaged entry.
        cf: &'static str,
        reason: String,
    },

    /// A topic or group name is empty or too long to store.
    #[error("invalid name: {0}")]
    InvalidName(String),

    /// A column family the store needs is missing from the open database.
    /// Cannot happen with databases opened by [`crate::MetaStore::open`],
    /// which creates them; reported rather than panicking all the same.
    #[error("metadata store: column family {0:?} is missing")]
    MissingColumnFamily(&'static str),

    /// Two subsystems declared a column family of the same name.
    #[error("metadata store: column family {0:?} is declared twice; give each subsystem its own")]
    DuplicateKeyspace(&'static str),

    /// A value could not be serialised for storage.
    #[error("metadata store: cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },

    /// A blocking metadata call run through [`crate::MetaStore::call`]
    /// panicked or was cancelled before it finished.
    #[error("metadata task failed: {0}")]
    TaskFailed(String),
}

impl MetaError {
    /// A stable identifier for the kind of error, for logs, metrics and the
    /// error codes users look up. Unlike the message, it never changes.
    pub fn code(&self) -> &'static str {
        match self {
            MetaError::Rocks(_) => "meta.storage",
            MetaError::Corrupt { .. } => "meta.corrupt",
            MetaError::InvalidName(_) => "meta.invalid_name",
            MetaError::MissingColumnFamily(_) => "meta.missing_column_family",
            MetaError::DuplicateKeyspace(_) => "meta.duplicate_keyspace",
            MetaError::Encode { .. } => "meta.encode",
            MetaError::TaskFailed(_) => "meta.task_failed",
        }
    }

    /// A [`MetaError::Corrupt`] in column family `cf`.
    pub fn corrupt(cf: &'static str, reason: impl Into<String>) -> Self {
        MetaError::Corrupt {
            cf,
            reason: reason.into(),
        }
    }
}
