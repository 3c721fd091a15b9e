//! The store's error type.

use std::path::PathBuf;

/// Errors of the WAL and the stores. Sources are kept, never flattened to strings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, like `failed to open wal segment`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A tantivy operation failed.
    #[error("{op}: {source}")]
    Index {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: tantivy::TantivyError,
    },
    /// The search query could not be parsed.
    #[error("invalid query: {0}")]
    Query(#[from] tantivy::query::QueryParserError),
    /// A request argument is invalid (bad cursor, bad range...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A file on disk was written by an unknown format version or is corrupt.
    #[error("{path}: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The WAL stopped accepting writes after an I/O failure or shutdown.
    #[error("write-ahead log unavailable: {0}")]
    WalClosed(String),
    /// Another process holds the data directory's lock.
    #[error("data dir {0} is in use by another process (it holds periscope.lock there)")]
    Locked(PathBuf),
    /// The disk holding the WAL is full: the entry was not written (nothing
    /// partial stays behind). Retryable: appends succeed again once space
    /// is freed, without a restart.
    #[error("no space left on the disk of the write-ahead log {path}; retry later")]
    DiskFull {
        /// The WAL segment that could not grow.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An invalid tenant id.
    #[error("invalid tenant id {0:?}: use 1-150 characters of [A-Za-z0-9_.-], not '.' or '..'")]
    InvalidTenant(String),
    /// A query ran past its deadline and was stopped.
    #[error("query deadline exceeded")]
    DeadlineExceeded,
    /// A query was stopped by its caller (the client went away).
    #[error("query cancelled")]
    Cancelled,
    /// A query would read more than its budget allows.
    #[error("query would read more than {limit} {what}")]
    LimitExceeded {
        /// `samples` or `series`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

impl StoreError {
    /// Whether retrying later may succeed without any change to Periscope
    /// (the disk was full), as opposed to a fault that needs an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io { source, .. } => is_no_space(source),
            StoreError::Index {
                source: tantivy::TantivyError::IoError(e),
                ..
            } => is_no_space(e),
            _ => false,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    pub(crate) fn index<E: Into<tantivy::TantivyError>>(
        op: impl Into<String>,
    ) -> impl FnOnce(E) -> StoreError {
        let op = op.into();
        move |source| StoreError::Index {
            op,
            source: source.into(),
        }
    }
}

/// `ENOSPC` or `EDQUOT`: the write may succeed once space is freed.
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}
