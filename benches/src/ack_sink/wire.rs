//! A protobuf walk over an `ExportLogsServiceRequest` that counts log
//! records and the bytes of their string bodies without building the message:
//! `resource_logs` (1) → `scope_logs` (2) → `log_records` (2) → `body` (5) →
//! `string_value` (1). Other fields are skipped by wire type.

/// Totals of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Log records.
    pub records: u64,
    /// Bytes of string bodies.
    pub body_bytes: u64,
}

/// Why a request could not be walked.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// A varint ran past the end or over 10 bytes.
    Varint,
    /// A length or fixed-size field ran past the end.
    Truncated,
    /// A wire type this walk does not know (groups, or invalid).
    WireType(u64),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Varint => f.write_str("invalid varint"),
            WireError::Truncated => f.write_str("field runs past the end"),
            WireError::WireType(t) => write!(f, "unsupported wire type {t}"),
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos).ok_or(WireError::Varint)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::Varint)
}

/// Calls `f(field, bytes)` for every length-delimited field of a message and
/// skips the others.
fn each_len_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u64, &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let skip = match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| WireError::Truncated)?;
                let end = pos.checked_add(len).ok_or(WireError::Truncated)?;
                let field = buf.get(pos..end).ok_or(WireError::Truncated)?;
                f(key >> 3, field)?;
                len
            }
            t => return Err(WireError::WireType(t)),
        };
        pos = pos.checked_add(skip).ok_or(WireError::Truncated)?;
        if pos > buf.len() {
            return Err(WireError::Truncated);
        }
    }
    Ok(())
}

/// Counts the log records and body bytes of an encoded request.
pub fn count_logs(req: &[u8]) -> Result<Count, WireError> {
    let mut c = Count::default();
    each_len_field(req, |n, resource_logs| {
        if n != 1 {
            return Ok(());
        }
        each_len_field(resource_logs, |n, scope_logs| {
            if n != 2 {
                return Ok(());
            }
            each_len_field(scope_logs, |n, record| {
                if n != 2 {
                    return Ok(());
                }
                c.records += 1;
                each_len_field(record, |n, body| {
                    if n != 5 {
                        return Ok(());
                    }
                    each_len_field(body, |n, s| {
                        if n == 1 {
                            c.body_bytes += s.len() as u64;
                        }
                        Ok(())
                    })
                })
            })
        })
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn text(s: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(Value::StringValue(s.into())),
        })
    }

    #[test]
    fn counts_records_and_string_bodies() {
        let rec = |body: Option<AnyValue>| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body,
            attributes: vec![KeyValue {
                key: "log.iostream".into(),
                value: text("stdout"),
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: text("web"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![rec(text("hello")), rec(text("")), rec(None)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceLogs {
                    scope_logs: vec![
                        ScopeLogs {
                            log_records: vec![rec(text("four"))],
                            ..Default::default()
                        },
                        ScopeLogs {
                            log_records: vec![rec(Some(AnyValue {
                                value: Some(Value::IntValue(7)),
                            }))],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            ],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(
            count_logs(&bytes),
            Ok(Count {
                records: 5,
                body_bytes: 9
            })
        );
        assert_eq!(count_logs(&[]), Ok(Count::default()));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(count_logs(&[0x0a, 0x05, 0x01]), Err(WireError::Truncated));
        assert_eq!(count_logs(&[0xff; 11]), Err(WireError::Varint));
        assert_eq!(count_logs(&[0x0b]), Err(WireError::WireType(3)));
    }
}
