//! Checkpoints: per file identity, the offset up to which every record has
//! been acknowledged by the collector (or is durably in the disk spool).
//!
//! The exporter's finalizer advances [`Committed`] in batch order; a writer
//! persists it about once a second and at shutdown as `checkpoints.json` in
//! the data directory, atomically (temp file, fsync, rename, fsync of the
//! directory). Entries of files not seen for [`TTL`] are dropped.
//!
//! Format (version 1):
//! `{"version":1,"files":[{"dev":..,"ino":..,"fp_len":..,"fp_crc":..,"path":"..","offset":..,"seen":<unix s>}]}`

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sync::MutexRecover;

/// Checkpoints of files gone longer than this are forgotten.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

const FILE_NAME: &str = "checkpoints.json";

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// The first bytes of a file (length and CRC-32), to tell a reused inode or a
/// rewritten file from the one checkpointed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes covered (at most 256).
    pub len: u32,
    /// CRC-32 of those bytes.
    pub crc: u32,
}

/// One persisted checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Fingerprint length.
    pub fp_len: u32,
    /// Fingerprint CRC.
    pub fp_crc: u32,
    /// Last known path (informative).
    pub path: PathBuf,
    /// Acknowledged offset.
    pub offset: u64,
    /// Last time the file was seen, Unix seconds.
    pub seen: u64,
}

impl Entry {
    /// The identity.
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }
    /// The fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            len: self.fp_len,
            crc: self.fp_crc,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    files: Vec<Entry>,
}

/// Errors of checkpoint persistence.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a checkpoint file of a known version.
    #[error("checkpoint file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Unix seconds now.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Acknowledged offsets shared by the tailer (which registers files and
/// refreshes `seen`) and the exporter's finalizer (which advances offsets).
///
/// A generation counter moves with every change, so the writer can skip the
/// snapshot (a copy and sort of every entry) when nothing moved.
#[derive(Clone, Debug, Default)]
pub struct Committed(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    map: Mutex<HashMap<FileId, Entry>>,
    generation: AtomicU64,
}

impl Committed {
    /// Starts from persisted entries.
    pub fn from_entries(entries: Vec<Entry>) -> Self {
        Committed(Arc::new(Shared {
            map: Mutex::new(entries.into_iter().map(|e| (e.id(), e)).collect()),
            generation: AtomicU64::new(0),
        }))
    }

    fn lock_quiet(&self) -> MutexGuard<'_, HashMap<FileId, Entry>> {
        self.0.map.lock_or_recover()
    }

    fn bump(&self) {
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// Locks the map for changes (a poisoned lock still holds valid
    /// offsets); counts as a change of the generation.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<FileId, Entry>> {
        let m = self.lock_quiet();
        // Moved while the lock is held: a writer that reads the new
        // generation takes its snapshot after this change.
        self.bump();
        m
    }

    /// A number that differs from any earlier one whenever the entries may
    /// have changed since (read it before taking the snapshot it stands for).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// A copy of one entry.
    pub fn get(&self, id: FileId) -> Option<Entry> {
        self.lock_quiet().get(&id).cloned()
    }

    /// Sets `seen` to `secs` on the entries of `ids` last seen at least
    /// `min_age` seconds earlier; the generation moves only if one did.
    pub fn refresh_seen<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a FileId>,
        secs: u64,
        min_age: u64,
    ) {
        let mut m = self.lock_quiet();
        let mut changed = false;
        for id in ids {
            if let Some(e) = m.get_mut(id)
                && secs.saturating_sub(e.seen) >= min_age
            {
                e.seen = secs;
                changed = true;
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Applies a mark: the file is acknowledged up to `offset`.
    pub fn apply(&self, mark: &Mark) {
        let mut m = self.lock_quiet();
        let e = m.entry(mark.id).or_insert_with(|| Entry {
            dev: mark.id.dev,
            ino: mark.id.ino,
            fp_len: 0,
            fp_crc: 0,
            path: mark.path.clone(),
            offset: 0,
            seen: unix_secs(),
        });
        e.offset = mark.offset;
        e.fp_len = mark.fingerprint.len;
        e.fp_crc = mark.fingerprint.crc;
        e.path.clone_from(&mark.path);
        self.bump();
    }

    /// All entries, without those unseen for longer than `TTL` (24 h).
    pub fn snapshot(&self) -> Vec<Entry> {
        let now = unix_secs();
        let mut m = self.lock_quiet();
        m.retain(|_, e| now.saturating_sub(e.seen) <= TTL.as_secs());
        let mut v: Vec<Entry> = m.values().cloned().collect();
        v.sort_by_key(|e| (e.dev, e.ino));
        v
    }
}

/// A checkpoint update carried by a batch and applied once the batch is safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The file.
    pub id: FileId,
    /// Its fingerprint when the batch was cut.
    pub fingerprint: Fingerprint,
    /// Its path.
    pub path: PathBuf,
    /// Offset up to which the file's records are in this or earlier batches.
    pub offset: u64,
}

/// The checkpoint file in a data directory.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Store {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// Loads the entries; `None` when no checkpoint file exists (first start).
    pub fn load(&self) -> Result<Option<Vec<Entry>>, CheckpointError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let f: FileFormat =
            serde_json::from_slice(&text).map_err(|e| CheckpointError::Invalid {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if f.version != 1 {
            return Err(CheckpointError::Invalid {
                path: self.path.clone(),
                reason: format!("unsupported version {}", f.version),
            });
        }
        Ok(Some(f.files))
    }

    /// Writes the entries atomically: temp file, fsync, rename, directory fsync.
    pub fn save(&self, files: Vec<Entry>) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&FileFormat { version: 1, files })
            .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            d.sync_all().map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let c = Committed::default();
        let id = FileId { dev: 1, ino: 2 };
        c.apply(&Mark {
            id,
            fingerprint: Fingerprint { len: 10, crc: 7 },
            path: "/x.log".into(),
            offset: 99,
        });
        c.lock().insert(
            FileId { dev: 1, ino: 3 },
            Entry {
                dev: 1,
                ino: 3,
                fp_len: 0,
                fp_crc: 0,
                path: "/old".into(),
                offset: 1,
                seen: 0,
            },
        );
        store.save(c.snapshot()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.len(), 1, "expired entry dropped");
        assert_eq!(loaded[0].offset, 99);
        assert_eq!(loaded[0].fingerprint(), Fingerprint { len: 10, crc: 7 });
        std::fs::write(dir.path().join(FILE_NAME), b"{nope").unwrap();
        assert!(store.load().is_err());
    }

    #[test]
    fn generation_moves_only_on_changes() {
        let c = Committed::default();
        let id = FileId { dev: 1, ino: 2 };
        let g0 = c.generation();
        assert!(c.get(id).is_none());
        let _ = c.snapshot();
        assert_eq!(c.generation(), g0, "reads change nothing");
        c.apply(&Mark {
            id,
            fingerprint: Fingerprint { len: 1, crc: 1 },
            path: "/x.log".into(),
            offset: 5,
        });
        let g1 = c.generation();
        assert_ne!(g1, g0);
        let seen = c.get(id).unwrap().seen;
        c.refresh_seen([&id], seen + 10, 60);
        assert_eq!(c.generation(), g1, "too recent to refresh");
        c.refresh_seen([&id], seen + 60, 60);
        assert_ne!(c.generation(), g1);
        assert_eq!(c.get(id).unwrap().seen, seen + 60);
    }
}
