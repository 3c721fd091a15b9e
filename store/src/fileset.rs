//! The lifecycle of a store's immutable files, shared by the metric store
//! and the span store: a per-tenant manifest lists the files (grouped by
//! hour partition, see `partition.rs`) and the WAL position they cover, and
//! a file exists for readers exactly when the manifest lists it.
//!
//! - **Publish**: files are written and fsynced first, then a new manifest
//!   that lists them is written atomically ([`Manifest::write`]: temporary
//!   file, fsync, rename, directory fsync). A crash before the rename leaves
//!   files no manifest lists; [`Manifest::open`] deletes them.
//! - **Replace** (compaction): the merged output is published in the same
//!   manifest write that unlists its inputs ([`Manifest::replacing`]). The
//!   inputs are not deleted at once: a query that took its snapshot of the
//!   listed files before the swap may still be reading them, so they go to
//!   the [`Graveyard`] and are deleted after [`DELETE_GRACE`]. A restart
//!   deletes them too (they are unlisted), when no query can hold them.
//! - **Drop** (retention): unlisted and deleted at once
//!   ([`Manifest::dropping`], [`remove_files`]); the data is expired, and
//!   a reader that finds such a file gone treats it as empty.
//!
//! Each store keeps its own locks and in-memory view; what is here is the
//! part whose correctness both depend on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::layout::write_atomic;
use crate::partition::parse_partition_dir_name;
use crate::sync::MutexRecover;

/// Files a merge replaced stay on disk this long for queries that listed
/// them before the swap.
pub(crate) const DELETE_GRACE: Duration = Duration::from_secs(300);

const MANIFEST_FILE: &str = "manifest.json";

/// An entry of a manifest: one or more files of one partition.
pub(crate) trait ListedFile: Clone {
    /// The manifest format version the current code writes.
    const MANIFEST_VERSION: u32;
    /// What the files hold, for messages (`"metric"`, `"span"`).
    const WHAT: &'static str;
    /// What tells two entries of one manifest apart.
    type Key: Eq;

    fn key(&self) -> Self::Key;
    /// The partition directory name (`YYYY-MM-DDTHH`).
    fn partition(&self) -> &str;
    /// The names of the entry's files in its partition directory.
    fn file_names(&self) -> Vec<String>;
}

/// A tenant's manifest: `<store dir>/manifest.json`. The field names are
/// the on-disk format of both stores' manifests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest<F> {
    pub version: u32,
    /// Every record of this tenant's WAL entries at or below this is in a
    /// listed file.
    pub durable_lsn: u64,
    /// The next free file number.
    pub next_file: u64,
    pub files: Vec<F>,
}

impl<F: ListedFile> Default for Manifest<F> {
    fn default() -> Self {
        Manifest {
            version: F::MANIFEST_VERSION,
            durable_lsn: 0,
            next_file: 1,
            files: Vec::new(),
        }
    }
}

impl<F: ListedFile + Serialize + DeserializeOwned> Manifest<F> {
    /// Reads the manifest in `dir` (an empty one when there is none),
    /// checks its version, and deletes the Parquet files under `dir`'s
    /// partitions that it does not list: leftovers of a write cut short
    /// before its manifest named them, or of a merge's inputs whose grace
    /// a restart cut short.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        let format_err = |message: String| StoreError::Format {
            path: path.clone(),
            message,
        };
        let m: Self = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format_err(format!("invalid manifest: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(StoreError::io("failed to read", &path)(e)),
        };
        if m.version != F::MANIFEST_VERSION {
            return Err(format_err(format!(
                "{} manifest version {} is not supported (this build reads {})",
                F::WHAT,
                m.version,
                F::MANIFEST_VERSION
            )));
        }
        let listed: BTreeSet<(String, String)> = m
            .files
            .iter()
            .flat_map(|f| {
                f.file_names()
                    .into_iter()
                    .map(|n| (f.partition().to_owned(), n))
            })
            .collect();
        delete_unlisted(dir, &listed, F::WHAT)?;
        Ok(m)
    }

    /// Replaces the manifest in `dir` atomically and durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("failed to create", dir))?;
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serialises");
        write_atomic(&dir.join(MANIFEST_FILE), &bytes)
    }
}

