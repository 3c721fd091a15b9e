//! The grammar as a table: strings with the value they mean, or `None` where
//! they are refused. This crate's tests check the parsers against it, and the
//! collector's and the agent's configuration tests check that each binary
//! accepts and refuses exactly these strings, from a flag and from the file.

/// Sizes and their number of bytes.
pub const SIZES: &[(&str, Option<u64>)] = &[
    ("0", Some(0)),
    ("1048576", Some(1 << 20)),
    ("100B", Some(100)),
    ("512KiB", Some(512 << 10)),
    ("2K", Some(2 << 10)),
    ("2k", Some(2 << 10)),
    ("2KB", Some(2_000)),
    ("2kB", Some(2_000)),
    ("16M", Some(16 << 20)),
    ("16MiB", Some(16 << 20)),
    ("16 MiB", Some(16 << 20)),
    ("10MB", Some(10_000_000)),
    ("1G", Some(1 << 30)),
    ("1GiB", Some(1 << 30)),
    ("3GB", Some(3_000_000_000)),
    ("1T", Some(1 << 40)),
    ("1TiB", Some(1 << 40)),
    ("2TB", Some(2_000_000_000_000)),
    ("", None),
    ("banana", None),
    ("MiB", None),
    ("-1", None),
    ("1.5GiB", None),
    ("5XB", None),
    ("16mib", None),
    ("16Mi", None),
    ("1PiB", None),
    ("99999999999999999999", None),
    ("16777216TiB", None),
];

/// Durations and their number of milliseconds.
pub const DURATIONS: &[(&str, Option<u64>)] = &[
    ("0", Some(0)),
    ("0s", Some(0)),
    ("250ms", Some(250)),
    ("15s", Some(15_000)),
    ("90m", Some(5_400_000)),
    ("12h", Some(43_200_000)),
    ("7d", Some(604_800_000)),
    ("2w", Some(1_209_600_000)),
    ("5 s", Some(5_000)),
    ("", None),
    ("5", None),
    ("forever", None),
    ("5y", None),
    ("1.5s", None),
    ("-1s", None),
    ("1h30m", None),
    ("5S", None),
    ("100us", None),
    ("99999999999999999999s", None),
];
