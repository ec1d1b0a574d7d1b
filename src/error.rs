//! The crate's error type. Every message is one line that says what is wrong and,
//! where it helps, what to do about it; binaries print it as `error: {e}` and exit 1.

use std::path::{Path, PathBuf};

/// Errors that smelt reports to its callers (never panics on bad input).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is malformed, unknown or inconsistent.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input data is missing or unusable.
    #[error("{0}")]
    Data(String),
    /// Training or loading a tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A checkpoint or weight file is malformed or does not fit the model.
    #[error("{0}")]
    Checkpoint(String),
    /// The requested compute device cannot be used.
    #[error("{0}")]
    Device(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
