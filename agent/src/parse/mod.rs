//! Parsing of tailed lines into log records, per file.
//!
//! The stages, in order: [`format::decode`] (CRI, Docker json-file or plain),
//! the join of partial pieces per stream (CRI `P`/`F`, Docker pieces without
//! a newline) with a size cap and an idle flush, multiline grouping by a
//! start regex per stream with a timeout, then enrichment (JSON bodies,
//! severity). A [`FileParser`] also knows the lowest file offset whose bytes
//! are still held in a pending buffer, so checkpoints never skip them.

pub mod enrich;
pub mod format;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use periscope_proto::otlp::common::v1::KeyValue;
use regex::Regex;

pub use format::{Format, Stream};

/// How long a pending partial or multiline record waits for more lines.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// One complete line read from a file, with its byte range.
#[derive(Debug, Clone)]
pub struct Line {
    /// Content without the newline; at most `max_line_bytes`.
    pub bytes: Vec<u8>,
    /// The line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
    /// Offset of the first byte of the line.
    pub start: u64,
    /// Offset just past its newline.
    pub end: u64,
}

/// A record ready for export.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Timestamp from the line, Unix ns; 0 if none.
    pub time_ns: u64,
    /// Body text (invalid UTF-8 replaced).
    pub body: String,
    /// Severity number and text (0, "" if unknown).
    pub severity: (i32, &'static str),
    /// Record attributes (`log.iostream`, `log.truncated`, JSON fields).
    pub attributes: Vec<KeyValue>,
}

/// Parser options shared by every file.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Size cap of a joined or multiline record.
    pub max_line_bytes: usize,
    /// Multiline start pattern.
    pub multiline_start: Option<Regex>,
    /// Parse JSON bodies into attributes.
    pub parse_json: bool,
    /// Idle flush delay of pending records.
    pub flush_timeout: Duration,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    time_ns: u64,
    start: u64,
    truncated: bool,
    format: Option<Format>,
    last: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.last.is_none()
    }
    fn push(&mut self, msg: &[u8], sep: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.buf.len());
        let total = sep.len() + msg.len();
        if total <= room {
            self.buf.extend_from_slice(sep);
            self.buf.extend_from_slice(msg);
        } else {
            let mut piece = Vec::with_capacity(total);
            piece.extend_from_slice(sep);
            piece.extend_from_slice(msg);
            self.buf.extend_from_slice(&piece[..room]);
            self.truncated = true;
        }
    }
    fn take(&mut self) -> Pending {
        std::mem::take(self)
    }
}

/// A joined entry moving from the join stage to the multiline stage.
struct Joined<'a> {
    time_ns: u64,
    stream: Stream,
    msg: Cow<'a, [u8]>,
    start: u64,
    truncated: bool,
    format: Format,
}

/// Per-file parser state.
#[derive(Debug)]
pub struct FileParser {
    opts: ParseOptions,
    partial: [Pending; 2],
    multi: [Pending; 2],
}

impl FileParser {
    /// A parser with nothing pending.
    pub fn new(opts: ParseOptions) -> Self {
        FileParser {
            opts,
            partial: Default::default(),
            multi: Default::default(),
        }
    }

    /// Feeds one line; complete records are appended to `out`.
    pub fn push(&mut self, line: Line, now: Instant, out: &mut Vec<Record>) {
        self.push_bytes(&line.bytes, line.truncated, line.start, now, out);
    }

    /// Feeds one line given by its bytes (without the newline, at most
    /// `max_line_bytes`), whether it was cut, and the offset of its first
    /// byte. Nothing is copied but the message of a complete record.
    pub fn push_bytes(
        &mut self,
        bytes: &[u8],
        truncated: bool,
        start: u64,
        now: Instant,
        out: &mut Vec<Record>,
    ) {
        let entry = format::decode(bytes);
        let i = entry.stream.index();
        let cap = self.opts.max_line_bytes;
        let p = &mut self.partial[i];
        if entry.partial {
            if p.is_empty() {
                p.start = start;
                p.time_ns = entry.time_ns;
                p.format = Some(entry.format);
            }
            p.push(&entry.msg, b"", cap);
            p.truncated |= truncated;
            p.last = Some(now);
            return;
        }
        let joined = if p.is_empty() {
            Joined {
                time_ns: entry.time_ns,
                stream: entry.stream,
                msg: entry.msg,
                start,
                truncated,
                format: entry.format,
            }
        } else {
            p.push(&entry.msg, b"", cap);
            let p = p.take();
            Joined {
                time_ns: p.time_ns,
                stream: entry.stream,
                msg: Cow::Owned(p.buf),
                start: p.start,
                truncated: p.truncated || truncated,
                format: entry.format,
            }
        };
        self.multiline(joined, now, out);
    }

