//! The connector's failure type: what went wrong, in words for the user, and who must
//! act, as the Airbyte `failure_type` of the TRACE error that reports it.

use std::fmt;

/// Airbyte's `failure_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureType {
    /// The user can fix it (config, catalog, permissions).
    Config,
    /// A bug or a broken destination.
    System,
    /// Worth retrying (storage unreachable, throttled).
    Transient,
}

impl FailureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::Config => "config_error",
            FailureType::System => "system_error",
            FailureType::Transient => "transient_error",
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub kind: FailureType,
    pub message: String,
    pub internal: Option<String>,
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn config(message: impl fmt::Display) -> Self {
        Failure {
            kind: FailureType::Config,
            message: message.to_string(),
            internal: None,
        }
    }

    pub fn system(message: impl fmt::Display) -> Self {
        Failure {
            kind: FailureType::System,
            message: message.to_string(),
            internal: None,
        }
    }

    /// A storage-layer error, with `context` saying what was being done.
    pub fn core(context: impl fmt::Display, e: deeplake_core::Error) -> Self {
        use deeplake_core::Error as E;
        let kind = match &e {
            E::Storage(_) | E::Io(_) => FailureType::Transient,
            E::InvalidInput { .. } | E::NotFound { .. } | E::Unsupported { .. } => {
                FailureType::Config
            }
            E::Conflict { .. } => FailureType::Transient,
            E::Link { retryable, .. } => {
                if *retryable {
                    FailureType::Transient
                } else {
                    FailureType::Config
                }
            }
            _ => FailureType::System,
        };
        Failure {
            kind,
            message: format!("{context}: {e}"),
            internal: Some(format!("{e:?}")),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Adds context to a core result.
pub trait CoreContext<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
}

impl<T> CoreContext<T> for std::result::Result<T, deeplake_core::Error> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Failure::core(context, e))
    }
}
