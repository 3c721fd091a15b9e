//! The disk spool: batches that do not fit the memory queue (the collector
//! is slow or unreachable) wait here, in order, and survive restarts.
//!
//! Segment files `spool/<id:016>.seg` hold records
//! `[u32 LE length][u32 LE CRC-32 of the body][body]`, the body being a
//! one-byte payload kind and the protobuf request. A request the relay
//! admitted for a tenant has the kind's high bit set and its tenant between
//! the kind and the request: `[kind | 0x80][u16 LE length][tenant]`; records
//! without a tenant keep the first format, so spools stay readable across
//! versions (an older agent skips tenant records as undecodable). Appends are fsynced before
//! they count. A record whose CRC does not match is skipped with a warning; a
//! torn or impossible length skips the rest of its segment. Segments are
//! deleted once read and acknowledged; after a restart the agent appends to
//! a fresh segment.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::Payload;

/// Segments are rolled past this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Larger lengths are taken as corruption.
const MAX_RECORD: u32 = 256 << 20;
const HEADER: u64 = 8;
/// Set in a record's kind byte when a tenant follows it.
const WITH_TENANT: u8 = 0x80;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File system error.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    size: u64,
}

/// A record read from the spool, not yet acknowledged.
#[derive(Debug)]
pub struct Spooled {
    /// The request.
    pub payload: Payload,
    /// The tenant the relay admitted it for; `None`: the agent's own.
    pub tenant: Option<String>,
    /// Its size on disk.
    pub bytes: u64,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Open for appends: the last segment, created by this process.
    writer: Option<File>,
    /// Read position in the first segment.
    read_off: u64,
    /// Lowest id for a new segment.
    next_id: u64,
    reader: Option<(u64, File)>,
    /// End of the record returned by `peek`, committed by `advance`.
    peeked_end: Option<u64>,
    bytes: u64,
    corrupt: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool directory and lists its segments.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let size = e.metadata().map_err(io(dir))?.len();
            segments.push(Segment {
                id,
                path: e.path(),
                size,
            });
        }
        segments.sort_by_key(|s| s.id);
        // Resume after what an earlier run had acknowledged: segments before
        // the cursor's were consumed (their deletion may not have happened).
        let mut read_off = 0;
        let cursor = read_cursor(dir);
        if let Some((id, off)) = cursor
            && let Some(pos) = segments.iter().position(|s| s.id == id)
        {
            for s in segments.drain(..pos) {
                let _ = std::fs::remove_file(&s.path);
            }
            if off <= segments[0].size {
                read_off = off;
            }
        }
        // New segments never reuse the id a cursor could still name.
        let next_id = cursor.map_or(1, |(id, _)| id + 1);
        let bytes = segments.iter().map(|s| s.size).sum();
        Ok(Spool {
            dir: dir.to_owned(),
            segments: segments.into(),
            writer: None,
            read_off,
            next_id,
            reader: None,
            peeked_end: None,
            bytes,
            corrupt: 0,
        })
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Corrupt records skipped so far.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt
    }

    /// Appends a request durably (fsynced before returning).
    pub fn append(&mut self, payload: &Payload) -> Result<u64, SpoolError> {
        self.append_encoded(payload.kind(), None, &payload.encode())
    }

    /// Appends a request already encoded as protobuf, of kind `kind`
    /// ([`Payload::kind`]) and for `tenant` (`None`: the agent's own),
    /// durably (fsynced before returning).
    pub fn append_encoded(
        &mut self,
        kind: u8,
        tenant: Option<&str>,
        encoded: &[u8],
    ) -> Result<u64, SpoolError> {
        let prefix = match tenant {
            None => vec![kind],
            Some(t) => {
                let len = u16::try_from(t.len()).map_err(|_| SpoolError::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other("tenant name too long for the spool"),
                })?;
                let mut p = Vec::with_capacity(3 + t.len());
                p.push(kind | WITH_TENANT);
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(t.as_bytes());
                p
            }
        };
        let need_new = match (self.writer.as_ref(), self.segments.back()) {
            (Some(_), Some(last)) => last.size >= SEGMENT_BYTES,
            _ => true,
        };
        if need_new {
            let id = self
                .segments
                .back()
                .map_or(1, |s| s.id + 1)
                .max(self.next_id);
            self.next_id = id + 1;
            let path = self.dir.join(format!("{id:016}.seg"));
            let f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .read(true)
                .open(&path)
                .map_err(io(&path))?;
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.segments.push_back(Segment { id, path, size: 0 });
            self.writer = Some(f);
        }
        let len = prefix.len() + encoded.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&prefix);
        crc.update(encoded);
        let mut rec = Vec::with_capacity(len + HEADER as usize);
        rec.extend_from_slice(&(len as u32).to_le_bytes());
        rec.extend_from_slice(&crc.finalize().to_le_bytes());
        rec.extend_from_slice(&prefix);
        rec.extend_from_slice(encoded);
        let seg = self.segments.back_mut().ok_or_else(|| SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("no segment"),
        })?;
        let w = self.writer.as_mut().ok_or_else(|| SpoolError::Io {
            path: seg.path.clone(),
            source: std::io::Error::other("no writer"),
        })?;
        w.write_all(&rec).map_err(io(&seg.path))?;
        w.sync_data().map_err(io(&seg.path))?;
        seg.size += rec.len() as u64;
        self.bytes += rec.len() as u64;
        Ok(rec.len() as u64)
    }

    fn writing_first(&self) -> bool {
        self.writer.is_some() && self.segments.len() == 1
    }

    /// Drops the first segment (fully read).
    fn drop_first(&mut self) {
        if let Some(s) = self.segments.pop_front() {
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(path = %s.path.display(), error = %e, "cannot delete spool segment");
            }
            self.bytes = self.bytes.saturating_sub(s.size);
            if self.segments.is_empty() {
                self.writer = None;
                // Nothing left: no cursor either (the next ids stay above it).
                let _ = std::fs::remove_file(self.dir.join(CURSOR));
            }
        }
        self.read_off = 0;
        self.reader = None;
    }

    /// The oldest unacknowledged record, skipping corrupt ones.
    pub fn peek(&mut self) -> Result<Option<Spooled>, SpoolError> {
        loop {
            let Some(first) = self.segments.front() else {
                return Ok(None);
            };
            let (id, size, path) = (first.id, first.size, first.path.clone());
            if self.read_off >= size {
                if self.writing_first() {
                    // Fully read and still the write segment: delete it, the
                    // next append starts a fresh one.
                    self.drop_first();
                    return Ok(None);
                }
                self.drop_first();
                continue;
            }
            if self.reader.as_ref().is_none_or(|(rid, _)| *rid != id) {
                let f = File::open(&path).map_err(io(&path))?;
                self.reader = Some((id, f));
            }
            let Some((_, f)) = self.reader.as_ref() else {
                continue;
            };
            let mut hdr = [0u8; HEADER as usize];
            let torn = |this: &mut Self, why: &str| {
                tracing::warn!(segment = %path.display(), offset = this.read_off, reason = why, "corrupt spool data; skipping the rest of the segment");
                this.corrupt += 1;
                this.read_off = size;
            };
            if self.read_off + HEADER > size || read_exact_at(f, &mut hdr, self.read_off).is_err() {
                torn(self, "truncated record header");
                continue;
            }
            let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            let end = self.read_off + HEADER + u64::from(len);
            if len == 0 || len > MAX_RECORD || end > size {
                torn(self, "impossible record length");
                continue;
            }
            let mut body = vec![0u8; len as usize];
            if read_exact_at(f, &mut body, self.read_off + HEADER).is_err() {
                torn(self, "truncated record");
                continue;
            }
            if crc32fast::hash(&body) != crc {
                tracing::warn!(segment = %path.display(), offset = self.read_off, bytes = len, "corrupt spool record (CRC mismatch); skipping it");
                self.corrupt += 1;
                self.read_off = end;
                continue;
            }
            match decode_record(&body) {
                Ok((payload, tenant)) => {
                    self.peeked_end = Some(end);
                    return Ok(Some(Spooled {
                        payload,
                        tenant,
                        bytes: end - self.read_off,
                    }));
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), offset = self.read_off, error = %e, "undecodable spool record; skipping it");
                    self.corrupt += 1;
                    self.read_off = end;
                }
            }
        }
    }

    /// Consumes the record returned by the last [`Spool::peek`].
    pub fn advance(&mut self) {
        if let Some(end) = self.peeked_end.take() {
            self.read_off = end;
            if let Some(first) = self.segments.front() {
                write_cursor(&self.dir, first.id, end);
            }
            if self
                .segments
                .front()
                .is_some_and(|s| self.read_off >= s.size)
            {
                self.drop_first();
            }
        }
    }
}

