//! Container logs of the simulated pods, for `--with-agent`: each service's
//! log lines as a container runtime writes them (CRI format, one file per
//! container under `pods/<namespace>_<pod>_<uid>/<container>/0.log`, the
//! kubelet's `/var/log/pods` layout), for the node agent to tail.
//!
//! Files are rotated like the kubelet does (`0.log` renamed with a time
//! suffix, one old file kept), so the directory stays bounded.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use periscope_proto::id_hex;

use super::shop::{NAMESPACE, Shop, Svc};
use super::trace::SimLog;

/// A container log is rotated once it is this big.
const ROTATE_BYTES: u64 = 8 << 20;

/// One line for a container's log.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The container (service) that printed it.
    pub svc: Svc,
    /// The whole CRI line, with its trailing newline.
    pub text: String,
}

/// Where the simulated pods' logs go.
#[derive(Debug)]
pub struct PodLogs {
    root: PathBuf,
    files: Vec<PathBuf>,
    sizes: Vec<u64>,
    /// A file is rotated before it would grow past this.
    rotate_bytes: u64,
}

impl PodLogs {
    /// The logs of `shop`'s pods under `root` (nothing is written yet).
    pub fn new(root: PathBuf, shop: &Shop) -> PodLogs {
        let files = Svc::ALL
            .iter()
            .map(|svc| {
                let pod = shop.pod(*svc);
                root.join(format!("{NAMESPACE}_{}_{}", pod.name, pod.uid))
                    .join(svc.name())
                    .join("0.log")
            })
            .collect();
        PodLogs {
            root,
            files,
            sizes: vec![0; Svc::ALL.len()],
            rotate_bytes: ROTATE_BYTES,
        }
    }

    /// Rotates files before they grow past `bytes` (tests use small files).
    #[cfg(test)]
    pub fn rotate_at(mut self, bytes: u64) -> PodLogs {
        self.rotate_bytes = bytes;
        self
    }

    /// The glob that matches every container log file.
    pub fn glob(&self) -> String {
        format!("{}/*/*/*.log", self.root.display())
    }

    /// Removes the logs of earlier runs' pods (as the kubelet removes those
    /// of deleted pods) and creates this run's directories. Blocking.
    pub fn prepare(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for f in &self.files {
            if let Some(dir) = f.parent() {
                std::fs::create_dir_all(dir)?;
            }
        }
        Ok(())
    }

    /// Appends lines to their containers' files, rotating full ones. Blocking.
    pub fn append(&mut self, lines: &[Line]) -> std::io::Result<()> {
        for svc in Svc::ALL {
            let i = svc as usize;
            let mut buf = String::new();
            for l in lines.iter().filter(|l| l.svc == svc) {
                buf.push_str(&l.text);
            }
            if buf.is_empty() {
                continue;
            }
            let path = &self.files[i];
            if self.sizes[i] > 0 && self.sizes[i] + buf.len() as u64 > self.rotate_bytes {
                rotate(path)?;
                self.sizes[i] = 0;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(buf.as_bytes())?;
            self.sizes[i] += buf.len() as u64;
        }
        Ok(())
    }
}

/// Renames `0.log` to `0.log.<YYYYmmdd-HHMMSS>` and deletes older rotations.
fn rotate(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("0.log.") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let suffix = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    std::fs::rename(path, dir.join(format!("0.log.{suffix}")))
}

/// RFC 3339 with nanoseconds, as container runtimes stamp lines.
fn cri_time(ns: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000000000Z".to_owned(),
    }
}

fn logfmt_value(out: &mut String, v: &str) {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=')
    {
        out.push_str(v);
    } else {
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn any_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// The line a service prints for a log record, in logfmt, in CRI framing;
/// errors go to stderr.
pub fn cri_line(log: &SimLog) -> Line {
    let r = &log.record;
    let level = match r.severity_number {
        n if n >= SeverityNumber::Error as i32 => "error",
        n if n >= SeverityNumber::Warn as i32 => "warn",
        n if n >= SeverityNumber::Info as i32 => "info",
        _ => "debug",
    };
    let mut msg = format!("level={level} msg=");
    logfmt_value(&mut msg, &any_text(r.body.as_ref()));
    let _ = write!(
        msg,
        " trace_id={} span_id={}",
        id_hex(&r.trace_id),
        id_hex(&r.span_id)
    );
    for kv in &r.attributes {
        let _ = write!(msg, " {}=", kv.key);
        logfmt_value(&mut msg, &any_text(kv.value.as_ref()));
    }
    let stream = if level == "error" { "stderr" } else { "stdout" };
    Line {
        svc: log.svc,
        text: format!("{} {stream} F {msg}\n", cri_time(r.time_unix_nano)),
    }
}
