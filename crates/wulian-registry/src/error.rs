//! The registry's error type. Variants say *what kind* of failure happened so the HTTP layer can
//! map them to status codes (404, 409, 422) without parsing messages; storage failures stay
//! opaque (`Sqlite`, `Json`) and are reported as internal errors.

/// Result with the registry's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not exist — or exists in another tenant, which callers must not learn.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// A record with this id exists (for devices: in any tenant).
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// An input field breaks a rule; `reason` is safe to show to the caller.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The request is well formed but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Optimistic concurrency: the caller's `If-Match` version is not the stored one.
    #[error("version {expected} does not match the current version {current}")]
    VersionMismatch { expected: i64, current: i64 },
    /// A document over its size limit.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The database file was written by a newer wulian with migrations this build does not know.
    #[error("database schema version {found} is newer than this build supports ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    /// Hashing a password failed (argon2 refused its input or ran out of memory).
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    /// The operating system could not provide randomness for a secret.
    #[error("no randomness available: {0}")]
    Random(#[from] getrandom::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The disk refused to make a committed write durable (the write may be lost on power loss).
    #[error("storage error: {0}")]
    Io(String),
    #[error("stored JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> Error {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub(crate) fn already_exists(kind: &'static str, id: &str) -> Error {
        Error::AlreadyExists {
            kind,
            id: id.to_string(),
        }
    }
}
