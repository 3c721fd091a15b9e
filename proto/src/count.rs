//! Counting the records of a protobuf request without decoding it, for
//! requests that backpressure refuses before they are decoded.

use crate::Signal;

/// Iterates the length-delimited fields of one message; stops at malformed data.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let (key, n) = varint(buf)?;
            buf = &buf[n..];
            let wire = key & 7;
            let number = (key >> 3) as u32;
            match wire {
                0 => buf = &buf[varint(buf)?.1..],
                1 => buf = buf.get(8..)?,
                5 => buf = buf.get(4..)?,
                2 => {
                    let (len, n) = varint(buf)?;
                    let len = usize::try_from(len).ok()?;
                    let value = buf.get(n..n.checked_add(len)?)?;
                    buf = &buf[n + len..];
                    return Some((number, value));
                }
                _ => return None,
            }
        }
    })
}

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn count_at(buf: &[u8], path: &[u32]) -> usize {
    match path {
        [] => 1,
        [first, rest @ ..] => fields(buf)
            .filter(|(n, _)| n == first)
            .map(|(_, v)| count_at(v, rest))
            .sum(),
    }
}

/// Log records, spans or metric data points in a protobuf export request
/// (best effort: malformed parts count as nothing).
pub fn count_records(signal: Signal, body: &[u8]) -> usize {
    match signal {
        // ExportLogsServiceRequest.resource_logs(1).scope_logs(2).log_records(2)
        Signal::Logs => count_at(body, &[1, 2, 2]),
        // ExportTraceServiceRequest.resource_spans(1).scope_spans(2).spans(2)
        Signal::Traces => count_at(body, &[1, 2, 2]),
        // resource_metrics(1).scope_metrics(2).metrics(2).{gauge 5, sum 7, histogram 9,
        // exponential_histogram 10, summary 11}.data_points(1)
        Signal::Metrics => [5, 7, 9, 10, 11]
            .iter()
            .map(|kind| count_at(body, &[1, 2, 2, *kind, 1]))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExportRequest;
    use prost::Message;

    #[test]
    fn counts_match_decoded_requests() {
        let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{},{"body":{"stringValue":"x"}}]},{"logRecords":[{}]}]},{"scopeLogs":[{"logRecords":[{}]}]}]}"#;
        let req = crate::decode_logs_json(json).unwrap();
        let bytes = req.encode_to_vec();
        assert_eq!(count_records(Signal::Logs, &bytes), 4);
        assert_eq!(ExportRequest::Logs(req).record_count(), 4);
        let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"asInt":"1"},{"asDouble":2}]}},{"histogram":{"dataPoints":[{"count":"3"}]}}]}]}]}"#;
        let bytes = crate::decode_metrics_json(json).unwrap().encode_to_vec();
        assert_eq!(count_records(Signal::Metrics, &bytes), 3);
        assert_eq!(count_records(Signal::Logs, b"\xff\xff garbage"), 0);
    }
}
