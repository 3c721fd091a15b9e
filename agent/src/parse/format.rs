//! Line formats: CRI (`<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <msg>`),
//! Docker json-file (`{"log","stream","time"}`, recognised by a leading `{`)
//! and plain lines. Each line decodes into an [`Entry`]; partial pieces are
//! joined later, per file and stream.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The output stream of a container line; plain files use `Stdout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (and plain files).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// Index for per-stream state.
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Which format a line was recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Container runtime interface log line.
    Cri,
    /// Docker json-file line.
    Docker,
    /// Anything else.
    Plain,
}

/// One decoded line.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// Timestamp from the line, Unix ns; 0 when the line has none.
    pub time_ns: u64,
    /// Stream.
    pub stream: Stream,
    /// A piece to be joined with the following ones (CRI `P`, Docker without `\n`).
    pub partial: bool,
    /// The message bytes (no trailing newline).
    pub msg: Vec<u8>,
    /// The format recognised.
    pub format: Format,
}

/// Decodes one line (without its newline), trying CRI, then Docker, then plain.
pub fn decode(line: &[u8]) -> Entry {
    if let Some(e) = decode_cri(line) {
        return e;
    }
    if line.first() == Some(&b'{')
        && let Some(e) = decode_docker(line)
    {
        return e;
    }
    Entry {
        time_ns: 0,
        stream: Stream::Stdout,
        partial: false,
        msg: line.to_vec(),
        format: Format::Plain,
    }
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm`, up to nanoseconds) into Unix ns.
pub fn parse_rfc3339_ns(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok()
}

fn decode_cri(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let msg = parts.next().unwrap_or(b"");
    // Cheap reject before the timestamp parse: CRI lines start with a digit.
    if !ts.first()?.is_ascii_digit() {
        return None;
    }
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time_ns = parse_rfc3339_ns(std::str::from_utf8(ts).ok()?)?;
    Some(Entry {
        time_ns,
        stream,
        partial,
        msg: msg.to_vec(),
        format: Format::Cri,
    })
}

#[derive(serde::Deserialize)]
struct DockerLine {
    log: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

fn decode_docker(line: &[u8]) -> Option<Entry> {
    let d: DockerLine = serde_json::from_slice(line).ok()?;
    let stream = match d.stream.as_deref() {
        Some("stderr") => Stream::Stderr,
        _ => Stream::Stdout,
    };
    let mut msg = d.log.into_bytes();
    // json-file splits long lines into pieces; only the last ends in a newline.
    let partial = msg.last() != Some(&b'\n');
    if !partial {
        msg.pop();
        if msg.last() == Some(&b'\r') {
            msg.pop();
        }
    }
    Some(Entry {
        time_ns: d.time.as_deref().and_then(parse_rfc3339_ns).unwrap_or(0),
        stream,
        partial,
        msg,
        format: Format::Docker,
    })
}