    fn multiline(&mut self, j: Joined<'_>, now: Instant, out: &mut Vec<Record>) {
        let i = j.stream.index();
        let Some(re) = &self.opts.multiline_start else {
            out.push(self.finish(j.stream, j.format, j.time_ns, j.msg, j.truncated));
            return;
        };
        let is_start = re.is_match(&String::from_utf8_lossy(&j.msg));
        let m = &mut self.multi[i];
        if is_start || m.is_empty() {
            if !m.is_empty() {
                let done = m.take();
                out.push(self.finish_pending(j.stream, done));
            }
            let m = &mut self.multi[i];
            m.start = j.start;
            m.time_ns = j.time_ns;
            m.format = Some(j.format);
            m.push(&j.msg, b"", self.opts.max_line_bytes);
            m.truncated |= j.truncated;
            m.last = Some(now);
        } else {
            m.push(&j.msg, b"\n", self.opts.max_line_bytes);
            m.truncated |= j.truncated;
            m.last = Some(now);
        }
    }

    /// Emits pending records idle for longer than the flush timeout (all of
    /// them when `force`, e.g. at the end of a file that is being closed).
    pub fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Record>) {
        let timeout = self.opts.flush_timeout;
        let due = |p: &Pending| {
            p.last
                .is_some_and(|t| force || now.saturating_duration_since(t) >= timeout)
        };
        for stream in [Stream::Stdout, Stream::Stderr] {
            let i = stream.index();
            if due(&self.partial[i]) {
                let p = self.partial[i].take();
                let j = Joined {
                    time_ns: p.time_ns,
                    stream,
                    msg: Cow::Owned(p.buf),
                    start: p.start,
                    truncated: p.truncated,
                    format: p.format.unwrap_or(Format::Plain),
                };
                self.multiline(j, now, out);
            }
            if due(&self.multi[i]) {
                let p = self.multi[i].take();
                out.push(self.finish_pending(stream, p));
            }
        }
    }

    /// The lowest offset still held in a pending buffer, if any: a checkpoint
    /// must not pass it.
    pub fn pending_start(&self) -> Option<u64> {
        self.partial
            .iter()
            .chain(self.multi.iter())
            .filter(|p| !p.is_empty())
            .map(|p| p.start)
            .min()
    }

    fn finish_pending(&self, stream: Stream, p: Pending) -> Record {
        self.finish(
            stream,
            p.format.unwrap_or(Format::Plain),
            p.time_ns,
            Cow::Owned(p.buf),
            p.truncated,
        )
    }

    fn finish(
        &self,
        stream: Stream,
        format: Format,
        time_ns: u64,
        msg: Cow<'_, [u8]>,
        truncated: bool,
    ) -> Record {
        let mut body = match String::from_utf8(msg.into_owned()) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let mut attributes = Vec::new();
        if format != Format::Plain {
            attributes.push(enrich::kv_str("log.iostream", stream.as_str()));
        }
        if truncated {
            attributes.push(enrich::kv_bool("log.truncated", true));
        }
        let mut severity = None;
        if self.opts.parse_json
            && let Some(j) = enrich::parse_json_body(&body)
        {
            if let Some(m) = j.message {
                body = m;
            }
            severity = j.severity;
            attributes.extend(j.attributes);
        }
        let severity = severity
            .or_else(|| enrich::severity_from_text(&body))
            .unwrap_or((0, ""));
        Record {
            time_ns,
            body,
            severity,
            attributes,
        }
    }
}

#[cfg(test)]
mod tests;
