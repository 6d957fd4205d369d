//! The one error type of `deeplake-core`.
//!
//! Variants are grouped by who must act: the caller (`InvalidInput`, `NotFound`,
//! `Conflict`, `Unsupported`), the operator of the storage (`Corrupt`, `Storage`, `Io`),
//! or us (`Internal`, a bug). Context travels in typed fields, never in concatenated
//! strings, so the daemon can map every variant to one HTTP status in one place.

use std::fmt;

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something we cannot accept (bad name, wrong dtype, bad shape, bad URL).
    #[error("invalid input: {message}")]
    InvalidInput { message: String },

    /// A dataset, tensor, commit, branch or row that does not exist.
    #[error("{what} not found: {name}")]
    NotFound { what: &'static str, name: String },

    /// Lost a race for a create-if-absent write, or a merge conflict. `retryable` marks
    /// races that a bounded reload-and-retry resolves.
    #[error("conflict on {path}: {message}")]
    Conflict {
        path: String,
        message: String,
        retryable: bool,
    },

    /// A valid request that this build does not support (a codec we cannot decode, ...).
    #[error("unsupported: {message}")]
    Unsupported { message: String },

    /// Bytes on storage that do not parse. `path` is the object key.
    #[error("corrupt object {path}: {reason}")]
    Corrupt { path: String, reason: String },

    /// The storage backend failed (network, permissions, throttling).
    #[error("storage error: {0}")]
    Storage(#[from] object_store::Error),

    #[error("io error: {0}")]
    Io(#[from] std::io::Error),

    /// A query the user must fix: its syntax, an unknown tensor or function, a type
    /// error. `pos` is the character offset in the query text where it went wrong.
    #[error("query error ({}): {message}{}", kind.as_str(), pos.map(|p| format!(" at position {p}")).unwrap_or_default())]
    Query {
        kind: QueryErrorKind,
        pos: Option<usize>,
        message: String,
    },

    /// A linked tensor's target could not be fetched (missing, refused, unreachable,
    /// too slow). Whoever owns the target or its credentials must act; `retryable`
    /// marks failures that may pass later (timeouts, 5xx, dropped connections), after
    /// the retries were spent. `target` never holds a query string (signed URLs).
    #[error("link {target}: {reason}")]
    Link {
        target: String,
        status: Option<u16>,
        reason: String,
        retryable: bool,
    },

    /// A user function of a transform failed (returned an error or panicked) on one
    /// input sample: the caller's code or data must change.
    #[error("transform function {function:?} failed on sample {sample}: {message}")]
    Transform {
        function: String,
        sample: u64,
        message: String,
    },

    /// An impossible state: a bug in this crate.
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// What is wrong with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryErrorKind {
    Syntax,
    UnknownColumn,
    UnknownFunction,
    TypeMismatch,
    InvalidValue,
    InvalidStatement,
    Unsupported,
    SourceNotFound,
}

impl QueryErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryErrorKind::Syntax => "syntax",
            QueryErrorKind::UnknownColumn => "unknown_column",
            QueryErrorKind::UnknownFunction => "unknown_function",
            QueryErrorKind::TypeMismatch => "type_mismatch",
            QueryErrorKind::InvalidValue => "invalid_value",
            QueryErrorKind::InvalidStatement => "invalid_statement",
            QueryErrorKind::Unsupported => "unsupported",
            QueryErrorKind::SourceNotFound => "source_not_found",
        }
    }
}

impl Error {
    pub fn invalid(message: impl fmt::Display) -> Self {
        Error::InvalidInput {
            message: message.to_string(),
        }
    }

    pub fn not_found(what: &'static str, name: impl fmt::Display) -> Self {
        Error::NotFound {
            what,
            name: name.to_string(),
        }
    }

    pub fn unsupported(message: impl fmt::Display) -> Self {
        Error::Unsupported {
            message: message.to_string(),
        }
    }

    pub fn corrupt(path: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Corrupt {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn query(kind: QueryErrorKind, pos: Option<usize>, message: impl fmt::Display) -> Self {
        Error::Query {
            kind,
            pos,
            message: message.to_string(),
        }
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Error::Internal {
            message: message.to_string(),
        }
    }

    /// Whether the storage backend failed in a way that may pass if the same call is
    /// made again later: a network failure, a 5xx or throttling that its client's own
    /// retries did not absorb. Not bad input, missing objects or bad bytes on storage,
    /// nor a backend that refuses us (permissions, credentials): those stay as they are.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Storage(object_store::Error::Generic { .. }))
    }

    /// Short machine-readable kind, used by the CLI and the HTTP layer.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid_input",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::Unsupported { .. } => "unsupported",
            Error::Corrupt { .. } => "corrupt",
            Error::Storage(_) => "storage",
            Error::Io(_) => "io",
            Error::Query { .. } => "query",
            Error::Link { .. } => "link",
            Error::Transform { .. } => "transform",
            Error::Internal { .. } => "internal",
        }
    }
}

/// A decoding failure inside `format`, which knows bytes but not object keys. The store
/// layer attaches the key with [`Corruption::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption(pub String);

impl Corruption {
    pub fn new(reason: impl fmt::Display) -> Self {
        Corruption(reason.to_string())
    }

    pub fn at(self, path: impl fmt::Display) -> Error {
        Error::corrupt(path, self.0)
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failing_backend_is_transient() {
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "503 slow down".into(),
        };
        assert!(Error::Storage(generic).is_transient());
        let denied = object_store::Error::PermissionDenied {
            path: "a".to_owned(),
            source: "403".into(),
        };
        assert!(!Error::Storage(denied).is_transient());
        let missing = object_store::Error::NotFound {
            path: "a".to_owned(),
            source: "404".into(),
        };
        assert!(!Error::Storage(missing).is_transient());
        assert!(!Error::corrupt("a", "bad bytes").is_transient());
        assert!(!Error::internal("bug").is_transient());
    }
}
