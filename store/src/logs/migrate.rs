//! Rebuilds partitions of format version 1 as version 2.
//!
//! Version 1 kept tantivy's term dictionaries as FSTs; version 2 keeps them as
//! SSTables (cheaper to build, which is most of what indexing costs on logs
//! with several unique values per record). This build cannot read an FST
//! term dictionary, but it can read everything else: a version 1 partition is
//! re-indexed from its document store (plus the fields kept only as fast
//! fields, `timestamp` and `seq`) into a sibling directory which then takes
//! its place:
//!
//! 1. `<hour>.migrating` is built and committed with the old commit's WAL position;
//! 2. `<hour>` is renamed to `<hour>.v1-old`, then `<hour>.migrating` to `<hour>`;
//! 3. `<hour>.v1-old` is deleted.
//!
//! [`recover`] finishes or undoes a rebuild a crash interrupted, so that a
//! partition is always either the old one (rebuilt again) or the new one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexWriter, ReloadPolicy, TantivyDocument};

use super::schema;
use crate::StoreError;
use crate::layout::sync_dir;

/// The partition version this module rebuilds.
pub(crate) const FROM_VERSION: u32 = 1;

const BUILDING: &str = ".migrating";
const REPLACED: &str = ".v1-old";

/// Threads and memory of the writer that rebuilds a partition.
const WRITER_THREADS: usize = 2;
const WRITER_MEMORY: usize = 128 << 20;

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Cleans up after a rebuild interrupted in `logs_dir` (a tenant's `logs`
/// directory): an unfinished new index is deleted; a replaced partition is
/// deleted if its successor is in place, and put back otherwise.
pub(crate) fn recover(logs_dir: &Path) -> Result<(), StoreError> {
    let entries: Vec<_> = std::fs::read_dir(logs_dir)
        .map_err(StoreError::io("failed to list", logs_dir))?
        .flatten()
        .collect();
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(BUILDING) {
            tracing::warn!(dir = %path.display(), "deleting an unfinished partition rebuild");
            std::fs::remove_dir_all(&path)
                .map_err(StoreError::io("failed to delete", path.clone()))?;
        }
    }
    for entry in std::fs::read_dir(logs_dir)
        .map_err(StoreError::io("failed to list", logs_dir))?
        .flatten()
    {
        let path = entry.path();
        let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(REPLACED))
            .map(str::to_owned)
        else {
            continue;
        };
        let current = logs_dir.join(base);
        if current.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(StoreError::io("failed to delete", path.clone()))?;
        } else {
            tracing::warn!(dir = %current.display(), "a partition rebuild was interrupted; starting it again");
            std::fs::rename(&path, &current)
                .map_err(StoreError::io("failed to rename", path.clone()))?;
            sync_dir(logs_dir)?;
        }
    }
    Ok(())
}

/// Re-indexes the version 1 partition in `dir` (hour `hour_ns`) as the
/// current version, keeping its records and its commit's WAL position.
pub(crate) fn rebuild(dir: &Path, hour_ns: i64) -> Result<(), StoreError> {
    let started = Instant::now();
    let old = Index::open_in_dir(dir).map_err(StoreError::index(format!(
        "failed to open index {}",
        dir.display()
    )))?;
    if fields(&old.schema()) != fields(&schema::schema()) {
        return Err(StoreError::Format {
            path: dir.to_owned(),
            message: "a version 1 partition with unexpected fields".into(),
        });
    }
    let lsn = super::read_payload_lsn(&old, dir)?;
    let building = with_suffix(dir, BUILDING);
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .map_err(StoreError::io("failed to delete", building.clone()))?;
    }
    std::fs::create_dir_all(&building)
        .map_err(StoreError::io("failed to create", building.clone()))?;
    let mmap = MmapDirectory::open(&building).map_err(|e| StoreError::Format {
        path: building.clone(),
        message: e.to_string(),
    })?;
    let index = super::create_index(mmap, &building)?;
    schema::register_tokenizers(&index);
    let records = copy_documents(&old, &index, lsn).map_err(StoreError::index(format!(
        "failed to rebuild {}",
        dir.display()
    )))?;
    drop(old);
    super::write_partition_json(&building, hour_ns)?;

    let replaced = with_suffix(dir, REPLACED);
    std::fs::rename(dir, &replaced).map_err(StoreError::io("failed to rename", dir))?;
    std::fs::rename(&building, dir).map_err(StoreError::io("failed to rename", building))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    std::fs::remove_dir_all(&replaced).map_err(StoreError::io("failed to delete", replaced))?;
    tracing::info!(
        partition = %dir.display(),
        records,
        took_ms = started.elapsed().as_millis() as u64,
        "rebuilt a version {FROM_VERSION} log partition as version {}",
        schema::PARTITION_VERSION
    );
    Ok(())
}

