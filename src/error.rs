//! The library's error for the edges (startup, the daemon): what kind of failure it is,
//! and a message. Only `cli` turns a kind into an exit code.

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A mistake in the config, the schema or the command line: retrying will not help.
    Usage,
    /// A store did not answer, or another runtime failure: worth retrying later.
    Unavailable,
}

/// A failure that ends a command or the daemon's start.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What to tell the operator (never a secret).
    pub message: String,
}

impl Error {
    /// A mistake in the config, the schema or the command line.
    pub fn usage(m: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Usage,
            message: m.to_string(),
        }
    }

    /// A store that did not answer, or another runtime failure.
    pub fn unavailable(m: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: m.to_string(),
        }
    }
}
