//! One followed file: its handle, read position, the incomplete last line
//! and the parser state.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use super::{FINGERPRINT_BYTES, Sink, TailOptions, fingerprint, fingerprint_matches};
use crate::checkpoint::{FileId, Fingerprint, Mark};
use crate::k8s;
use crate::parse::{FileParser, Line, Record};

/// The index of the first `\n` at or after `from`, eight bytes at a time.
fn find_newline(data: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut i = from;
    while let Some(chunk) = data.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ (u64::from(b'\n') * ONES);
        // Bit 7 set exactly in the bytes of x that are zero (no carry
        // crosses a byte).
        let zero = !(((x & (0x7f * ONES)) + 0x7f * ONES) | x) & (0x80 * ONES);
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    data.get(i..)?
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| i + p)
}
use crate::telemetry::Stats;

#[derive(Debug)]
pub(super) struct Tracked {
    pub id: FileId,
    pub path: PathBuf,
    pub fp: Fingerprint,
    /// `None` while idle-closed (or over the open-file budget).
    pub file: Option<File>,
    /// Next byte to read.
    read_pos: u64,
    /// End of the last complete line.
    line_end: u64,
    /// Bytes of the incomplete line after `line_end`.
    partial: Vec<u8>,
    /// Discarding the rest of an over-long line up to its newline.
    skipping: bool,
    /// Size at the last read.
    size_seen: u64,
    /// Modification time at the last look.
    mtime_seen: Option<std::time::SystemTime>,
    parser: FileParser,
    resource: k8s::FileResource,
    pub gone_since: Option<Instant>,
    pub last_activity: Instant,
    /// Offset of the last mark handed out.
    pub marked: Option<u64>,
    /// CRC-32 of bytes `[0, line_end)` when this process read them all
    /// (to recognise a copy of this file, see `Tailer::find_copy`).
    prefix_crc: Option<crc32fast::Hasher>,
    out: Vec<Record>,
}

/// What is known of a file's read prefix: a copy of the file that matches it
/// need not be read again up to `offset`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prefix {
    pub fp: Fingerprint,
    pub offset: u64,
    pub crc: u32,
}

impl Tracked {
    pub fn new(
        id: FileId,
        path: PathBuf,
        fp: Fingerprint,
        offset: u64,
        opts: &TailOptions,
        now: Instant,
    ) -> Self {
        // A symlink (e.g. /var/log/containers/*.log) names its pod only
        // through its target under /var/log/pods.
        let real = std::fs::canonicalize(&path)
            .ok()
            .filter(|r| k8s::from_path(r).is_some());
        let resource = k8s::FileResource::new(
            real.as_deref().unwrap_or(&path),
            &opts.node_name,
            opts.pods.as_ref(),
        );
        Tracked {
            id,
            path,
            fp,
            file: None,
            read_pos: offset,
            line_end: offset,
            partial: Vec::new(),
            skipping: false,
            size_seen: offset,
            mtime_seen: None,
            parser: FileParser::new(opts.parse.clone()),
            resource,
            gone_since: None,
            last_activity: now,
            marked: Some(offset),
            prefix_crc: (offset == 0).then(crc32fast::Hasher::new),
            out: Vec::new(),
        }
    }

    /// A file known to start with the `offset` bytes of another whose CRC is
    /// `crc`; its checkpoint moves to `offset` only through the batch path.
    pub fn new_copy(
        id: FileId,
        path: PathBuf,
        fp: Fingerprint,
        of: Prefix,
        opts: &TailOptions,
        now: Instant,
    ) -> Self {
        let mut t = Tracked::new(id, path, fp, of.offset, opts, now);
        t.marked = Some(0);
        t.prefix_crc = Some(crc32fast::Hasher::new_with_initial_len(of.crc, of.offset));
        t
    }

    /// The read prefix, if this process read the file from its start.
    pub fn prefix(&self) -> Option<Prefix> {
        let crc = self.prefix_crc.as_ref()?.clone().finalize();
        (self.line_end > 0).then_some(Prefix {
            fp: self.fp,
            offset: self.line_end,
            crc,
        })
    }

