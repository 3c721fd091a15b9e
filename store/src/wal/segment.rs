//! WAL segment files: a header, then length-prefixed, CRC-checked frames.
//!
//! ```text
//! header  b"PSCWAL" version:u16le
//! frame   len:u32le crc32:u32le lsn:u64le payload[len]     crc covers lsn and payload
//! payload kind:u8 tenant_len:u8 tenant body_zstd            body is the request
//! kind    signal (low 4 bits) | body format << 4 (0: OTLP protobuf, 1: Prometheus
//!         remote-write protobuf, uncompressed)
//! ```
//! A frame is valid only if it is complete and its CRC matches; the first
//! invalid frame marks a torn tail (a crash mid-write) and everything from it
//! on is cut off when the WAL opens.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use periscope_proto::Signal;

use crate::{StoreError, TenantId};

pub(crate) const MAGIC: &[u8; 6] = b"PSCWAL";
/// Version of the segment format. Bump on any change to the layout above.
pub(crate) const SEGMENT_VERSION: u16 = 1;
pub(crate) const HEADER_LEN: u64 = 8;
const FRAME_HEADER_LEN: usize = 16;
/// Larger than any request the receivers accept; a bigger length is corruption.
const MAX_PAYLOAD: usize = 1 << 30;

/// How a WAL entry's body is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// An OTLP export request (protobuf).
    #[default]
    Otlp = 0,
    /// A Prometheus remote-write `WriteRequest` (protobuf, not snappy-compressed).
    PromRemoteWrite = 1,
}

/// One WAL entry: an accepted request of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct WalEntry {
    /// Which signal the body holds.
    pub signal: Signal,
    /// How the body is encoded.
    pub format: BodyFormat,
    /// Whose data it is.
    pub tenant: TenantId,
    /// The OTLP export request, protobuf-encoded.
    pub body: Vec<u8>,
}

/// A WAL entry as read back, with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct WalRecord {
    /// Log sequence number: strictly increasing, never reused.
    pub lsn: u64,
    /// The entry.
    pub entry: WalEntry,
}

/// An entry serialized and compressed, ready to append. Built by the caller so
/// compression runs on the caller's thread, not the single WAL writer.
#[derive(Debug)]
pub struct EncodedEntry {
    pub(crate) signal: Signal,
    pub(crate) payload: Vec<u8>,
}

impl EncodedEntry {
    /// Bytes this entry takes in a segment.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Level 1: the WAL is short-lived; speed matters more than ratio.
const WAL_ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One compression context per thread, instead of one per entry.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(WAL_ZSTD_LEVEL).ok());
}

impl WalEntry {
    /// Serializes and zstd-compresses the entry.
    pub fn encode(&self) -> EncodedEntry {
        let tenant = self.tenant.as_str().as_bytes();
        let mut payload = Vec::with_capacity(2 + tenant.len() + self.body.len() / 3);
        payload.push(self.signal as u8 | ((self.format as u8) << 4));
        // TenantId guarantees at most 150 bytes.
        payload.push(tenant.len() as u8);
        payload.extend_from_slice(tenant);
        let compressed = COMPRESSOR.with_borrow_mut(|c| match c {
            Some(c) => c.compress(&self.body),
            None => zstd::bulk::compress(&self.body, WAL_ZSTD_LEVEL),
        });
        payload.extend_from_slice(&compressed.unwrap_or_default());
        EncodedEntry {
            signal: self.signal,
            payload,
        }
    }
}

pub(crate) fn write_frame(out: &mut Vec<u8>, lsn: u64, e: &EncodedEntry) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&lsn.to_le_bytes());
    crc.update(&e.payload);
    out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&e.payload);
}

pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..6].copy_from_slice(MAGIC);
    h[6..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

pub(crate) fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

/// A raw frame: position, LSN, and the undecoded payload.
pub(crate) struct Frame {
    pub lsn: u64,
    pub signal: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn decode(self, path: &Path) -> Result<WalRecord, StoreError> {
        let bad = |message: String| StoreError::Format {
            path: path.to_owned(),
            message,
        };
        let p = &self.payload;
        let signal = Signal::from_u8(self.signal & 0x0f)
            .ok_or_else(|| bad(format!("lsn {}: unknown signal {}", self.lsn, self.signal)))?;
        let format = match self.signal >> 4 {
            0 => BodyFormat::Otlp,
            1 => BodyFormat::PromRemoteWrite,
            f => return Err(bad(format!("lsn {}: unknown body format {f}", self.lsn))),
        };
        let tlen = *p
            .get(1)
            .ok_or_else(|| bad(format!("lsn {}: short payload", self.lsn)))?
            as usize;
        let tenant = p
            .get(2..2 + tlen)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or_else(|| bad(format!("lsn {}: bad tenant", self.lsn)))?;
        let tenant = TenantId::parse(tenant)?;
        let body = zstd::stream::decode_all(&p[2 + tlen..])
            .map_err(|e| bad(format!("lsn {}: bad zstd body: {e}", self.lsn)))?;
        Ok(WalRecord {
            lsn: self.lsn,
            entry: WalEntry {
                signal,
                format,
                tenant,
                body,
            },
        })
    }
}

/// Reads frames from a segment until its end or the first invalid frame.
pub(crate) struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset just past the last valid frame.
    pub valid_len: u64,
    /// Why reading stopped early, if it did.
    pub torn: Option<String>,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path) -> Result<SegmentReader, StoreError> {
        let file = File::open(path).map_err(StoreError::io("failed to open wal segment", path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut h = [0u8; HEADER_LEN as usize];
        let (valid_len, torn) = match read_full(&mut reader, &mut h) {
            Ok(8) if &h[..6] == MAGIC => {
                let v = u16::from_le_bytes([h[6], h[7]]);
                if v != SEGMENT_VERSION {
                    return Err(StoreError::Format {
                        path: path.to_owned(),
                        message: format!(
                            "wal segment version {v} is not supported (this build reads {SEGMENT_VERSION})"
                        ),
                    });
                }
                (HEADER_LEN, None)
            }
            Ok(8) => {
                return Err(StoreError::Format {
                    path: path.to_owned(),
                    message: "not a wal segment (bad magic)".into(),
                });
            }
            // A header cut short by a crash right after the file was created.
            _ => (0, Some("incomplete segment header".to_owned())),
        };
        Ok(SegmentReader {
            path: path.to_owned(),
            reader,
            valid_len,
            torn,
        })
    }

    /// The next valid frame, or `None` at the end or at a torn tail.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        if self.torn.is_some() {
            return None;
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        match read_full(&mut self.reader, &mut h) {
            Ok(0) => return None,
            Ok(n) if n < FRAME_HEADER_LEN => {
                self.torn = Some(format!(
                    "incomplete frame header at offset {}",
                    self.valid_len
                ));
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                self.torn = Some(format!("read error at offset {}: {e}", self.valid_len));
                return None;
            }
        }
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let lsn = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        if !(2..=MAX_PAYLOAD).contains(&len) {
            self.torn = Some(format!(
                "invalid frame length {len} at offset {}",
                self.valid_len
            ));
            return None;
        }
        let mut payload = vec![0u8; len];
        match read_full(&mut self.reader, &mut payload) {
            Ok(n) if n == len => {}
            _ => {
                self.torn = Some(format!("incomplete frame at offset {}", self.valid_len));
                return None;
            }
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn.to_le_bytes());
        hasher.update(&payload);
        if hasher.finalize() != crc {
            self.torn = Some(format!("checksum mismatch at offset {}", self.valid_len));
            return None;
        }
        self.valid_len += (FRAME_HEADER_LEN + len) as u64;
        Some(Frame {
            lsn,
            signal: payload[0],
            payload,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Like `read_exact`, but reports how much was read at end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