impl<F: ListedFile> Manifest<F> {
    /// This manifest with `files` published: listed, with the positions
    /// raised to what the write covers.
    pub(crate) fn publishing(
        &self,
        files: impl IntoIterator<Item = F>,
        durable_lsn: u64,
        next_file: u64,
    ) -> Self {
        let mut m = self.clone();
        m.durable_lsn = m.durable_lsn.max(durable_lsn);
        m.next_file = m.next_file.max(next_file);
        m.files.extend(files);
        m
    }

    /// This manifest with `inputs` replaced by `output` (none when the
    /// merge left nothing), or `None` when some input is no longer listed
    /// (retention dropped it while the merge ran: the merge is stale).
    pub(crate) fn replacing(
        &self,
        inputs: &[F],
        output: Option<F>,
        next_file: u64,
    ) -> Option<Self> {
        let keys: Vec<F::Key> = inputs.iter().map(F::key).collect();
        let listed = self
            .files
            .iter()
            .filter(|f| keys.contains(&f.key()))
            .count();
        if listed != keys.len() {
            return None;
        }
        let mut m = self.clone();
        m.next_file = m.next_file.max(next_file);
        m.files.retain(|f| !keys.contains(&f.key()));
        m.files.extend(output);
        Some(m)
    }

    /// This manifest without the files `doomed` picks, and those files;
    /// `None` when it picks none.
    pub(crate) fn dropping(&self, doomed: impl Fn(&F) -> bool) -> Option<(Self, Vec<F>)> {
        if !self.files.iter().any(&doomed) {
            return None;
        }
        let mut m = self.clone();
        let (gone, kept): (Vec<F>, Vec<F>) = m.files.drain(..).partition(|f| doomed(f));
        m.files = kept;
        Some((m, gone))
    }
}

/// Deletes the files of `entries` under the store directory `dir` now,
/// and each partition directory left empty. Callers hold the lock their
/// store's writers take, so no writer is creating a file in a partition
/// directory being removed.
pub(crate) fn remove_files<F: ListedFile>(dir: &Path, entries: &[F]) {
    for f in entries {
        let pdir = dir.join(f.partition());
        for name in f.file_names() {
            remove_file(&pdir.join(name), F::WHAT);
        }
        // Fails harmlessly while the directory holds other files.
        let _ = std::fs::remove_dir(&pdir);
    }
}

fn remove_file(path: &Path, what: &str) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "failed to delete a {what} file");
    }
}

/// Files that compaction replaced, kept until no query that listed them
/// can still be reading them.
#[derive(Debug, Default)]
pub(crate) struct Graveyard {
    files: Mutex<Vec<(Instant, PathBuf)>>,
}

impl Graveyard {
    /// Schedules the files of `entries` under `dir` for deletion.
    pub(crate) fn bury<F: ListedFile>(&self, dir: &Path, entries: &[F]) {
        let now = Instant::now();
        let mut g = self.files.lock_or_recover();
        for f in entries {
            let pdir = dir.join(f.partition());
            g.extend(f.file_names().into_iter().map(|n| (now, pdir.join(n))));
        }
    }

    /// Deletes the files buried at least `grace` ago, calling `forget`
    /// with each (to drop what caches hold about it), and their partition
    /// directories once empty. Callers hold their store's writer lock (see
    /// [`remove_files`]).
    pub(crate) fn collect(&self, grace: Duration, forget: impl Fn(&Path)) {
        let mut g = self.files.lock_or_recover();
        let mut dirs = BTreeSet::new();
        g.retain(|(when, path)| {
            if when.elapsed() < grace {
                return true;
            }
            forget(path);
            remove_file(path, "replaced");
            if let Some(d) = path.parent() {
                dirs.insert(d.to_owned());
            }
            false
        });
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// How many files wait for their grace to end.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.files.lock_or_recover().len()
    }
}