/// Names and value types of a schema's fields, in field id order: stored
/// documents of one schema can be added to an index of the other when they
/// agree (indexing options may differ).
fn fields(schema: &tantivy::schema::Schema) -> Vec<(String, tantivy::schema::Type)> {
    schema
        .fields()
        .map(|(_, e)| (e.name().to_owned(), e.field_type().value_type()))
        .collect()
}

/// Adds every live stored document of `from` to `to` and commits with WAL
/// position `lsn`. Returns how many documents were copied.
fn copy_documents(from: &Index, to: &Index, lsn: u64) -> tantivy::Result<u64> {
    let reader = from
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher = reader.searcher();
    let mut writer: IndexWriter = to.writer_with_num_threads(WRITER_THREADS, WRITER_MEMORY)?;
    let mut n = 0u64;
    let schema = from.schema();
    let (timestamp, seq) = (schema.get_field("timestamp")?, schema.get_field("seq")?);
    for segment in searcher.segment_readers() {
        let store = segment.get_store_reader(1)?;
        // Fields kept only as fast fields are not in the stored documents.
        let timestamps = segment.fast_fields().i64("timestamp")?;
        let seqs = segment.fast_fields().u64("seq")?;
        let docs = store.iter::<TantivyDocument>(segment.alive_bitset());
        for (id, doc) in segment.doc_ids_alive().zip(docs) {
            let mut doc = doc?;
            if doc.get_first(timestamp).is_none()
                && let Some(v) = timestamps.first(id)
            {
                doc.add_i64(timestamp, v);
            }
            if doc.get_first(seq).is_none()
                && let Some(v) = seqs.first(id)
            {
                doc.add_u64(seq, v);
            }
            writer.add_document(doc)?;
            n += 1;
        }
    }
    let mut commit = writer.prepare_commit()?;
    commit.set_payload(&super::commit_payload(lsn));
    commit.commit()?;
    writer.wait_merging_threads()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use periscope_proto::LogRecord;
    use tantivy::Index;

    use super::*;

    fn index() -> Index {
        let index = Index::create_in_ram(schema::schema());
        schema::register_tokenizers(&index);
        index
    }

    /// (timestamp, seq, body) of every document, from fast fields and the store.
    fn contents(index: &Index) -> BTreeSet<(i64, u64, String)> {
        use tantivy::schema::Value;
        let searcher = index.reader().unwrap().searcher();
        let body = index.schema().get_field("body").unwrap();
        let mut out = BTreeSet::new();
        for segment in searcher.segment_readers() {
            let ts = segment.fast_fields().i64("timestamp").unwrap();
            let seq = segment.fast_fields().u64("seq").unwrap();
            let store = segment.get_store_reader(1).unwrap();
            for id in segment.doc_ids_alive() {
                let doc: TantivyDocument = store.get(id).unwrap();
                let text = doc.get_first(body).and_then(|v| v.as_str()).unwrap();
                out.insert((
                    ts.first(id).unwrap(),
                    seq.first(id).unwrap(),
                    text.to_owned(),
                ));
            }
        }
        out
    }

    #[test]
    fn a_partition_with_other_fields_is_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("2026-01-01T00");
        std::fs::create_dir_all(&part).unwrap();
        let mut b = tantivy::schema::Schema::builder();
        b.add_text_field("body", tantivy::schema::TEXT);
        Index::create_in_dir(&part, b.build()).unwrap();
        let err = rebuild(&part, 0).unwrap_err();
        assert!(
            matches!(&err, StoreError::Format { path, .. } if path == &part),
            "{err}"
        );
        assert!(err.to_string().contains("unexpected fields"), "{err}");
        // Nothing was moved or left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["2026-01-01T00"]);
    }

    #[test]
    fn copied_documents_keep_their_fast_only_fields() {
        let from = index();
        let fields = schema::Fields::new(&from.schema());
        let mut w: IndexWriter = from.writer_with_num_threads(1, 15_000_000).unwrap();
        for i in 0..50i64 {
            let r = LogRecord {
                timestamp_ns: 1_000 + i * 7,
                body: format!("record {i}"),
                ..Default::default()
            };
            w.add_document(schema::to_document(&fields, r, 100 + i as u64))
                .unwrap();
        }
        w.commit().unwrap();
        let to = index();
        assert_eq!(copy_documents(&from, &to, 9).unwrap(), 50);
        let copied = contents(&to);
        assert_eq!(copied, contents(&from));
        assert!(copied.contains(&(1_000 + 49 * 7, 149, "record 49".to_owned())));
        assert_eq!(
            super::super::read_payload_lsn(&to, Path::new("")).unwrap(),
            9
        );
    }
}
