//! Value types of Periscope's configuration, shared by the collector
//! (`periscope`) and the agent (`periscope-agent`) so that one string means
//! the same thing to both, whether it comes from a flag, an environment
//! variable or the TOML file.
//!
//! - [`ByteSize`]: a whole number of bytes with an optional unit.
//! - [`HumanDuration`]: a whole number with a unit, or a bare `0`.
//! - [`read_file`]: the TOML file into a binary's file struct, with a
//!   one-line [`FileError`].
//!
//! Both implement [`FromStr`](std::str::FromStr) (which clap uses as their
//! value parser), [`Display`](std::fmt::Display) (which parses back to the
//! same value) and serde's `Deserialize` from a string or an integer. The
//! grammar knows nothing of any one setting: whether `0` makes sense, and
//! any bound, is checked by the setting.
//!
//! ```
//! use periscope_settings::{ByteSize, HumanDuration};
//! use std::time::Duration;
//!
//! let size: ByteSize = "16M".parse().unwrap();
//! assert_eq!(size, ByteSize::mib(16));
//! assert_eq!(size.to_string(), "16MiB");
//! assert_eq!("10MB".parse::<ByteSize>().unwrap().bytes(), 10_000_000);
//!
//! let d: HumanDuration = "7d".parse().unwrap();
//! assert_eq!(d.get(), Duration::from_secs(7 * 86_400));
//! assert!("5".parse::<HumanDuration>().is_err());
//! ```

mod duration;
pub mod examples;
mod file;
mod size;

pub use duration::HumanDuration;
pub use file::{FileError, one_line, read_file};
pub use size::ByteSize;

/// Why a size or duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No whole number at the start.
    #[error("expected a whole number with a unit, e.g. {example}")]
    NotANumber {
        /// A valid value of the same kind.
        example: &'static str,
    },
    /// A unit outside the grammar.
    #[error("unknown unit {unit:?} (use {allowed})")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The units the kind accepts.
        allowed: &'static str,
    },
    /// A duration other than `0` written without a unit.
    #[error("a duration needs a unit (ms, s, m, h, d, w); only 0 may go without")]
    MissingUnit,
    /// The value does not fit the type.
    #[error("value too large")]
    TooLarge,
}

/// Splits `"16 MiB"` into `("16", "MiB")`: the leading ASCII digits, then the
/// rest without the spaces around it.
fn split_number(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    (num, unit.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_follow_the_table_and_display_round_trips() {
        for &(s, want) in examples::SIZES {
            let got = s.parse::<ByteSize>();
            assert_eq!(got.as_ref().ok().map(|v| v.bytes()), want, "{s:?}: {got:?}");
            if let Ok(v) = got {
                assert_eq!(v.to_string().parse::<ByteSize>(), Ok(v), "{s:?} as {v}");
            }
        }
        assert_eq!(ByteSize::mib(16).to_string(), "16MiB");
        assert_eq!(ByteSize::b(1500).to_string(), "1500");
        assert_eq!(ByteSize::b(0).to_string(), "0");
        assert_eq!(ByteSize::b(3 << 40).to_string(), "3TiB");
    }

    #[test]
    fn durations_follow_the_table_and_display_round_trips() {
        for &(s, want) in examples::DURATIONS {
            let got = s.parse::<HumanDuration>();
            assert_eq!(
                got.as_ref().ok().map(|v| v.get().as_millis() as u64),
                want,
                "{s:?}: {got:?}"
            );
            if let Ok(v) = got {
                assert_eq!(
                    v.to_string().parse::<HumanDuration>(),
                    Ok(v),
                    "{s:?} as {v}"
                );
            }
        }
        assert_eq!(HumanDuration::days(7).to_string(), "1w");
        assert_eq!(HumanDuration::secs(90).to_string(), "90s");
        assert_eq!(HumanDuration::millis(1500).to_string(), "1500ms");
        assert_eq!(HumanDuration::secs(0).to_string(), "0s");
        assert_eq!(HumanDuration::mins(5).get(), Duration::from_secs(300));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |s: &str| s.parse::<ByteSize>().unwrap_err().to_string();
        assert!(e("5XB").contains("unknown unit \"XB\""), "{}", e("5XB"));
        assert!(e("banana").contains("whole number"));
        assert!(e("99999999999999999999").contains("too large"));
        let e = "5".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(e.contains("needs a unit"), "{e}");
    }

    #[test]
    fn toml_takes_strings_and_integers() {
        #[derive(Debug, serde::Deserialize)]
        struct F {
            size: Option<ByteSize>,
            every: Option<HumanDuration>,
        }
        let f: F = toml::from_str("size = \"16M\"\nevery = \"2w\"").unwrap();
        assert_eq!(f.size, Some(ByteSize::mib(16)));
        assert_eq!(f.every, Some(HumanDuration::days(14)));
        let f: F = toml::from_str("size = 1024\nevery = 0").unwrap();
        assert_eq!(f.size, Some(ByteSize::kib(1)));
        assert_eq!(f.every, Some(HumanDuration::secs(0)));
        for bad in [
            "size = -1",
            "size = true",
            "size = \"lots\"",
            "every = 5",
            "every = \"5y\"",
        ] {
            let e = toml::from_str::<F>(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{bad}: {e}");
        }
    }
}
