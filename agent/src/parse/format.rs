//! Line formats: CRI (`<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <msg>`),
//! Docker json-file (`{"log","stream","time"}`, recognised by a leading `{`)
//! and plain lines. Each line decodes into an [`Entry`]; partial pieces are
//! joined later, per file and stream.

use std::borrow::Cow;

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

/// One decoded line; the message borrows from the line unless it had to be
/// unescaped (Docker JSON).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Timestamp from the line, Unix ns; 0 when the line has none.
    pub time_ns: u64,
    /// Stream.
    pub stream: Stream,
    /// A piece to be joined with the following ones (CRI `P`, Docker without `\n`).
    pub partial: bool,
    /// The message bytes (no trailing newline).
    pub msg: Cow<'a, [u8]>,
    /// The format recognised.
    pub format: Format,
}

/// Decodes one line (without its newline), trying CRI, then Docker, then plain.
pub fn decode(line: &[u8]) -> Entry<'_> {
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
        msg: Cow::Borrowed(line),
        format: Format::Plain,
    }
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm`, up to nanoseconds) into Unix ns.
///
/// The shape every container runtime writes (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]`
/// then `Z` or `±hh:mm`, a year from 1970) is read by hand, since this runs
/// once per line; anything else goes to the `time` crate's full parser.
pub fn parse_rfc3339_ns(s: &str) -> Option<u64> {
    match parse_common_rfc3339(s.as_bytes()) {
        Some(ns) => ns,
        None => {
            let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
            u64::try_from(t.unix_timestamp_nanos()).ok()
        }
    }
}

/// The fast path of [`parse_rfc3339_ns`]: `None` when the text is not of the
/// common shape (the full parser decides), `Some(result)` otherwise.
fn parse_common_rfc3339(b: &[u8]) -> Option<Option<u64>> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Leap seconds and dates the full parser must judge go there.
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        let frac = u64::from(num(start..i)?);
        nanos = frac * 10u64.pow(9 - digits as u32);
    }
    let offset_secs: i64 = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let d = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let (oh, om) = (d(h1)? * 10 + d(h2)?, d(m1)? * 10 + d(m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some(
        u64::try_from(secs)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|ns| ns.checked_add(nanos)),
    )
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (years from 1970).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years counted from March, so that the leap day ends a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn decode_cri(line: &[u8]) -> Option<Entry<'_>> {
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
        msg: Cow::Borrowed(msg),
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

fn decode_docker(line: &[u8]) -> Option<Entry<'static>> {
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
        msg: Cow::Owned(msg),
        format: Format::Docker,
    })
}
