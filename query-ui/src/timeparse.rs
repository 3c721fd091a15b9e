//! Time parameters: RFC 3339 or Unix seconds in, RFC 3339 with nanoseconds out.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses RFC 3339 (`2026-11-22T10:00:00Z`) or Unix seconds (`1763805600`,
/// fractions allowed) into Unix nanoseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e9 {
            return Err(format!("time {s:?} is out of range"));
        }
        return Ok((secs * 1e9).round() as i64);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("invalid time {s:?}: expected RFC 3339 or Unix seconds ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("time {s:?} is out of range"))
}

/// Formats Unix nanoseconds as RFC 3339 in UTC with nine fraction digits.
pub fn format_rfc3339_ns(ns: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            parse_time("1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.000000001+01:00").unwrap(),
            1_700_000_000_000_000_001
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            format_rfc3339_ns(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
    }
}
