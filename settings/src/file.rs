//! The configuration file: read and parsed as TOML into a binary's own
//! `FileConfig`, with errors in one line (a configuration error is one line
//! on stderr and exit code 2 for both binaries).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// Not TOML, or a key or value the binary does not take.
    #[error("invalid config file {}: {}", path.display(), one_line(&source.to_string()))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, which quotes the offending line.
        source: toml::de::Error,
    },
}

/// Reads `path` as TOML into `T` (a struct with `deny_unknown_fields`).
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// `s` with every run of whitespace, line breaks included, made one space.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct F {
        size: Option<crate::ByteSize>,
    }

    #[test]
    fn errors_are_one_line_and_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "sise = \"1M\"\n").unwrap();
        let e = read_file::<F>(&path).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid config file ") && e.contains("sise"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = read_file::<F>(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read config file ") && e.contains("missing.toml"),
            "{e}"
        );
    }
}
