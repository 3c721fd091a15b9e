//! Hour partitions, shared by every store: a partition holds the data of
//! one tenant and one UTC hour, in a directory named `YYYY-MM-DDTHH`
//! (`2026-11-21T10`). Retention deletes whole partitions, so the name is
//! also the unit of deletion.

/// One hour in nanoseconds.
pub(crate) const HOUR_NS: i64 = 3_600_000_000_000;
/// One hour in milliseconds (the metric store's unit).
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// The start (Unix ns) of the hour partition holding `ts_ns`.
pub fn hour_partition(ts_ns: i64) -> i64 {
    // Saturating: the hour of `i64::MIN` starts before it.
    ts_ns.div_euclid(HOUR_NS).saturating_mul(HOUR_NS)
}

/// The directory name of the partition starting at `hour_ns`.
pub(crate) fn partition_dir_name(hour_ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(hour_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// The start (Unix ns) of the partition a directory is named after, or
/// `None` for a name that is not a partition's.
pub(crate) fn parse_partition_dir_name(name: &str) -> Option<i64> {
    let (date, hour) = name.split_once('T')?;
    let mut parts = date.split('-');
    let (y, m, d) = (
        parts.next()?.parse::<i32>().ok()?,
        parts.next()?.parse::<u8>().ok()?,
        parts.next()?.parse::<u8>().ok()?,
    );
    let hour: u8 = hour.parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    let t = date.with_hms(hour, 0, 0).ok()?.assume_utc();
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_refuse_other_names() {
        for (hour_ns, name) in [
            (0, "1970-01-01T00"),
            (1_767_225_600_000_000_000, "2026-01-01T00"),
            (1_767_225_600_000_000_000 + 23 * HOUR_NS, "2026-01-01T23"),
        ] {
            assert_eq!(partition_dir_name(hour_ns), name);
            assert_eq!(parse_partition_dir_name(name), Some(hour_ns));
        }
        for bad in [
            "manifest.json",
            "2026-13-01T00",
            "2026-01-01T24",
            "2026-01-01",
        ] {
            assert_eq!(parse_partition_dir_name(bad), None, "{bad}");
        }
        assert_eq!(hour_partition(HOUR_NS + 5), HOUR_NS);
        assert_eq!(hour_partition(-1), -HOUR_NS);
    }
}