    fn hash_prefix(&mut self, bytes: &[u8]) {
        if let Some(h) = self.prefix_crc.as_mut() {
            h.update(bytes);
        }
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    pub fn read_pos(&self) -> u64 {
        self.read_pos
    }

    pub fn at_eof(&self) -> bool {
        self.size_seen <= self.read_pos
    }

    pub fn lag(&self) -> u64 {
        self.size_seen.saturating_sub(self.read_pos)
    }

    /// The parser holds lines not yet emitted.
    pub fn has_pending(&self) -> bool {
        self.parser.pending_start().is_some()
    }

    /// Offset below which every line has gone to the sink.
    pub fn safe_offset(&self) -> u64 {
        match self.parser.pending_start() {
            Some(p) => p.min(self.line_end),
            None => self.line_end,
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            id: self.id,
            fingerprint: self.fp,
            path: self.path.clone(),
            offset: self.safe_offset(),
        }
    }

    /// Gone from every matching path and drained, or closed while gone.
    pub fn should_drop(&self, opts: &TailOptions, now: Instant) -> bool {
        match self.gone_since {
            None => false,
            Some(_) if self.file.is_none() => true,
            Some(g) => self.at_eof() && now.saturating_duration_since(g) >= opts.rotate_wait,
        }
    }

    pub fn should_idle_close(&self, opts: &TailOptions, now: Instant) -> bool {
        self.file.is_some()
            && self.gone_since.is_none()
            && self.at_eof()
            && now.saturating_duration_since(self.last_activity) >= opts.idle_close
    }

    pub fn parser_flush(&mut self, now: Instant, force: bool, sink: &mut dyn Sink) {
        self.parser.flush(now, force, &mut self.out);
        self.drain_out(sink);
    }

    /// The file is done (gone and drained): an unterminated last line is
    /// emitted as it is, then everything pending.
    pub fn finish(&mut self, now: Instant, sink: &mut dyn Sink) {
        if !self.partial.is_empty() && !self.skipping {
            let bytes = std::mem::take(&mut self.partial);
            self.hash_prefix(&bytes);
            let start = self.line_end;
            self.line_end = self.read_pos;
            let line = Line {
                bytes,
                truncated: false,
                start,
                end: self.line_end,
            };
            self.parser.push(line, now, &mut self.out);
        }
        self.parser_flush(now, true, sink);
    }

    fn drain_out(&mut self, sink: &mut dyn Sink) {
        if self.out.is_empty() {
            return;
        }
        let resource = self.resource.get();
        for rec in self.out.drain(..) {
            sink.record(self.id, resource, rec);
        }
    }

    /// Restarts at offset 0 after a truncation or rewrite: what is pending is
    /// emitted first (it was read from the old content).
    fn restart(&mut self, now: Instant, sink: &mut dyn Sink, recent: &mut Vec<Prefix>) {
        if let Some(p) = self.prefix() {
            recent.push(p);
        }
        self.prefix_crc = Some(crc32fast::Hasher::new());
        tracing::info!(path = %self.path.display(), offset = self.read_pos, "file truncated; reading from the start");
        self.parser.flush(now, true, &mut self.out);
        self.drain_out(sink);
        self.partial.clear();
        self.skipping = false;
        self.read_pos = 0;
        self.line_end = 0;
        self.fp = Fingerprint::default();
    }

    /// Reads up to one quantum; returns the bytes read.
    pub fn read_some(
        &mut self,
        opts: &TailOptions,
        now: Instant,
        sink: &mut dyn Sink,
        stats: &Stats,
        recent: &mut Vec<Prefix>,
    ) -> std::io::Result<usize> {
        let Some(f) = self.file.as_ref() else {
            return Ok(0);
        };
        let meta = f.metadata()?;
        let size = meta.len();
        let mtime = meta.modified().ok();
        self.size_seen = size;
        // Unchanged since the last look: nothing to do. (Same size but a new
        // mtime can be a truncation refilled to exactly our offset.)
        if size == self.read_pos && mtime == self.mtime_seen {
            return Ok(0);
        }
        self.mtime_seen = mtime;
        // Copytruncate: shorter than our position, or first bytes rewritten.
        let rewritten = size < self.read_pos || !fingerprint_matches(f, size, self.fp)?;
        if rewritten {
            self.restart(now, sink, recent);
        } else if size == self.read_pos {
            return Ok(0);
        }
        let f = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("file closed"))?;
        if self.fp.len < FINGERPRINT_BYTES && size > u64::from(self.fp.len) {
            self.fp = fingerprint(f, size)?;
        }
        let want = (size - self.read_pos).min(opts.read_quantum as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = f.read_at(&mut buf[got..], self.read_pos + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        if got > 0 {
            self.last_activity = now;
            Stats::add(&stats.bytes_read, got as u64);
            self.consume(&buf, opts.max_line_bytes, now, stats);
            self.drain_out(sink);
        }
        Ok(got)
    }

    /// Splits newly read bytes into lines for the parser.
    fn consume(&mut self, data: &[u8], max: usize, now: Instant, stats: &Stats) {
        let base = self.read_pos;
        let old_end = self.line_end;
        let held = if self.prefix_crc.is_some() {
            self.partial.clone()
        } else {
            Vec::new()
        };
        self.read_pos += data.len() as u64;
        let mut start = 0;
        let mut lines = 0u64;
        while let Some(nl) = find_newline(data, start) {
            let piece = &data[start..nl];
            let line_start = self.line_end;
            self.line_end = base + nl as u64 + 1;
            start = nl + 1;
            if self.skipping {
                self.skipping = false;
                continue;
            }
            // The line is handed over as a slice of the read buffer unless
            // it began in an earlier read.
            let joined;
            let mut bytes = if self.partial.is_empty() {
                piece
            } else {
                let mut b = std::mem::take(&mut self.partial);
                b.extend_from_slice(piece);
                joined = b;
                &joined[..]
            };
            if let [rest @ .., b'\r'] = bytes {
                bytes = rest;
            }
            let truncated = bytes.len() > max;
            if truncated {
                bytes = &bytes[..max];
                Stats::add(&stats.lines_truncated, 1);
            }
            lines += 1;
            self.parser
                .push_bytes(bytes, truncated, line_start, now, &mut self.out);
        }
        let rest = &data[start..];
        if self.skipping {
            self.line_end = self.read_pos;
        } else {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > max {
                // Emit the first `max` bytes now, flagged; skip to the newline.
                let mut bytes = std::mem::take(&mut self.partial);
                bytes.truncate(max);
                let line_start = self.line_end;
                self.line_end = self.read_pos;
                self.skipping = true;
                lines += 1;
                Stats::add(&stats.lines_truncated, 1);
                self.parser.push(
                    Line {
                        bytes,
                        truncated: true,
                        start: line_start,
                        end: self.line_end,
                    },
                    now,
                    &mut self.out,
                );
            }
        }
        Stats::add(&stats.lines_read, lines);
        // Bytes [old_end, line_end) are `held` followed by the start of `data`.
        if self.prefix_crc.is_some() {
            let n = (self.line_end - old_end) as usize;
            let from_held = n.min(held.len());
            self.hash_prefix(&held[..from_held]);
            self.hash_prefix(&data[..n - from_held]);
        }
    }
}

#[cfg(test)]
mod newline_tests {
    use super::find_newline;

    #[test]
    fn finds_the_first_newline_from_any_start() {
        let mut x: u32 = 12345;
        for len in 0..40 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    // Newlines, bytes around them and high bytes.
                    [b'\n', b'\x0b', b'\t', 0x8a, 0xff, b'a', 0][(x >> 16) as usize % 7]
                })
                .collect();
            for from in 0..=len {
                let want = data[from..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|p| from + p);
                assert_eq!(find_newline(&data, from), want, "{data:?} from {from}");
            }
        }
    }
}