/// Deletes the Parquet files under `dir`'s partition directories that
/// `listed` (partition, file name) does not hold.
fn delete_unlisted(
    dir: &Path,
    listed: &BTreeSet<(String, String)>,
    what: &str,
) -> Result<(), StoreError> {
    let parts = match std::fs::read_dir(dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("failed to list", dir)(e)),
    };
    for part in parts.flatten() {
        let pname = part.file_name().to_string_lossy().into_owned();
        if parse_partition_dir_name(&pname).is_none() || !part.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(part.path())
            .map_err(StoreError::io("failed to list", part.path()))?
            .flatten()
        {
            let fname = f.file_name().to_string_lossy().into_owned();
            if fname.ends_with(".parquet") && !listed.contains(&(pname.clone(), fname)) {
                tracing::warn!(file = %f.path().display(), "deleting {what} file no manifest lists (an interrupted write or a replaced file)");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Entry {
        partition: String,
        name: String,
    }

    impl ListedFile for Entry {
        const MANIFEST_VERSION: u32 = 7;
        const WHAT: &'static str = "test";
        type Key = String;
        fn key(&self) -> String {
            self.name.clone()
        }
        fn partition(&self) -> &str {
            &self.partition
        }
        fn file_names(&self) -> Vec<String> {
            vec![self.name.clone()]
        }
    }

    fn entry(name: &str) -> Entry {
        Entry {
            partition: "2026-01-01T00".into(),
            name: name.into(),
        }
    }

    #[test]
    fn publish_replace_and_drop_change_only_what_they_name() {
        let m: Manifest<Entry> = Manifest::default();
        let m = m.publishing([entry("a"), entry("b")], 5, 3);
        assert_eq!((m.durable_lsn, m.next_file, m.files.len()), (5, 3, 2));
        // Positions never go back.
        let m = m.publishing([entry("c")], 4, 2);
        assert_eq!((m.durable_lsn, m.next_file), (5, 3));
        let merged = m
            .replacing(&[entry("a"), entry("b")], Some(entry("d")), 9)
            .unwrap();
        assert_eq!(merged.files, [entry("c"), entry("d")]);
        assert_eq!(merged.next_file, 9);
        // A merge whose input is gone is stale.
        assert!(
            merged
                .replacing(&[entry("a")], Some(entry("e")), 10)
                .is_none()
        );
        let (kept, gone) = merged.dropping(|f| f.name == "c").unwrap();
        assert_eq!((kept.files, gone), (vec![entry("d")], vec![entry("c")]));
        assert!(merged.dropping(|_| false).is_none());
    }

    #[test]
    fn open_deletes_unlisted_files_and_refuses_another_version() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("2026-01-01T00");
        std::fs::create_dir_all(&pdir).unwrap();
        for n in ["a.parquet", "b.parquet", "notes.txt"] {
            std::fs::write(pdir.join(n), b"x").unwrap();
        }
        let m: Manifest<Entry> = Manifest::default().publishing([entry("a.parquet")], 1, 2);
        m.write(dir.path()).unwrap();
        let back: Manifest<Entry> = Manifest::open(dir.path()).unwrap();
        assert_eq!(back.files, m.files);
        assert!(pdir.join("a.parquet").exists());
        assert!(!pdir.join("b.parquet").exists());
        assert!(
            pdir.join("notes.txt").exists(),
            "only Parquet files are ours"
        );
        let mut other = m.clone();
        other.version = 6;
        other.write(dir.path()).unwrap();
        let err = Manifest::<Entry>::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("test manifest version 6"), "{err}");
    }

    #[test]
    fn buried_files_outlive_their_grace_only() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("2026-01-01T00");
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::write(pdir.join("a"), b"x").unwrap();
        let g = Graveyard::default();
        g.bury(dir.path(), &[entry("a")]);
        g.collect(Duration::from_secs(60), |_| {});
        assert!(pdir.join("a").exists());
        let forgotten = Mutex::new(Vec::new());
        g.collect(Duration::ZERO, |p| {
            forgotten.lock().unwrap().push(p.to_owned())
        });
        assert!(!pdir.exists(), "the emptied partition goes too");
        assert_eq!(forgotten.into_inner().unwrap(), [pdir.join("a")]);
        assert_eq!(g.len(), 0);
    }
}
