//! [`HumanDuration`]: `500ms`, `30s`, `15m`, `12h`, `7d`, `2w`, or `0`.
//!
//! The grammar is a whole number, optional spaces, and a unit: `ms`, `s`,
//! `m` (minutes), `h`, `d` (24 h), `w` (7 d). A bare number is refused, as it
//! is ambiguous, except `0`, which is zero in every unit. Whether zero is
//! allowed (e.g. "`0s` disables host metrics") is up to each setting.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::{ParseError, split_number};

const UNITS: &str = "ms, s, m, h, d, w";

/// A duration written with a unit (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// `n` milliseconds.
    pub const fn millis(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(n))
    }

    /// `n` seconds.
    pub const fn secs(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n))
    }

    /// `n` minutes.
    pub const fn mins(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n * 60))
    }

    /// `n` hours.
    pub const fn hours(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n * 3600))
    }

    /// `n` days.
    pub const fn days(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n * 86_400))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<HumanDuration, ParseError> {
        let (num, unit) = split_number(s);
        let n: u64 = match num.parse() {
            Ok(n) => n,
            Err(_) if !num.is_empty() => return Err(ParseError::TooLarge),
            Err(_) => return Err(ParseError::NotANumber { example: "15s" }),
        };
        let millis: u64 = match unit {
            "" if n == 0 => 0,
            "" => return Err(ParseError::MissingUnit),
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            u => {
                return Err(ParseError::UnknownUnit {
                    unit: u.to_owned(),
                    allowed: UNITS,
                });
            }
        };
        n.checked_mul(millis)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or(ParseError::TooLarge)
    }
}

/// The largest unit that divides the value exactly: `7d`, `90s`, `250ms`,
/// `0s`. Parses back to the same value (whole milliseconds, which is all the
/// grammar writes; a finer value is shown with `Debug`'s form).
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{d:?}");
        }
        let ms = d.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit_ms, unit) in [
            (604_800_000, "w"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ] {
            if ms.is_multiple_of(unit_ms) {
                return write!(f, "{}{unit}", ms / unit_ms);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// From a TOML (or JSON) string in the grammar above; an integer goes
/// through the same grammar, so only `0` is accepted without a unit.
impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"15s\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                n.to_string().parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                n.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
