//! The data directory: its version file and where each store lives.
//!
//! ```text
//! <data-dir>/periscope.json              {"format_version": 2}
//! <data-dir>/periscope.lock              held by the running collector
//! <data-dir>/wal/<first-lsn>.wal         WAL segments
//! <data-dir>/tenants/<tenant>/logs/<YYYY-MM-DDTHH>/   one tantivy index per hour
//! <data-dir>/tenants/<tenant>/traces/    span store (see `traces`)
//! <data-dir>/tenants/<tenant>/metrics/   metric store (see `metrics`)
//! ```
//!
//! Tenants live in a directory of their own, so that no tenant id, whatever
//! it is, names a file Periscope uses itself (format 1 kept them beside
//! `periscope.json`, and a tenant called `periscope.json` broke every
//! flush). Format 1 directories are migrated on open (`layout_migration`).

use std::path::{Path, PathBuf};

use crate::{StoreError, TenantId};

/// The version of the data directory layout. Bump it with a migration.
/// 1: tenants beside `periscope.json`; 2: tenants under `tenants/`.
pub const DATA_FORMAT_VERSION: u32 = 2;

/// The directory holding one directory per tenant.
pub(crate) const TENANTS_DIR: &str = "tenants";

/// A data directory whose version has been checked.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating if needed) a data directory, refusing one written by
    /// an unknown format version.
    pub fn open(root: &Path) -> Result<DataDir, StoreError> {
        std::fs::create_dir_all(root).map_err(StoreError::io("failed to create data dir", root))?;
        let version_file = root.join("periscope.json");
        if read_version(&version_file, "format_version")? == Some(1) {
            // Under the directory's lock: not while a collector runs on it.
            let _lock = lock_root(root)?;
            if read_version(&version_file, "format_version")? == Some(1) {
                crate::layout_migration::migrate_v1(root)?;
            }
        }
        if !check_version(
            &version_file,
            "format_version",
            DATA_FORMAT_VERSION,
            "data format",
        )? {
            // A new directory: the version file goes last, after `tenants/`.
            let tenants = root.join(TENANTS_DIR);
            std::fs::create_dir_all(&tenants)
                .map_err(StoreError::io("failed to create", &tenants))?;
            sync_dir(root)?;
            write_version(root)?;
        }
        Ok(DataDir {
            root: root.to_owned(),
        })
    }

    /// Locks the directory for this process (an advisory `flock` on
    /// `periscope.lock`), so that a second collector on the same directory
    /// fails at start instead of writing beside the first. Held until the
    /// returned lock is dropped; the kernel releases it when the process
    /// dies, kill -9 included.
    pub fn lock(&self) -> Result<DirLock, StoreError> {
        lock_root(&self.root)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where WAL segments live.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// Where the tenants' directories live.
    pub(crate) fn tenants_dir(&self) -> PathBuf {
        self.root.join(TENANTS_DIR)
    }

    /// A tenant's directory: `tenants/<tenant>`, the only place a tenant
    /// id becomes a path.
    pub(crate) fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.tenants_dir().join(tenant.as_str())
    }

    /// Where a tenant's log partitions live.
    pub fn logs_dir(&self, tenant: &TenantId) -> PathBuf {
        self.tenant_dir(tenant).join("logs")
    }

    /// Where a tenant's span store lives.
    pub(crate) fn traces_dir(&self, tenant: &TenantId) -> PathBuf {
        self.tenant_dir(tenant).join("traces")
    }

    /// Where a tenant's metric store lives.
    pub(crate) fn metrics_dir(&self, tenant: &TenantId) -> PathBuf {
        self.tenant_dir(tenant).join("metrics")
    }
}

/// Writes the current format version to `<root>/periscope.json`.
pub(crate) fn write_version(root: &Path) -> Result<(), StoreError> {
    let body = format!("{{\"format_version\": {DATA_FORMAT_VERSION}}}\n");
    write_atomic(&root.join("periscope.json"), body.as_bytes())
}

fn lock_root(root: &Path) -> Result<DirLock, StoreError> {
    let path = root.join("periscope.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io("failed to open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(root.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("failed to lock", &path)(e)),
    }
}

/// The lock on a data directory; see [`DataDir::lock`].
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Checks the version in a small JSON file (`key` must equal `expected`).
/// Returns whether the file exists; a missing file is not an error.
pub(crate) fn check_version(
    path: &Path,
    key: &str,
    expected: u32,
    what: &str,
) -> Result<bool, StoreError> {
    let Some(v) = read_json(path)? else {
        return Ok(false);
    };
    let found = v.get(key).and_then(|v| v.as_u64());
    if found != Some(u64::from(expected)) {
        return Err(StoreError::Format {
            path: path.to_owned(),
            message: format!(
                "{what} version {found:?} is not supported (this build reads {expected})"
            ),
        });
    }
    Ok(true)
}

/// The version number under `key` in the JSON file at `path`; `None` if the
/// file does not exist or has no such number.
pub(crate) fn read_version(path: &Path, key: &str) -> Result<Option<u32>, StoreError> {
    Ok(read_json(path)?
        .and_then(|v| v.get(key).and_then(|v| v.as_u64()))
        .and_then(|v| u32::try_from(v).ok()))
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("failed to read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Format {
            path: path.to_owned(),
            message: format!("invalid json: {e}"),
        })
}

/// Writes a small file atomically: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(StoreError::io("failed to create", &tmp))?;
    f.write_all(bytes)
        .map_err(StoreError::io("failed to write", &tmp))?;
    f.sync_all()
        .map_err(StoreError::io("failed to fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io("failed to rename", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so a rename or create in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("failed to fsync directory", dir))
}

/// Tenants that have a `tenants/<tenant>/<store>` directory in the data dir.
pub(crate) fn tenants_with(
    data: &DataDir,
    store: &str,
) -> Result<Vec<crate::TenantId>, StoreError> {
    let dir = data.tenants_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("failed to list tenants dir", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(Ok(tenant)) = entry.file_name().to_str().map(crate::TenantId::parse) else {
            continue;
        };
        if data.tenant_dir(&tenant).join(store).is_dir() {
            out.push(tenant);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_dir_refuses_a_second_lock_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let held = data.lock().unwrap();
        // A second open of the same directory (as a second collector would).
        let other = DataDir::open(dir.path()).unwrap();
        let err = other.lock().unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(held);
        other.lock().unwrap();
    }
}
