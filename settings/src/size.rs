//! [`ByteSize`]: `1048576`, `512KiB`, `16M`, `10MB`, `1TiB`.
//!
//! The grammar is a whole number, optional spaces, and an optional unit:
//!
//! | unit | factor |
//! |---|---|
//! | none, `B` | 1 |
//! | `K`, `k`, `KiB` / `M`, `MiB` / `G`, `GiB` / `T`, `TiB` | 1024, 1024², 1024³, 1024⁴ |
//! | `KB`, `kB` / `MB` / `GB` / `TB` | 1000, 1000², 1000³, 1000⁴ |
//!
//! A single letter means the binary unit (as in GNU coreutils' `--block-size`:
//! `K` is 1024, `KB` is 1000): the collector always read `16M` as 16 MiB, and
//! every documented default is written with an `i` unit, so no existing value
//! changes meaning. Units are case-sensitive apart from the `k` of kilo.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::{ParseError, split_number};

const UNITS: &str =
    "B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)";

/// A number of bytes, written with an optional unit (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// `n` bytes.
    pub const fn b(n: u64) -> ByteSize {
        ByteSize(n)
    }

    /// `n` KiB.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n << 10)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The number of bytes as a `usize`, saturating on targets where it is
    /// narrower than 64 bits.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<ByteSize, ParseError> {
        let (num, unit) = split_number(s);
        let n: u64 = match num.parse() {
            Ok(n) => n,
            // All digits yet no u64: too many of them.
            Err(_) if !num.is_empty() => return Err(ParseError::TooLarge),
            Err(_) => return Err(ParseError::NotANumber { example: "16MiB" }),
        };
        let factor: u64 = match unit {
            "" | "B" => 1,
            "K" | "k" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            u => {
                return Err(ParseError::UnknownUnit {
                    unit: u.to_owned(),
                    allowed: UNITS,
                });
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or(ParseError::TooLarge)
    }
}

/// The largest binary unit that divides the value exactly, else plain bytes:
/// `16MiB`, `1500`, `0`. Parses back to the same value.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if n != 0 && n.trailing_zeros() >= shift {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

/// From a TOML (or JSON) string in the grammar above, or a non-negative
/// integer of bytes.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16MiB\" or a number of bytes")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}