/// A record's request and tenant (see the module documentation).
fn decode_record(body: &[u8]) -> Result<(Payload, Option<String>), String> {
    let kind = body[0];
    if kind & WITH_TENANT == 0 {
        return Ok((Payload::decode(kind, &body[1..])?, None));
    }
    let rest = &body[1..];
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or("truncated tenant length")?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return Err("truncated tenant".into());
    }
    let (tenant, request) = rest.split_at(len);
    let tenant = std::str::from_utf8(tenant).map_err(|_| "tenant is not UTF-8")?;
    let payload = Payload::decode(kind & !WITH_TENANT, request)?;
    Ok((payload, Some(tenant.to_owned())))
}

const CURSOR: &str = "cursor";

/// The persisted read position: `<segment id> <offset>`. It only moves past
/// acknowledged records; a missing, stale or unreadable cursor means records
/// are sent again, never skipped.
fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join(CURSOR)).ok()?;
    let mut it = text.split_whitespace();
    let id = it.next()?.parse().ok()?;
    let off = it.next()?.parse().ok()?;
    Some((id, off))
}

/// Writes the cursor (temp file and rename, not fsynced: after a power loss
/// an older cursor only means duplicates).
fn write_cursor(dir: &Path, id: u64, off: u64) {
    let tmp = dir.join("cursor.tmp");
    let res = std::fs::write(&tmp, format!("{id} {off}\n"))
        .and_then(|()| std::fs::rename(&tmp, dir.join(CURSOR)));
    if let Err(e) = res {
        tracing::debug!(error = %e, "cannot write the spool cursor");
    }
}

fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], off + got as u64)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_proto::otlp::ExportLogsServiceRequest;
    use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn payload(n: u64) -> Payload {
        Payload::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: n,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn drain(s: &mut Spool) -> Vec<Payload> {
        let mut out = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            out.push(r.payload);
            s.advance();
        }
        out
    }

    #[test]
    fn fifo_across_reopen_and_drains_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        for i in 0..5 {
            s.append(&payload(i)).unwrap();
        }
        assert!(s.bytes() > 0);
        let first = s.peek().unwrap().unwrap();
        assert_eq!(first.payload, payload(0));
        s.advance();
        drop(s);
        // Unacknowledged records survive; the acknowledged one does not come again.
        let mut s = Spool::open(dir.path()).unwrap();
        s.append(&payload(5)).unwrap();
        let got = drain(&mut s);
        assert_eq!(got, (1..6).map(payload).collect::<Vec<_>>());
        assert_eq!(s.bytes(), 0);
        assert!(s.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg"))
                .count(),
            0
        );
        // A garbage cursor means "from the start", not an error.
        std::fs::write(dir.path().join(CURSOR), "x y").unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        s.append(&payload(9)).unwrap();
        assert_eq!(drain(&mut s), vec![payload(9)]);
    }

    #[test]
    fn tenants_are_kept_and_records_without_one_keep_the_old_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let plain = s.append(&payload(1)).unwrap();
        let p2 = payload(2);
        s.append_encoded(p2.kind(), Some("shop"), &p2.encode())
            .unwrap();
        s.append(&payload(3)).unwrap();
        drop(s);
        // The record without a tenant is what earlier versions wrote:
        // [len][crc][kind 1][protobuf].
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&seg).unwrap();
        let encoded = payload(1).encode();
        assert_eq!(plain, HEADER + 1 + encoded.len() as u64);
        assert_eq!(bytes[HEADER as usize], 1);
        assert_eq!(&bytes[HEADER as usize + 1..plain as usize], &encoded[..]);
        assert_eq!(bytes[plain as usize + HEADER as usize], 1 | WITH_TENANT);

        let mut s = Spool::open(dir.path()).unwrap();
        let mut got = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            got.push((r.payload, r.tenant));
            s.advance();
        }
        assert_eq!(
            got,
            vec![
                (payload(1), None),
                (payload(2), Some("shop".to_owned())),
                (payload(3), None)
            ]
        );
        // A tenant record cut short inside is skipped, not misread.
        for body in [&[0x81u8][..], &[0x81, 9, 0, b'x'], &[0x81, 1, 0, 0xff]] {
            assert!(decode_record(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn corrupt_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let n = s.append(&payload(1)).unwrap();
        s.append(&payload(2)).unwrap();
        s.append(&payload(3)).unwrap();
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[(n + HEADER + 2) as usize] ^= 0xff; // body of the second record
        std::fs::write(&seg, &bytes).unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(drain(&mut s), vec![payload(1), payload(3)]);
        assert_eq!(s.corrupt_records(), 1);

        // A torn tail: the rest of the segment is skipped, no error.
        let mut s = Spool::open(dir.path()).unwrap();
        s.append(&payload(7)).unwrap();
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &bytes[..bytes.len() - 3]).unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.corrupt_records(), 1);
    }
}
